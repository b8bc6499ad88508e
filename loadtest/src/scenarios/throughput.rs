//! The throughput scenario: `count` files of `size` bytes at `concurrency`, uploaded, then each
//! downloaded once, timed as two phases so each direction gets its own MB/s against the floor.

use std::time::Instant;

use anyhow::bail;
use futures_util::StreamExt;
use mft::layout::ChatType;

use super::{Ctx, UploadSpec, user_jid};
use crate::cli::ThroughputArgs;
use crate::client::{Framing, Uploaded};
use crate::progress::Progress;
use crate::report::{Check, Report, ThroughputResult};
use crate::stats::Direction;

/// Most files one run makes.
const MAX_COUNT: u64 = 100_000;

pub async fn run(ctx: &Ctx, args: &ThroughputArgs) -> anyhow::Result<Report> {
    let started_at = chrono::Utc::now();
    let max = ctx.target.max_file_size();
    if args.size == 0 || args.size > max {
        bail!("--size must be 1 to the node's max_file_size ({max} bytes)");
    }
    if args.count == 0 || args.count > MAX_COUNT {
        bail!("--count must be 1 to {MAX_COUNT}");
    }
    if args.concurrency == 0 || args.concurrency > 1024 {
        bail!("--concurrency must be 1 to 1024");
    }
    let t0 = Instant::now();
    let mut progress = Progress::new(args.count * 2, "transfers", ctx.show_progress);
    progress.watch(ctx.recorder.clone());

    let uploads: Vec<Uploaded> = futures_util::stream::iter(0..args.count)
        .map(|i| {
            let ctx = ctx.clone();
            let bar = progress.bar().clone();
            async move {
                let (from, to, name) =
                    (user_jid(i), user_jid(i + 1), format!("throughput-{i}.bin"));
                let up = ctx
                    .upload_recorded(&UploadSpec {
                        chat: ChatType::Im,
                        from: &from,
                        to: &to,
                        name: &name,
                        size: args.size,
                        file: i,
                        framing: Framing::ContentLength,
                    })
                    .await;
                bar.inc(1);
                up
            }
        })
        .buffer_unordered(args.concurrency)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    let upload_phase = t0.elapsed();

    let t1 = Instant::now();
    let sizes_ok = uploads.iter().all(|u| u.size == args.size);
    futures_util::stream::iter(uploads.iter().enumerate())
        .map(|(i, up)| {
            let ctx = ctx.clone();
            let bar = progress.bar().clone();
            async move {
                let start = Instant::now();
                match ctx.download(up, &user_jid(i as u64 + 1)).await {
                    Ok(got) => ctx
                        .recorder
                        .ok(Direction::Download, got.bytes, start.elapsed()),
                    Err(f) => ctx.recorder.error(Direction::Download, &f.kind()),
                }
                bar.inc(1);
            }
        })
        .buffer_unordered(args.concurrency)
        .collect::<Vec<()>>()
        .await;
    let download_phase = t1.elapsed();
    progress.finish();

    let totals = ctx.recorder.totals();
    let mb_s = |bytes: u64, secs: f64| bytes as f64 / secs.max(1e-9) / 1e6;
    let result = ThroughputResult {
        concurrency: args.concurrency,
        size_bytes: args.size,
        count: args.count,
        upload_phase_s: upload_phase.as_secs_f64(),
        download_phase_s: download_phase.as_secs_f64(),
        upload_mb_s: mb_s(totals.bytes_uploaded, upload_phase.as_secs_f64()),
        download_mb_s: mb_s(totals.bytes_downloaded, download_phase.as_secs_f64()),
        floor_mb_s: args.floor_mb_s,
    };
    let expected_bytes = args.count * args.size;
    let settings = serde_json::json!({
        "concurrency": args.concurrency,
        "size": args.size,
        "count": args.count,
        "floor_mb_s": args.floor_mb_s,
    });
    let (up_bytes, down_bytes, errors) = (
        totals.bytes_uploaded,
        totals.bytes_downloaded,
        totals.errors,
    );
    let mut report = Report::new(
        "throughput",
        &ctx.target.base_url,
        started_at,
        t0.elapsed(),
        settings,
        totals,
    );
    report.check(Check::new(
        "no errors",
        errors == 0,
        format!("{errors} errors"),
    ));
    report.check(Check::new(
        "bytes uploaded",
        up_bytes == expected_bytes && sizes_ok,
        format!("{up_bytes} of {expected_bytes}; node-reported sizes match: {sizes_ok}"),
    ));
    report.check(Check::new(
        "bytes downloaded",
        down_bytes == expected_bytes,
        format!("{down_bytes} of {expected_bytes}"),
    ));
    report.check(Check::new(
        "upload at or above the floor",
        result.upload_mb_s >= args.floor_mb_s,
        format!(
            "{:.1} MB/s (floor {} MB/s)",
            result.upload_mb_s, args.floor_mb_s
        ),
    ));
    report.check(Check::new(
        "download at or above the floor",
        result.download_mb_s >= args.floor_mb_s,
        format!(
            "{:.1} MB/s (floor {} MB/s)",
            result.download_mb_s, args.floor_mb_s
        ),
    ));
    // Each direction over its own phase: the whole-run figure would halve both.
    report.upload_mb_s = result.upload_mb_s;
    report.download_mb_s = result.download_mb_s;
    report.throughput = Some(result);
    Ok(report)
}
