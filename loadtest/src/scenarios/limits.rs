//! The limits scenario (SPEC section 5): an upload of exactly `max_file_size` bytes is accepted
//! and stored whole; one byte more is refused with 413, announced up front (`Content-Length`) or
//! discovered while streaming (chunked), and leaves nothing on the file server.
//!
//! Bodies are generated streams, so a 4 GiB limit costs no disk and no memory here.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use mft::layout::ChatType;
use mft::store::FileStore;

use super::{Ctx, UploadSpec, user_jid};
use crate::cli::LimitsArgs;
use crate::client::{Failure, Framing};
use crate::report::{Check, LimitsResult, Report};
use crate::stats::Direction;
use crate::verify::{Listing, UriPath};

/// Today's date directory name (UTC), as the node names it.
fn today() -> String {
    chrono::Utc::now().format("%Y%m%d").to_string()
}

/// The date directories of `chat` that exist now.
async fn date_dirs(store: &dyn FileStore, chat: ChatType) -> anyhow::Result<BTreeSet<String>> {
    Ok(store
        .list_dir(&format!("files/{chat}"))
        .await
        .context("listing the file server")?
        .into_iter()
        .filter(|e| e.is_dir && e.name.len() == 8 && e.name.bytes().all(|b| b.is_ascii_digit()))
        .map(|e| e.name)
        .collect())
}

/// The dates an upload made now can land in: today and the two latest existing date
/// directories (a node whose clock differs from this machine's writes under its own date).
fn recent(existing: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = existing.iter().rev().take(2).cloned().collect();
    out.insert(today());
    out
}

/// Every entry of the hour directories of `dates`.
async fn snapshot(
    store: &dyn FileStore,
    chat: ChatType,
    dates: &BTreeSet<String>,
) -> anyhow::Result<BTreeSet<String>> {
    let pairs = dates.iter().map(|d| (chat, d.clone())).collect();
    Ok(Listing::of(store, &pairs)
        .await
        .context("listing the file server")?
        .all_entries())
}

/// Status of an upload that was expected to fail, and a description for the report.
fn refused(res: &Result<crate::client::Uploaded, Failure>) -> (u16, String) {
    match res {
        Ok(up) => (201, format!("accepted as {}", up.uri)),
        Err(f) => (f.status().unwrap_or(0), f.to_string()),
    }
}

pub async fn run(ctx: &Ctx, args: &LimitsArgs) -> anyhow::Result<Report> {
    let started_at = chrono::Utc::now();
    let max = ctx.target.max_file_size();
    let chat = args.chat;
    let store = ctx.target.store()?;
    let dates_before = date_dirs(store.as_ref(), chat).await?;
    let mut dates = recent(&dates_before);
    let before = snapshot(store.as_ref(), chat, &dates).await?;
    let t0 = Instant::now();
    let (from, to) = (user_jid(1), user_jid(2));

    // Exactly the limit.
    let start = Instant::now();
    let exact = ctx
        .upload(&UploadSpec {
            chat,
            from: &from,
            to: &to,
            name: "limit-exact.bin",
            size: max,
            file: 1,
            framing: Framing::ContentLength,
        })
        .await;
    let mut accepted_path = None;
    let mut accepted_dir = None;
    let mut exact_stored_size = None;
    let exact_status = match &exact {
        Ok(up) => {
            ctx.recorder.ok(Direction::Upload, max, start.elapsed());
            if let Some(p) = UriPath::parse(&up.uri) {
                accepted_path = Some(format!("{}/{}", p.dir(), p.resource));
                accepted_dir = Some(format!("{}/", p.dir()));
                if !dates_before.contains(&p.date) {
                    dates.insert(p.date);
                }
            }
            let ticket = ctx
                .target
                .tickets
                .mint_download(&to, Some(&up.resource), 300)
                .context("minting a download ticket")?;
            exact_stored_size = ctx
                .client
                .head_len(&ctx.target.download_url(&up.uri), &ticket)
                .await
                .unwrap_or(None);
            201
        }
        Err(f) => {
            ctx.recorder.error(Direction::Upload, &f.kind());
            f.status().unwrap_or(0)
        }
    };

    // One byte over, announced.
    let over = ctx
        .upload(&UploadSpec {
            chat,
            from: &from,
            to: &to,
            name: "limit-over.bin",
            size: max + 1,
            file: 2,
            framing: Framing::ContentLength,
        })
        .await;
    let (over_status, over_detail) = refused(&over);
    // One byte over, discovered while streaming.
    let over_chunked = ctx
        .upload(&UploadSpec {
            chat,
            from: &from,
            to: &to,
            name: "limit-over-chunked.bin",
            size: max + 1,
            file: 3,
            framing: Framing::Chunked,
        })
        .await;
    let (over_chunked_status, over_chunked_detail) = refused(&over_chunked);
    for (status, _) in [(over_status, ()), (over_chunked_status, ())] {
        if status != 413 {
            ctx.recorder
                .error(Direction::Upload, &format!("expected_413_got_{status}"));
        }
    }

    // Look wherever the refused uploads could have gone, except dates that existed before but
    // were not listed then (their old files would all look new).
    let dates_after = date_dirs(store.as_ref(), chat).await?;
    dates.extend(
        recent(&dates_after)
            .into_iter()
            .filter(|d| !dates_before.contains(d)),
    );
    // The refused uploads' temporary files are removed in the background: give them a moment.
    let deadline = Instant::now() + Duration::from_secs(args.cleanup_wait);
    let leftovers = loop {
        let after = snapshot(store.as_ref(), chat, &dates).await?;
        let left: Vec<String> = after
            .difference(&before)
            .filter(|e| Some(*e) != accepted_path.as_ref() && Some(*e) != accepted_dir.as_ref())
            .cloned()
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let elapsed = t0.elapsed();

    let result = LimitsResult {
        max_file_size: max,
        exact_status,
        exact_stored_size,
        over_status,
        over_chunked_status,
        leftovers: leftovers.clone(),
    };
    let settings = serde_json::json!({
        "max_file_size": max,
        "chat": chat.as_str(),
    });
    let totals = ctx.recorder.totals();
    let mut report = Report::new(
        "limits",
        &ctx.target.base_url,
        started_at,
        elapsed,
        settings,
        totals,
    );
    report.check(Check::new(
        "exactly max_file_size accepted",
        exact_status == 201,
        match &exact {
            Ok(up) => format!("201, {} bytes at {}", up.size, up.uri),
            Err(f) => f.to_string(),
        },
    ));
    report.check(Check::new(
        "stored size is max_file_size",
        exact_stored_size == Some(max),
        format!("HEAD Content-Length {exact_stored_size:?}, expected {max}"),
    ));
    report.check(Check::new(
        "+1 byte refused with 413",
        over_status == 413,
        over_detail,
    ));
    report.check(Check::new(
        "+1 byte chunked refused with 413",
        over_chunked_status == 413,
        over_chunked_detail,
    ));
    report.check(Check::new(
        "nothing left on the file server",
        leftovers.is_empty(),
        if leftovers.is_empty() {
            "no new entries besides the accepted upload".to_string()
        } else {
            format!("left behind: {}", leftovers.join(", "))
        },
    ));
    report.limits = Some(result);
    Ok(report)
}
