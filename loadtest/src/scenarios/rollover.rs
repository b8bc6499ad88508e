//! The rollover scenario: `files` uploads as fast as the node takes them, then the file server is
//! listed to check the SPEC's layout: no hour directory holds more than 1000 files, `HH.n`
//! directories are numbered without gaps and each is filled before the next, and every upload is
//! in the directory its URI names.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{Context, bail};
use futures_util::StreamExt;

use super::{Ctx, UploadSpec, user_jid};
use crate::cli::RolloverArgs;
use crate::client::{Framing, Uploaded};
use crate::progress::Progress;
use crate::report::{Check, Report, RolloverResult};
use crate::verify::{Listing, UriPath};

/// Most uploads one run makes.
const MAX_FILES: u64 = 1_000_000;

/// Missing uploads named in the report, at most.
const EXAMPLES: usize = 10;

pub async fn run(ctx: &Ctx, args: &RolloverArgs) -> anyhow::Result<Report> {
    let started_at = chrono::Utc::now();
    if args.files == 0 || args.files > MAX_FILES {
        bail!("--files must be 1 to {MAX_FILES}");
    }
    if args.concurrency == 0 || args.concurrency > 1024 {
        bail!("--concurrency must be 1 to 1024");
    }
    let max = ctx.target.max_file_size();
    if args.size == 0 || args.size > max {
        bail!("--size must be 1 to the node's max_file_size ({max} bytes)");
    }
    // Open the store first: no point loading the node if the result cannot be checked.
    let store = ctx.target.store()?;
    let t0 = Instant::now();
    let mut progress = Progress::new(args.files, "uploads", ctx.show_progress);
    progress.watch(ctx.recorder.clone());
    let chat = args.chat;
    let uploads: Vec<Uploaded> = futures_util::stream::iter(0..args.files)
        .map(|i| {
            let ctx = ctx.clone();
            let bar = progress.bar().clone();
            async move {
                let (from, to, name) = (
                    user_jid(i % 100),
                    user_jid(i % 100 + 1),
                    format!("rollover-{i}.txt"),
                );
                let up = ctx
                    .upload_recorded(&UploadSpec {
                        chat,
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
    progress.finish();
    let elapsed = t0.elapsed();

    let mut malformed = 0u64;
    let mut paths = Vec::with_capacity(uploads.len());
    for up in &uploads {
        match UriPath::parse(&up.uri) {
            Some(p) if p.resource == up.resource && p.node == ctx.target.config.node.id => {
                paths.push(p)
            }
            _ => malformed += 1,
        }
    }
    let dates: BTreeSet<_> = paths.iter().map(|p| (p.chat, p.date.clone())).collect();
    let listing = Listing::of(store.as_ref(), &dates)
        .await
        .context("listing the hour directories on the file server")?;
    let missing: Vec<String> = paths
        .iter()
        .filter(|p| !listing.contains(&p.dir(), &p.resource))
        .map(|p| format!("{}/{}", p.dir(), p.resource))
        .collect();
    let overfull = listing.overfull();
    let numbering = listing.numbering_problems();
    let result = RolloverResult {
        uploads: uploads.len() as u64,
        files_found: listing.total_files(),
        missing: missing.len() as u64,
        missing_examples: missing.iter().take(EXAMPLES).cloned().collect(),
        malformed_uris: malformed,
        hour_dirs: listing.counts(),
        overfull_dirs: overfull.clone(),
        numbering_problems: numbering.clone(),
        temp_files: listing.total_temp(),
    };

    let totals = ctx.recorder.totals();
    let errors = totals.errors;
    let settings = serde_json::json!({
        "files": args.files,
        "concurrency": args.concurrency,
        "size": args.size,
        "chat": chat.as_str(),
    });
    let mut report = Report::new(
        "rollover",
        &ctx.target.base_url,
        started_at,
        elapsed,
        settings,
        totals,
    );
    report.check(Check::new(
        "every upload accepted",
        errors == 0 && result.uploads == args.files,
        format!("{} of {}", result.uploads, args.files),
    ));
    report.check(Check::new(
        "URIs well formed",
        malformed == 0,
        format!("{malformed} malformed"),
    ));
    report.check(Check::new(
        "every upload where its URI says",
        missing.is_empty(),
        if missing.is_empty() {
            format!("{} found", paths.len())
        } else {
            format!("{} missing, e.g. {}", missing.len(), missing[0])
        },
    ));
    report.check(Check::new(
        "at most 1000 files per hour dir",
        overfull.is_empty(),
        if overfull.is_empty() {
            format!("{} hour directories", result.hour_dirs.len())
        } else {
            format!("over the limit: {}", overfull.join(", "))
        },
    ));
    report.check(Check::new(
        "hour dirs numbered in order",
        numbering.is_empty(),
        if numbering.is_empty() {
            "HH, HH.1, ... without gaps, each full before the next".to_string()
        } else {
            numbering.join("; ")
        },
    ));
    report.check(Check::new(
        "no stray entries",
        listing.strays.is_empty(),
        format!("{} stray", listing.strays.len()),
    ));
    report.rollover = Some(result);
    Ok(report)
}
