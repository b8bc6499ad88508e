//! The HTML rendering (`--html FILE`): one self-contained page, inline CSS and SVG, no scripts,
//! nothing fetched. Charts: throughput over time, transfers per second, latency histogram.

use std::fmt::Write;
use std::path::Path;

use anyhow::Context;

use super::{Report, table};
use crate::stats::LatencyBucket;

const W: f64 = 760.0;
const H: f64 = 260.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;

const UP: &str = "#1f77b4";
const DOWN: &str = "#ff7f0e";
const ERR: &str = "#d62728";

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A round axis maximum at or above `v`: 1, 2 or 5 times a power of ten.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn svg_open(out: &mut String, title: &str, y_label: &str, ymax: f64) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}">"#,
        t = escape(title)
    );
    let _ = write!(
        out,
        r#"<text x="{LEFT}" y="18" class="title">{}</text>"#,
        escape(title)
    );
    let plot_h = H - TOP - BOTTOM;
    for i in 0..=4 {
        let v = ymax * f64::from(i) / 4.0;
        let y = TOP + plot_h - plot_h * f64::from(i) / 4.0;
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" class="tick" text-anchor="end">{v}</text>"##,
            x2 = W - RIGHT,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            v = fmt_num(v)
        );
    }
    let _ = write!(
        out,
        r#"<text x="14" y="{y:.1}" class="tick" transform="rotate(-90 14 {y:.1})" text-anchor="middle">{}</text>"#,
        escape(y_label),
        y = TOP + plot_h / 2.0
    );
}

fn legend(out: &mut String, series: &[(&str, &str)]) {
    let mut x = W - RIGHT - 120.0 * series.len() as f64;
    for (name, color) in series {
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="8" width="12" height="12" fill="{color}"/><text x="{tx:.1}" y="18" class="tick">{}</text>"#,
            escape(name),
            tx = x + 16.0
        );
        x += 120.0;
    }
}

/// A line chart of per-second values; `series` are (name, colour, values by second).
pub fn line_chart(title: &str, y_label: &str, series: &[(&str, &str, Vec<f64>)]) -> String {
    let n = series.iter().map(|s| s.2.len()).max().unwrap_or(0);
    let ymax = nice_max(
        series
            .iter()
            .flat_map(|s| s.2.iter().copied())
            .fold(0.0, f64::max),
    );
    let mut out = String::new();
    svg_open(&mut out, title, y_label, ymax);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let span = (n.max(2) - 1) as f64;
    let x_of = |i: usize| LEFT + plot_w * i as f64 / span;
    let y_of = |v: f64| TOP + plot_h - plot_h * (v / ymax).clamp(0.0, 1.0);
    let step = (n / 10).max(1);
    for i in (0..n).step_by(step) {
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="{y:.1}" class="tick" text-anchor="middle">{i}</text>"#,
            x = x_of(i),
            y = H - BOTTOM + 16.0
        );
    }
    let _ = write!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" class="tick" text-anchor="middle">seconds since start</text>"#,
        x = LEFT + plot_w / 2.0,
        y = H - 6.0
    );
    for (_, color, values) in series {
        if values.is_empty() {
            continue;
        }
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x_of(i), y_of(*v)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
    }
    legend(
        &mut out,
        &series.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
    );
    out.push_str("</svg>");
    out
}

/// Grouped bars, one group per latency bucket (upload and download side by side).
pub fn latency_histogram(up: &[LatencyBucket], down: &[LatencyBucket]) -> String {
    // Align both on the union of bucket bounds (both come from the same log iteration).
    let mut bounds: Vec<f64> = up.iter().chain(down).map(|b| b.le_ms).collect();
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    let count_at =
        |bs: &[LatencyBucket], le: f64| bs.iter().find(|b| b.le_ms == le).map_or(0, |b| b.count);
    let ymax = nice_max(
        bounds
            .iter()
            .map(|le| count_at(up, *le).max(count_at(down, *le)) as f64)
            .fold(0.0, f64::max),
    );
    let mut out = String::new();
    svg_open(&mut out, "Latency histogram", "transfers", ymax);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let group = plot_w / bounds.len().max(1) as f64;
    let bar = (group * 0.4).max(1.0);
    for (i, le) in bounds.iter().enumerate() {
        let gx = LEFT + group * i as f64;
        for (k, (bs, color)) in [(up, UP), (down, DOWN)].into_iter().enumerate() {
            let c = count_at(bs, *le) as f64;
            let h = plot_h * (c / ymax).clamp(0.0, 1.0);
            let _ = write!(
                out,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{h:.1}" fill="{color}"><title>&lt;= {le} ms: {c}</title></rect>"#,
                x = gx + group * 0.1 + bar * k as f64,
                y = TOP + plot_h - h,
                le = fmt_num(*le),
            );
        }
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="{y:.1}" class="tick" text-anchor="middle">{}</text>"#,
            fmt_num(*le),
            x = gx + group / 2.0,
            y = H - BOTTOM + 16.0
        );
    }
    let _ = write!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" class="tick" text-anchor="middle">latency, ms (upper bound of each bar)</text>"#,
        x = LEFT + plot_w / 2.0,
        y = H - 6.0
    );
    legend(&mut out, &[("upload", UP), ("download", DOWN)]);
    out.push_str("</svg>");
    out
}

pub fn render(r: &Report) -> String {
    let mb = |f: fn(&crate::stats::Second) -> u64| -> Vec<f64> {
        r.timeline.iter().map(|s| f(s) as f64 / 1e6).collect()
    };
    let count = |f: fn(&crate::stats::Second) -> u64| -> Vec<f64> {
        r.timeline.iter().map(|s| f(s) as f64).collect()
    };
    let throughput = line_chart(
        "Throughput over time",
        "MB/s",
        &[
            ("upload", UP, mb(|s| s.bytes_uploaded)),
            ("download", DOWN, mb(|s| s.bytes_downloaded)),
        ],
    );
    let rates = line_chart(
        "Transfers per second",
        "per second",
        &[
            ("uploads", UP, count(|s| s.uploads_ok)),
            ("downloads", DOWN, count(|s| s.downloads_ok)),
            ("errors", ERR, count(|s| s.errors)),
        ],
    );
    let hist = latency_histogram(&r.upload_latency_histogram, &r.download_latency_histogram);
    let mut checks = String::new();
    for c in &r.checks {
        let _ = write!(
            checks,
            r#"<tr class="{cls}"><td>{v}</td><td>{n}</td><td>{d}</td></tr>"#,
            cls = if c.ok { "ok" } else { "fail" },
            v = if c.ok { "ok" } else { "FAIL" },
            n = escape(&c.name),
            d = escape(&c.detail)
        );
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>mft-loadtest {scenario}: {verdict}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 820px; color: #222; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.1em; margin-top: 1.6em; }}
.verdict {{ font-weight: bold; padding: 0.2em 0.6em; border-radius: 4px; color: white; }}
.passed {{ background: #2ca02c; }} .failed {{ background: {ERR}; }}
table {{ border-collapse: collapse; }} td {{ padding: 0.15em 0.8em; border-bottom: 1px solid #eee; }}
tr.fail td {{ color: {ERR}; font-weight: bold; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; }}
svg .title {{ font-size: 14px; font-weight: bold; }} svg .tick {{ font-size: 11px; fill: #555; }}
</style></head><body>
<h1>mft-loadtest: {scenario} <span class="verdict {vclass}">{verdict}</span></h1>
<p>Target {target}, started {started}, {dur:.1} s. {up} uploads and {down} downloads succeeded,
{errors} errors; {fps:.1} files/s, {mbs:.1} MB/s.</p>
<h2>Checks</h2><table>{checks}</table>
<h2>Charts</h2>
{throughput}
{rates}
{hist}
<h2>Summary</h2>
<pre>{table}</pre>
</body></html>
"#,
        scenario = escape(&r.scenario),
        verdict = if r.passed { "PASSED" } else { "FAILED" },
        vclass = if r.passed { "passed" } else { "failed" },
        target = escape(&r.target),
        started = escape(&r.started_at),
        dur = r.duration_s,
        up = r.uploads_ok,
        down = r.downloads_ok,
        errors = r.errors,
        fps = r.files_per_s,
        mbs = r.throughput_mb_s,
        table = escape(&table::render(r)),
    )
}

pub fn write(report: &Report, path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, render(report)).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn nice_maxima() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(0.7), 1.0);
        assert_eq!(nice_max(1.5), 2.0);
        assert_eq!(nice_max(37.0), 50.0);
        assert_eq!(nice_max(500.0), 500.0);
        assert_eq!(nice_max(501.0), 1000.0);
    }

    #[test]
    fn charts_are_svg_without_scripts() {
        let svg = line_chart("t", "y", &[("a", UP, vec![1.0, 3.0, 2.0])]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("<polyline"));
        let hist = latency_histogram(
            &[
                LatencyBucket {
                    le_ms: 0.1,
                    count: 3,
                },
                LatencyBucket {
                    le_ms: 0.2,
                    count: 1,
                },
            ],
            &[LatencyBucket {
                le_ms: 0.2,
                count: 2,
            }],
        );
        assert_eq!(hist.matches("<rect").count(), 2 * 2 + 2);
        assert!(!hist.contains("<script"));
    }
}
