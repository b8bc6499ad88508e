//! Measurements, not checks: the issue's capacity target and the throughput floor, run against a
//! real node on sshd + PostgreSQL on this machine. Ignored by default (they take minutes and
//! want a release build):
//!
//! ```text
//! cargo test --release -p mft-loadtest --test measure -- --ignored --nocapture --test-threads 1
//! ```
//!
//! `MFT_LOADTEST_SPEEDUP` (default 100) and `MFT_LOADTEST_DURATION` (seconds, default 20) shape
//! the capacity run; reports land in `MFT_LOADTEST_OUT` (default: the system temp directory).

// The shared helpers are linted where they live (the workspace root's tests).
#[allow(clippy::all)]
#[path = "../../tests/support/mod.rs"]
mod support;

use clap::Parser;
use mft_loadtest::cli::Cli;
use mft_loadtest::{Target, report, scenarios};
use support::node::{TestNode, sftp_postgres_config};
use support::postgres::Postgres;
use support::sshd::Sshd;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

async fn measure(args: &[&str]) {
    let sshd = Sshd::start();
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = sftp_postgres_config(&sshd, &pg, dir.path());
    config.file_server.pool_size = 8;
    let mut node = TestNode::start(config).await;
    let mut argv = vec!["mft-loadtest"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("valid command line");
    let base = node.base_url();
    let target =
        Target::new(node.config.clone(), Some(&base), None, false).expect("target from config");
    let r = scenarios::run_with(target, &cli.global, &cli.scenario)
        .await
        .expect("scenario ran");
    report::emit(&r, &cli.global).expect("report written");
    // Where the node spent its time: pool waits, AFT_LOG flushes, transfer durations.
    if let Ok(resp) = reqwest::get(format!("{base}/metrics")).await
        && let Ok(text) = resp.text().await
    {
        for line in text.lines().filter(|l| {
            !l.starts_with('#')
                && (l.contains("_sum") || l.contains("_count") || l.contains("quantile=\"0.99\""))
                && (l.contains("sftp_pool_wait")
                    || l.contains("aftlog_flush")
                    || l.contains("aftlog_batch_rows")
                    || l.contains("transfer_duration"))
        }) {
            println!("  node metric: {line}");
        }
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: minutes, release build"]
async fn reference_profile_sped_up() {
    let out = env_or(
        "MFT_LOADTEST_OUT",
        &std::env::temp_dir().display().to_string(),
    );
    let (json, html) = (
        format!("{out}/capacity.json"),
        format!("{out}/capacity.html"),
    );
    let speedup = env_or("MFT_LOADTEST_SPEEDUP", "100");
    let duration = env_or("MFT_LOADTEST_DURATION", "20");
    measure(&[
        "capacity",
        "--users",
        "12000",
        "--files-per-hour",
        "2",
        "--mean-size",
        "100KB",
        "--size-dist",
        "fixed",
        "--speedup",
        &speedup,
        "--duration",
        &duration,
        "--downloads-per-upload",
        "1",
        "--json",
        &json,
        "--html",
        &html,
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: minutes, release build"]
async fn throughput_large_files() {
    let out = env_or(
        "MFT_LOADTEST_OUT",
        &std::env::temp_dir().display().to_string(),
    );
    let json = format!("{out}/throughput.json");
    measure(&[
        "throughput",
        "--concurrency",
        "4",
        "--size",
        "128MB",
        "--count",
        "8",
        "--json",
        &json,
    ])
    .await;
}
