//! The report every scenario returns, and its three renderings.
//!
//! - [`table`]: the plain-text summary printed at the end of a run.
//! - [`json`]: the machine-readable report (`--json FILE`).
//! - [`html`]: a self-contained page with inline SVG charts (`--html FILE`).
//!
//! Rates are over the run's wall time; MB are 10^6 bytes.

pub mod html;
pub mod json;
pub mod table;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::projection::Projection;
use crate::stats::{LatencyBucket, Percentiles, Second, Totals};
use crate::verify::HourDirCount;

/// One pass/fail verdict of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: &str, ok: bool, detail: impl Into<String>) -> Self {
        Check {
            name: name.to_string(),
            ok,
            detail: detail.into(),
        }
    }
}

/// Upload and download rates of the throughput scenario, each over its own phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThroughputResult {
    pub concurrency: usize,
    pub size_bytes: u64,
    pub count: u64,
    pub upload_phase_s: f64,
    pub download_phase_s: f64,
    pub upload_mb_s: f64,
    pub download_mb_s: f64,
    pub floor_mb_s: f64,
}

/// What the rollover scenario found on the file server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloverResult {
    pub uploads: u64,
    /// Files found in the date directories the uploads went to.
    pub files_found: u64,
    /// Uploads not found under the directory their URI names.
    pub missing: u64,
    pub missing_examples: Vec<String>,
    /// URIs that do not have the documented shape.
    pub malformed_uris: u64,
    pub hour_dirs: Vec<HourDirCount>,
    pub overfull_dirs: Vec<String>,
    pub numbering_problems: Vec<String>,
    pub temp_files: u64,
}

/// What the limits scenario observed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LimitsResult {
    pub max_file_size: u64,
    /// Status of the upload of exactly `max_file_size` bytes (0 when it did not get a response).
    pub exact_status: u16,
    /// Size the node reports for it (HEAD Content-Length).
    pub exact_stored_size: Option<u64>,
    /// Status of `max_file_size + 1` bytes with `Content-Length`.
    pub over_status: u16,
    /// Status of `max_file_size + 1` bytes chunked (no length up front).
    pub over_chunked_status: u16,
    /// Entries that appeared on the file server besides the accepted upload.
    pub leftovers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    /// RFC 3339 start time.
    pub started_at: String,
    pub duration_s: f64,
    /// The scenario's parameters as given.
    pub settings: serde_json::Value,
    pub uploads_ok: u64,
    pub downloads_ok: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Successful uploads per second.
    pub files_per_s: f64,
    /// Upload and download bytes together, MB/s.
    pub throughput_mb_s: f64,
    pub upload_mb_s: f64,
    pub download_mb_s: f64,
    pub bytes_uploaded: u64,
    pub bytes_downloaded: u64,
    pub upload_latency_ms: Percentiles,
    pub download_latency_ms: Percentiles,
    pub upload_latency_histogram: Vec<LatencyBucket>,
    pub download_latency_histogram: Vec<LatencyBucket>,
    pub timeline: Vec<Second>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projection: Option<Projection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput: Option<ThroughputResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollover: Option<RolloverResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsResult>,
    pub checks: Vec<Check>,
    /// Every check passed.
    pub passed: bool,
}

impl Report {
    /// A report of `totals` over `elapsed`; the scenario adds its own section and checks.
    pub fn new(
        scenario: &str,
        target: &str,
        started_at: chrono::DateTime<chrono::Utc>,
        elapsed: Duration,
        settings: serde_json::Value,
        totals: Totals,
    ) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Report {
            scenario: scenario.to_string(),
            target: target.to_string(),
            started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            duration_s: elapsed.as_secs_f64(),
            settings,
            uploads_ok: totals.uploads_ok,
            downloads_ok: totals.downloads_ok,
            errors: totals.errors,
            errors_by_kind: totals.errors_by_kind,
            files_per_s: totals.uploads_ok as f64 / secs,
            throughput_mb_s: (totals.bytes_uploaded + totals.bytes_downloaded) as f64 / secs / 1e6,
            upload_mb_s: totals.bytes_uploaded as f64 / secs / 1e6,
            download_mb_s: totals.bytes_downloaded as f64 / secs / 1e6,
            bytes_uploaded: totals.bytes_uploaded,
            bytes_downloaded: totals.bytes_downloaded,
            upload_latency_ms: totals.upload_latency_ms,
            download_latency_ms: totals.download_latency_ms,
            upload_latency_histogram: totals.upload_latency_histogram,
            download_latency_histogram: totals.download_latency_histogram,
            timeline: totals.timeline,
            projection: None,
            throughput: None,
            rollover: None,
            limits: None,
            checks: Vec::new(),
            passed: true,
        }
    }

    pub fn check(&mut self, check: Check) {
        self.passed &= check.ok;
        self.checks.push(check);
    }
}

/// Prints the table (unless `--quiet`) and writes the `--json` and `--html` files.
pub fn emit(report: &Report, global: &crate::cli::Global) -> anyhow::Result<()> {
    if !global.quiet {
        print!("{}", table::render(report));
    }
    if let Some(path) = &global.json {
        json::write(report, path)?;
    }
    if let Some(path) = &global.html {
        html::write(report, path)?;
    }
    Ok(())
}
