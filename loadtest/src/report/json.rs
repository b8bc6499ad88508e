//! The JSON rendering (`--json FILE`): the [`Report`] as is, pretty-printed.
//!
//! Top-level fields other tools rely on: `uploads_ok`, `downloads_ok`, `errors`, `files_per_s`,
//! `throughput_mb_s`, `upload_latency_ms` and `download_latency_ms` (each with `p50`, `p90`,
//! `p99`, `p999`), and `passed`.

use std::path::Path;

use anyhow::Context;

use super::Report;

pub fn render(report: &Report) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(report)
}

pub fn write(report: &Report, path: &Path) -> anyhow::Result<()> {
    let text = render(report).context("encoding the JSON report")?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}
