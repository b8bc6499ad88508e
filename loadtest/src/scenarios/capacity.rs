//! The capacity scenario: an open-model load drawn from a user profile.
//!
//! Uploads arrive as a Poisson process at `users × files_per_hour / 3600 × speedup` per second
//! whether or not earlier ones have finished, so a node that falls behind shows it as latency and
//! errors rather than being slowed down politely by a closed loop. Latency counts from the
//! moment an upload was due, not when the tool got round to sending it. Each successful upload
//! is then downloaded by its recipients (group chats fan out to their participants).

use std::time::Duration;

use anyhow::bail;
use futures_util::future::join_all;
use mft::layout::ChatType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Ctx, UploadSpec, room_jid, user_jid};
use crate::cli::{CapacityArgs, SizeDistArg};
use crate::client::Framing;
use crate::dist::{PoissonArrivals, SizeDist};
use crate::progress::Progress;
use crate::projection::{Profile, Projection, Verdict};
use crate::report::{Check, Report};
use crate::stats::Direction;

/// The longest run the tool agrees to: a day.
const MAX_DURATION_S: u64 = 86_400;

/// One planned upload, drawn before the run so the random stream does not depend on timing.
struct Arrival {
    at: Duration,
    n: u64,
    chat: ChatType,
    size: u64,
    sender: u64,
    recipient: u64,
}

pub async fn run(ctx: &Ctx, args: &CapacityArgs) -> anyhow::Result<Report> {
    let started_at = chrono::Utc::now();
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if args.users == 0 || !positive(args.files_per_hour) || !positive(args.speedup) {
        bail!("--users, --files-per-hour and --speedup must be positive");
    }
    if args.duration == 0 || args.duration > MAX_DURATION_S {
        bail!("--duration must be 1 to {MAX_DURATION_S} seconds");
    }
    let max = ctx.target.max_file_size();
    if args.mean_size == 0 || args.mean_size > max {
        bail!("--mean-size must be 1 to the node's max_file_size ({max} bytes)");
    }
    let profile = Profile {
        users: args.users,
        files_per_hour: args.files_per_hour,
        mean_size_bytes: args.mean_size,
        hours_per_day: args.hours_per_day,
        downloads_per_upload: f64::from(args.downloads_per_upload),
        retention_days: args.retention_days,
    };
    let offered = profile.load().uploads_per_s * args.speedup;
    let Some(poisson) = PoissonArrivals::new(offered) else {
        bail!("the offered rate {offered} uploads/s is not a positive number");
    };
    let sizes = match args.size_dist {
        SizeDistArg::Fixed => SizeDist::Fixed {
            bytes: args.mean_size,
        },
        SizeDistArg::Lognormal => SizeDist::LogNormal {
            mean: args.mean_size,
            sigma: args.size_sigma,
            max,
        },
    };
    let mut rng = StdRng::seed_from_u64(ctx.seed);
    let window = Duration::from_secs(args.duration);
    let arrivals: Vec<Arrival> = poisson
        .schedule(&mut rng, window)
        .into_iter()
        .enumerate()
        .map(|(i, at)| Arrival {
            at,
            n: i as u64,
            chat: args.chat_mix.pick(&mut rng),
            size: sizes.sample(&mut rng),
            sender: rng.random_range(0..args.users),
            recipient: rng.random_range(0..args.users),
        })
        .collect();
    let planned = arrivals.len() as u64;

    let mut progress = Progress::new(planned, "uploads", ctx.show_progress);
    progress.watch(ctx.recorder.clone());
    let t0 = Instant::from_std(ctx.recorder.start());
    let mut tasks: JoinSet<u64> = JoinSet::new();
    let mut downloads_expected = 0u64;
    for arrival in arrivals {
        let due = t0 + arrival.at;
        tokio::time::sleep_until(due).await;
        while let Some(done) = tasks.try_join_next() {
            downloads_expected += done.unwrap_or(0);
        }
        if tasks.len() >= args.max_in_flight {
            ctx.recorder.error(Direction::Upload, "client_overload");
            progress.inc();
            continue;
        }
        let fanout = match arrival.chat {
            ChatType::Groupchat => args.group_fanout.unwrap_or(args.downloads_per_upload),
            _ => args.downloads_per_upload,
        };
        let ctx = ctx.clone();
        let bar = progress.bar().clone();
        tasks.spawn(async move {
            let n = transfer(&ctx, arrival, due, fanout).await;
            bar.inc(1);
            n
        });
    }
    let drain = Duration::from_secs(args.drain_timeout);
    let drained = tokio::time::timeout(drain, async {
        let mut expected = 0u64;
        while let Some(done) = tasks.join_next().await {
            expected += done.unwrap_or(0);
        }
        expected
    })
    .await;
    match drained {
        Ok(n) => downloads_expected += n,
        Err(_) => {
            for _ in 0..tasks.len() {
                ctx.recorder.error(Direction::Upload, "unfinished");
            }
            tasks.abort_all();
        }
    }
    progress.finish();
    let elapsed = t0.elapsed();
    let totals = ctx.recorder.totals();

    let held_over = totals.last_upload_s.max(window.as_secs_f64());
    let held = totals.uploads_ok as f64 / held_over;
    let p99 = totals.upload_latency_ms.p99;
    let verdict = Verdict::judge(
        totals.errors,
        totals.uploads_ok,
        planned,
        p99,
        args.p99_target_ms,
    );
    let projection = Projection::new(profile, offered, held, verdict);

    let settings = serde_json::json!({
        "users": args.users,
        "files_per_hour": args.files_per_hour,
        "mean_size": args.mean_size,
        "size_dist": format!("{:?}", args.size_dist).to_lowercase(),
        "size_sigma": args.size_sigma,
        "duration_s": args.duration,
        "speedup": args.speedup,
        "downloads_per_upload": args.downloads_per_upload,
        "group_fanout": args.group_fanout,
        "chat_mix": args.chat_mix.to_string(),
        "offered_uploads_per_s": offered,
        "planned_uploads": planned,
        "p99_target_ms": args.p99_target_ms,
        "seed": ctx.seed,
    });
    let (uploads_ok, downloads_ok, errors) =
        (totals.uploads_ok, totals.downloads_ok, totals.errors);
    let mut report = Report::new(
        "capacity",
        &ctx.target.base_url,
        started_at,
        elapsed,
        settings,
        totals,
    );
    report.projection = Some(projection);
    report.check(Check::new(
        "no errors",
        errors == 0,
        format!("{errors} errors"),
    ));
    report.check(Check::new(
        "every arrival uploaded",
        uploads_ok == planned,
        format!("{uploads_ok} of {planned}"),
    ));
    report.check(Check::new(
        "every download made",
        downloads_ok == downloads_expected,
        format!("{downloads_ok} of {downloads_expected}"),
    ));
    report.check(Check::new(
        "upload p99 within target",
        p99 <= args.p99_target_ms,
        format!("{p99:.1} ms (target {} ms)", args.p99_target_ms),
    ));
    Ok(report)
}

/// One upload and its downloads. Returns the downloads it attempted, so the scenario knows how
/// many to expect.
async fn transfer(ctx: &Ctx, a: Arrival, due: Instant, fanout: u32) -> u64 {
    let from = user_jid(a.sender);
    let to = match a.chat {
        ChatType::Im => user_jid(a.recipient),
        ChatType::Groupchat | ChatType::Persistent => room_jid(a.recipient % 1000),
    };
    let name = format!("loadtest-{}.bin", a.n);
    let spec = UploadSpec {
        chat: a.chat,
        from: &from,
        to: &to,
        name: &name,
        size: a.size,
        file: a.n,
        framing: Framing::ContentLength,
    };
    let up = match ctx.upload(&spec).await {
        Ok(up) => {
            ctx.recorder.ok(Direction::Upload, a.size, due.elapsed());
            up
        }
        Err(f) => {
            ctx.recorder.error(Direction::Upload, &f.kind());
            return 0;
        }
    };
    let downloads = (0..u64::from(fanout)).map(|j| {
        // Distinct downloaders: the recipient, then the next users (room participants).
        let who = user_jid(a.recipient.wrapping_add(j));
        let up = &up;
        async move {
            let start = Instant::now();
            match ctx.download(up, &who).await {
                Ok(got) => ctx
                    .recorder
                    .ok(Direction::Download, got.bytes, start.elapsed()),
                Err(f) => ctx.recorder.error(Direction::Download, &f.kind()),
            }
        }
    });
    join_all(downloads).await;
    u64::from(fanout)
}
