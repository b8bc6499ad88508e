//! The recorder: every transfer's outcome lands here, from any task.
//!
//! Latencies go into HDR histograms (microsecond resolution, 3 significant digits, up to an
//! hour), so percentiles are exact to 0.1 % whatever the spread. Counters and a per-second
//! timeline feed the progress bar, the table and the charts. A std mutex guards it: each record is
//! a few additions, far shorter than any await, and it is never held across one.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Which way a transfer went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Upload,
    Download,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Upload => "upload",
            Direction::Download => "download",
        }
    }
}

/// Highest latency the histograms track: one hour, in microseconds.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// One second of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Second {
    /// Seconds since the start of the run.
    pub t_s: u64,
    pub uploads_ok: u64,
    pub downloads_ok: u64,
    pub bytes_uploaded: u64,
    pub bytes_downloaded: u64,
    pub errors: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// One bar of a latency histogram: transfers that took at most `le_ms` (and more than the
/// previous bar's bound).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyBucket {
    pub le_ms: f64,
    pub count: u64,
}

/// What the progress bar shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Live {
    pub uploads_ok: u64,
    pub downloads_ok: u64,
    pub errors: u64,
    pub bytes: u64,
}

/// Everything recorded, frozen at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub uploads_ok: u64,
    pub downloads_ok: u64,
    pub bytes_uploaded: u64,
    pub bytes_downloaded: u64,
    pub errors: u64,
    /// Errors by `direction/kind`, e.g. `upload/http_503`.
    pub errors_by_kind: BTreeMap<String, u64>,
    pub upload_latency_ms: Percentiles,
    pub download_latency_ms: Percentiles,
    pub upload_latency_histogram: Vec<LatencyBucket>,
    pub download_latency_histogram: Vec<LatencyBucket>,
    pub timeline: Vec<Second>,
    /// Seconds from the start to the last successful upload.
    pub last_upload_s: f64,
}

struct Inner {
    upload: Histogram<u64>,
    download: Histogram<u64>,
    totals: Totals,
}

pub struct Recorder {
    start: Instant,
    inner: Mutex<Inner>,
}

fn new_histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts (low 1, high >= 2 * low, 3 digits): this cannot
    // fail at run time.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid constant histogram bounds")
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            start: Instant::now(),
            inner: Mutex::new(Inner {
                upload: new_histogram(),
                download: new_histogram(),
                totals: Totals::default(),
            }),
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn second(totals: &mut Totals, at: Instant, start: Instant) -> &mut Second {
        let t = at.saturating_duration_since(start).as_secs();
        let idx = t as usize;
        while totals.timeline.len() <= idx {
            let t_s = totals.timeline.len() as u64;
            totals.timeline.push(Second {
                t_s,
                ..Second::default()
            });
        }
        &mut totals.timeline[idx]
    }

    /// A transfer of `bytes` that succeeded after `latency`.
    pub fn ok(&self, dir: Direction, bytes: u64, latency: Duration) {
        let now = Instant::now();
        let start = self.start;
        let mut inner = self.lock();
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        let hist = match dir {
            Direction::Upload => &mut inner.upload,
            Direction::Download => &mut inner.download,
        };
        hist.saturating_record(us);
        let totals = &mut inner.totals;
        match dir {
            Direction::Upload => {
                totals.uploads_ok += 1;
                totals.bytes_uploaded += bytes;
                totals.last_upload_s = now.saturating_duration_since(start).as_secs_f64();
            }
            Direction::Download => {
                totals.downloads_ok += 1;
                totals.bytes_downloaded += bytes;
            }
        }
        let sec = Self::second(totals, now, start);
        match dir {
            Direction::Upload => {
                sec.uploads_ok += 1;
                sec.bytes_uploaded += bytes;
            }
            Direction::Download => {
                sec.downloads_ok += 1;
                sec.bytes_downloaded += bytes;
            }
        }
    }

    /// A transfer that failed, classified by `kind` (a short fixed word such as `http_503`).
    pub fn error(&self, dir: Direction, kind: &str) {
        let now = Instant::now();
        let start = self.start;
        let mut inner = self.lock();
        let totals = &mut inner.totals;
        totals.errors += 1;
        *totals
            .errors_by_kind
            .entry(format!("{}/{kind}", dir.as_str()))
            .or_insert(0) += 1;
        Self::second(totals, now, start).errors += 1;
    }

    pub fn live(&self) -> Live {
        let inner = self.lock();
        let t = &inner.totals;
        Live {
            uploads_ok: t.uploads_ok,
            downloads_ok: t.downloads_ok,
            errors: t.errors,
            bytes: t.bytes_uploaded + t.bytes_downloaded,
        }
    }

    /// Freezes what was recorded.
    pub fn totals(&self) -> Totals {
        let inner = self.lock();
        let mut totals = inner.totals.clone();
        totals.upload_latency_ms = percentiles(&inner.upload);
        totals.download_latency_ms = percentiles(&inner.download);
        totals.upload_latency_histogram = buckets(&inner.upload);
        totals.download_latency_histogram = buckets(&inner.download);
        totals
    }
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        count: h.len(),
        mean: h.mean() / 1000.0,
        p50: us_to_ms(h.value_at_quantile(0.50)),
        p90: us_to_ms(h.value_at_quantile(0.90)),
        p99: us_to_ms(h.value_at_quantile(0.99)),
        p999: us_to_ms(h.value_at_quantile(0.999)),
        max: us_to_ms(h.max()),
    }
}

/// Log-spaced bars from 0.1 ms, doubling, up to the largest recorded latency.
pub fn buckets(h: &Histogram<u64>) -> Vec<LatencyBucket> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_log(100, 2.0)
        .map(|v| LatencyBucket {
            le_ms: us_to_ms(v.value_iterated_to()),
            count: v.count_since_last_iteration(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bytes_and_percentiles() {
        let r = Recorder::new();
        for ms in 1..=100u64 {
            r.ok(Direction::Upload, 1000, Duration::from_millis(ms));
        }
        r.ok(Direction::Download, 500, Duration::from_millis(3));
        r.error(Direction::Upload, "http_503");
        r.error(Direction::Upload, "http_503");
        let t = r.totals();
        assert_eq!(t.uploads_ok, 100);
        assert_eq!(t.bytes_uploaded, 100_000);
        assert_eq!(t.downloads_ok, 1);
        assert_eq!(t.bytes_downloaded, 500);
        assert_eq!(t.errors, 2);
        assert_eq!(t.errors_by_kind.get("upload/http_503"), Some(&2));
        assert!((t.upload_latency_ms.p50 - 50.0).abs() < 0.1);
        assert!((t.upload_latency_ms.p99 - 99.0).abs() < 0.1);
        assert!((t.upload_latency_ms.max - 100.0).abs() < 0.1);
        let in_buckets: u64 = t.upload_latency_histogram.iter().map(|b| b.count).sum();
        assert_eq!(in_buckets, 100);
        let per_second: u64 = t.timeline.iter().map(|s| s.uploads_ok).sum();
        assert_eq!(per_second, 100);
    }
}
