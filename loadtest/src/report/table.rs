//! The plain-text summary printed at the end of a run: counts, rates, latency percentiles,
//! errors by kind, the scenario's own findings and its checks.

use std::fmt::Write;

use super::Report;
use crate::stats::Percentiles;

fn row(out: &mut String, label: &str, up: impl std::fmt::Display, down: impl std::fmt::Display) {
    let _ = writeln!(out, "  {label:<22}{up:>14}{down:>14}");
}

fn lat(p: &Percentiles, f: impl Fn(&Percentiles) -> f64) -> String {
    if p.count == 0 {
        "-".into()
    } else {
        format!("{:.2}", f(p))
    }
}

/// Decimal gigabytes with a sensible number of digits.
fn gb(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0} GB")
    } else {
        format!("{x:.2} GB")
    }
}

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mft-loadtest {} -> {}  ({}, {:.1} s)",
        r.scenario, r.target, r.started_at, r.duration_s
    );
    let _ = writeln!(out);
    row(&mut out, "", "upload", "download");
    row(&mut out, "ok", r.uploads_ok, r.downloads_ok);
    row(
        &mut out,
        "MB/s",
        format!("{:.1}", r.upload_mb_s),
        format!("{:.1}", r.download_mb_s),
    );
    let (u, d) = (&r.upload_latency_ms, &r.download_latency_ms);
    row(
        &mut out,
        "latency p50 (ms)",
        lat(u, |p| p.p50),
        lat(d, |p| p.p50),
    );
    row(
        &mut out,
        "        p90",
        lat(u, |p| p.p90),
        lat(d, |p| p.p90),
    );
    row(
        &mut out,
        "        p99",
        lat(u, |p| p.p99),
        lat(d, |p| p.p99),
    );
    row(
        &mut out,
        "        p99.9",
        lat(u, |p| p.p999),
        lat(d, |p| p.p999),
    );
    row(
        &mut out,
        "        max",
        lat(u, |p| p.max),
        lat(d, |p| p.max),
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  files/s {:.1}   total {:.1} MB/s   errors {}",
        r.files_per_s, r.throughput_mb_s, r.errors
    );
    for (kind, n) in &r.errors_by_kind {
        let _ = writeln!(out, "    {kind:<30}{n:>10}");
    }

    if let Some(p) = &r.projection {
        let l = &p.profile_load;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  capacity projection ({} users x {} files/h x {} bytes, {} h/day)",
            p.profile.users,
            p.profile.files_per_hour,
            p.profile.mean_size_bytes,
            p.profile.hours_per_day
        );
        let _ = writeln!(
            out,
            "    profile:       {:.2} uploads/s, {:.0} files/day, {}/day, {:.0} downloads/day",
            l.uploads_per_s,
            l.files_per_day,
            gb(l.gb_per_day),
            l.downloads_per_day
        );
        let _ = writeln!(
            out,
            "    offered {:.1} uploads/s, held {:.1} uploads/s -> headroom {:.1}x the profile ({})",
            p.offered_uploads_per_s,
            p.held_uploads_per_s,
            p.headroom,
            p.verdict.explain()
        );
        let _ = writeln!(
            out,
            "    at the held rate: {:.0} users, {:.0} files/day, {}/day",
            p.users_at_held_rate,
            p.files_per_day_at_held_rate,
            gb(p.gb_per_day_at_held_rate)
        );
        let _ = writeln!(
            out,
            "    file server space for {} days: {} (profile), {} (at the held rate)",
            p.profile.retention_days,
            gb(l.retention_gb),
            gb(p.retention_gb_at_held_rate)
        );
    }
    if let Some(t) = &r.throughput {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  throughput: {} x {} bytes at concurrency {}: upload {:.1} MB/s in {:.1} s, \
             download {:.1} MB/s in {:.1} s (floor {} MB/s)",
            t.count,
            t.size_bytes,
            t.concurrency,
            t.upload_mb_s,
            t.upload_phase_s,
            t.download_mb_s,
            t.download_phase_s,
            t.floor_mb_s
        );
    }
    if let Some(ro) = &r.rollover {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  rollover: {} uploads, {} files found, {} missing, {} temporary files",
            ro.uploads, ro.files_found, ro.missing, ro.temp_files
        );
        for d in &ro.hour_dirs {
            let _ = writeln!(out, "    {:<40}{:>6} files", d.dir, d.files);
        }
    }
    if let Some(li) = &r.limits {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  limits: max_file_size {} bytes: exact -> {}, +1 -> {}, +1 chunked -> {}, \
             {} leftovers",
            li.max_file_size,
            li.exact_status,
            li.over_status,
            li.over_chunked_status,
            li.leftovers.len()
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "  checks:");
    for c in &r.checks {
        let _ = writeln!(
            out,
            "    [{}] {:<28} {}",
            if c.ok { " ok " } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    let _ = writeln!(
        out,
        "  result: {}",
        if r.passed { "PASSED" } else { "FAILED" }
    );
    out
}
