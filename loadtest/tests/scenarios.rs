//! Each scenario run briefly against a real in-process node backed by OpenSSH `sshd` and
//! PostgreSQL, and its report checked. The node's layout clock is pinned (2026-12-03 17:30 UTC),
//! so the hour directories are known in advance. Tests take turns: they measure latency and
//! throughput, and two cores shared by four sets of servers would measure only the contention.

// The shared helpers are linted where they live (the workspace root's tests).
#[allow(clippy::all)]
#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;

use clap::Parser;
use mft::config::Config;
use mft_loadtest::cli::{Cli, Global, Scenario};
use mft_loadtest::{Report, Target, scenarios};
use support::node::{TestNode, sftp_postgres_config};
use support::postgres::Postgres;
use support::sshd::Sshd;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Real servers and a node on them; everything stops on drop.
struct Rig {
    node: TestNode,
    _sshd: Sshd,
    _pg: Postgres,
    dir: tempfile::TempDir,
}

async fn rig(tune: impl FnOnce(&mut Config)) -> Rig {
    let sshd = Sshd::start();
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = sftp_postgres_config(&sshd, &pg, dir.path());
    tune(&mut config);
    let node = TestNode::start(config).await;
    Rig {
        node,
        _sshd: sshd,
        _pg: pg,
        dir,
    }
}

impl Rig {
    /// Stops the node cleanly (drains, flushes AFT_LOG) before the servers go.
    async fn stop(mut self) {
        self.node.stop().await;
    }

    /// Parses `args` as the command line would (after `--config`).
    fn cli(&self, args: &[&str]) -> Cli {
        let mut argv = vec!["mft-loadtest", "--quiet"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("valid command line")
    }

    async fn run(&self, cli: &Cli) -> Report {
        let base = self.node.base_url();
        let target = Target::new(self.node.config.clone(), Some(&base), None, false)
            .expect("target from the node's configuration");
        scenarios::run_with(target, &cli.global, &cli.scenario)
            .await
            .expect("scenario ran")
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn emit(report: &Report, global: &Global) {
    mft_loadtest::report::emit(report, global).expect("writing the report");
}

fn read_json(path: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("JSON report written");
    serde_json::from_str(&text).expect("JSON report parses")
}

fn explain(report: &Report) -> String {
    mft_loadtest::report::table::render(report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollover_finds_exactly_n_files_in_numbered_hour_dirs() {
    let _turn = SERIAL.lock().await;
    let rig = rig(|_| {}).await;
    let cli = rig.cli(&[
        "rollover",
        "--files",
        "1005",
        "--concurrency",
        "16",
        "--size",
        "512",
    ]);
    let report = rig.run(&cli).await;
    assert!(report.passed, "{}", explain(&report));
    let ro = report.rollover.as_ref().expect("rollover section");
    assert_eq!(report.uploads_ok, 1005);
    assert_eq!(ro.uploads, 1005);
    assert_eq!(ro.files_found, 1005, "exactly the uploads, nothing else");
    assert_eq!(ro.missing, 0);
    assert_eq!(ro.temp_files, 0);
    let dirs: Vec<(&str, u64)> = ro
        .hour_dirs
        .iter()
        .map(|d| (d.dir.as_str(), d.files))
        .collect();
    assert_eq!(
        dirs,
        vec![
            ("files/im/20261203/17", 1000),
            ("files/im/20261203/17.1", 5)
        ],
        "{}",
        explain(&report)
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_accepts_exactly_the_maximum_and_refuses_one_byte_more() {
    let _turn = SERIAL.lock().await;
    let rig = rig(|c| c.transfer.max_file_size = 1024 * 1024).await;
    let cli = rig.cli(&["limits", "--chat", "groupchat"]);
    let report = rig.run(&cli).await;
    assert!(report.passed, "{}", explain(&report));
    let li = report.limits.as_ref().expect("limits section");
    assert_eq!(li.max_file_size, 1_048_576);
    assert_eq!(li.exact_status, 201);
    assert_eq!(li.exact_stored_size, Some(1_048_576));
    assert_eq!(li.over_status, 413);
    assert_eq!(li.over_chunked_status, 413);
    assert!(li.leftovers.is_empty(), "{:?}", li.leftovers);
    // Only the accepted file is on the file server (sshd serves a local directory).
    let root = Path::new(&rig.node.config.file_server.directory);
    let files = support::node::files_under(root);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        std::fs::metadata(root.join(&files[0]))
            .expect("stored file")
            .len(),
        1_048_576
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_moves_every_byte_both_ways() {
    let _turn = SERIAL.lock().await;
    let rig = rig(|_| {}).await;
    let (json, html) = (rig.path("t.json"), rig.path("t.html"));
    let cli = rig.cli(&[
        "throughput",
        "--concurrency",
        "3",
        "--size",
        "2MiB",
        "--count",
        "6",
        "--floor-mb-s",
        "0",
        "--verify",
        "--json",
        &json,
        "--html",
        &html,
    ]);
    let report = rig.run(&cli).await;
    emit(&report, &cli.global);
    assert!(report.passed, "{}", explain(&report));
    let expected = 6 * 2 * 1024 * 1024;
    assert_eq!(report.uploads_ok, 6);
    assert_eq!(report.downloads_ok, 6);
    assert_eq!(report.bytes_uploaded, expected);
    assert_eq!(report.bytes_downloaded, expected);
    let t = report.throughput.as_ref().expect("throughput section");
    assert!(t.upload_mb_s > 0.0 && t.download_mb_s > 0.0);
    let j = read_json(&json);
    assert_eq!(j["uploads_ok"], 6);
    assert_eq!(j["bytes_downloaded"], expected);
    assert!(j["throughput"]["upload_mb_s"].as_f64().is_some());
    let page = std::fs::read_to_string(&html).expect("HTML report written");
    assert!(page.contains("<svg") && page.contains("Throughput over time"));
    assert!(!page.contains("<script") && !page.contains("src=\"http"));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_holds_a_modest_open_load_without_errors() {
    let _turn = SERIAL.lock().await;
    let rig = rig(|_| {}).await;
    let json = rig.path("c.json");
    // 600 users x 60 files/h = 10 uploads/s, x2 = 20/s for 4 s: about 80 uploads of ~20 KB.
    let cli = rig.cli(&[
        "capacity",
        "--users",
        "600",
        "--files-per-hour",
        "60",
        "--mean-size",
        "20KB",
        "--size-dist",
        "lognormal",
        "--duration",
        "4",
        "--speedup",
        "2",
        "--downloads-per-upload",
        "1",
        "--group-fanout",
        "3",
        "--chat-mix",
        "im=0.6,groupchat=0.3,persistent=0.1",
        "--retention-days",
        "10",
        "--p99-target-ms",
        "5000",
        "--json",
        &json,
    ]);
    let report = rig.run(&cli).await;
    emit(&report, &cli.global);
    assert!(report.passed, "{}", explain(&report));
    assert!(report.uploads_ok > 0);
    assert_eq!(report.errors, 0, "{:?}", report.errors_by_kind);
    assert!(report.downloads_ok >= report.uploads_ok);
    assert!(report.upload_latency_ms.count == report.uploads_ok);
    assert!(report.upload_latency_ms.p50 > 0.0);
    assert!(report.upload_latency_ms.p50 <= report.upload_latency_ms.p99);
    let p = report.projection.as_ref().expect("projection");
    assert!((p.offered_uploads_per_s - 20.0).abs() < 1e-9);
    // 600 x 60 x 8 h = 288 000 files/day of 20 KB = 5.76 GB/day; 57.6 GB for 10 days.
    assert!((p.profile_load.files_per_day - 288_000.0).abs() < 1e-6);
    assert!((p.profile_load.gb_per_day - 5.76).abs() < 1e-9);
    assert!((p.profile_load.retention_gb - 57.6).abs() < 1e-9);
    assert!(p.kept_up);
    assert!(p.headroom > 1.0, "held {} vs profile", p.held_uploads_per_s);
    let j = read_json(&json);
    for key in [
        "uploads_ok",
        "downloads_ok",
        "errors",
        "files_per_s",
        "throughput_mb_s",
    ] {
        assert!(j[key].is_number(), "{key} missing from the JSON report");
    }
    for side in ["upload_latency_ms", "download_latency_ms"] {
        for q in ["p50", "p90", "p99", "p999"] {
            assert!(
                j[side][q].is_number(),
                "{side}.{q} missing from the JSON report"
            );
        }
    }
    rig.stop().await;
}

/// The binary end to end: configuration file in, exit status and JSON out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reads_the_node_config_and_exits_by_its_checks() {
    let _turn = SERIAL.lock().await;
    let rig = rig(|c| c.transfer.max_file_size = 64 * 1024).await;
    let c = &rig.node.config;
    let fs = &c.file_server;
    let toml = format!(
        r#"[node]
id = "{id}"
public_url = "{url}"
key_file = "{key}"
data_dir = "{data}"

[transfer]
max_file_size = {max}

[auth]
ticket_secret = "{secret}"

[database]
url = "{db}"

[file_server]
kind = "sftp"
host = "{host}"
port = {port}
user = "{user}"
directory = "{dir}"
public_key = "{pk}"
"#,
        id = c.node.id,
        url = rig.node.base_url(),
        key = c.node.key_file.display(),
        data = c.node.data_dir.display(),
        max = c.transfer.max_file_size,
        secret = c.auth.ticket_secret.as_deref().unwrap_or_default(),
        db = c.database.url,
        host = fs.host,
        port = fs.port,
        user = fs.user,
        dir = fs.directory,
        pk = fs.public_key.trim(),
    );
    let config_path = rig.path("mft.toml");
    std::fs::write(&config_path, toml).expect("writing the config");
    let json = rig.path("limits.json");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mft-loadtest"))
        .args(["--config", &config_path, "--json", &json, "limits"])
        .output()
        .await
        .expect("running mft-loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PASSED"), "{stdout}");
    let j = read_json(&json);
    assert_eq!(j["scenario"], "limits");
    assert_eq!(j["limits"]["over_status"], 413);
    assert_eq!(j["passed"], true);

    // A remote target is refused before any traffic (exit status 2).
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mft-loadtest"))
        .args([
            "--config",
            &config_path,
            "--url",
            "http://192.0.2.1:7336",
            "limits",
        ])
        .output()
        .await
        .expect("running mft-loadtest");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-remote"));
    rig.stop().await;
}

#[test]
fn scenario_names() {
    let cli = Cli::try_parse_from(["mft-loadtest", "rollover"]).expect("parses");
    assert!(matches!(cli.scenario, Scenario::Rollover(_)));
    assert_eq!(cli.scenario.name(), "rollover");
}
