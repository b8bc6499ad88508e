//! Observability against real servers (SPEC sections 6 and 7): a node on OpenSSH `sshd` and
//! PostgreSQL, scraped on `/metrics` after real transfers, and its alarms raised and cleared by
//! setting thresholds above the free space, stopping `sshd`, stopping PostgreSQL and making it
//! refuse writes as a full disk does, with the structured log event, `/status` and (for the
//! file server alarms) the webhook checked.
//!
//! The Prometheus recorder and the `tracing` subscriber are process-wide, so the tests of this
//! file run one at a time ([`SERIAL`]) and compare counters before and after, never absolutes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mft::telemetry;
use support::node::{Rig, TestNode, aft_rows, files_under, rig, sftp_postgres_config, test_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const FREE_SPACE: &str = "XcpMFTExtFsFreeSpaceWarn";
const MOUNT: &str = "XcpMFTExtFsMountError";
const DB_CONNECT: &str = "XcpMFTDBConnectError";
const DB_FULL: &str = "XcpMFTDBFullError";
const ALARMS: [&str; 4] = [FREE_SPACE, MOUNT, DB_CONNECT, DB_FULL];

/// Alarms must follow a backend within this long at `check_interval_s = 1`.
const ALARM_WITHIN: Duration = Duration::from_secs(20);

/// An alarm's `since` must be at most this long after its cause (a few check intervals: a
/// database ping gives up after 1.5 s).
const RAISED_LAG: Duration = Duration::from_secs(6);

/// One test at a time: metrics and logs are shared by every node in this process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// Prometheus exposition

/// One parsed exposition: samples, and the declared type of each metric family.
struct Scrape {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
    types: BTreeMap<String, String>,
    text: String,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    types.insert(name.to_string(), kind.to_string());
                }
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            samples.push(parse_sample(line));
        }
        Scrape {
            samples,
            types,
            text: text.to_string(),
        }
    }

    fn names(&self) -> BTreeSet<&str> {
        self.samples.iter().map(|(n, _, _)| n.as_str()).collect()
    }

    /// Sum of the samples of `name` whose labels include every pair of `labels`; `None` when
    /// there is no such sample.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for (n, l, v) in &self.samples {
            if n == name
                && labels
                    .iter()
                    .all(|(k, want)| l.get(*k).is_some_and(|got| got == want))
            {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }

    /// Like [`Scrape::get`], panicking with the exposition when absent.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("{name}{labels:?} missing from /metrics:\n{}", self.text))
    }

    /// `value` here minus `value` in `before` (0 there when absent).
    fn delta(&self, before: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels) - before.get(name, labels).unwrap_or(0.0)
    }
}

fn parse_sample(line: &str) -> (String, BTreeMap<String, String>, f64) {
    let name_end = line.find(['{', ' ']).expect("sample has a value");
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let mut end = inner.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '}' => {
                    end = i + 1;
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                    let mut value = String::new();
                    while let Some((_, c)) = chars.next() {
                        match c {
                            '\\' => match chars.next().map(|(_, c)| c) {
                                Some('n') => value.push('\n'),
                                Some(other) => value.push(other),
                                None => {}
                            },
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                c => key.push(c),
            }
        }
        rest = &inner[end..];
    }
    let value = rest
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no value in `{line}`"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in `{line}`")),
    };
    (name, labels, value)
}

async fn scrape(node: &TestNode) -> Scrape {
    let resp = node
        .client
        .get(format!("{}/metrics", node.base_url()))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    Scrape::parse(&resp.text().await.expect("/metrics body"))
}

async fn status(node: &TestNode) -> serde_json::Value {
    let resp = node
        .client
        .get(format!("{}/status", node.base_url()))
        .send()
        .await
        .expect("GET /status");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("/status JSON")
}

/// The entry of `alarm` in `/status`'s active alarms, if listed.
fn status_alarm<'a>(status: &'a serde_json::Value, alarm: &str) -> Option<&'a serde_json::Value> {
    status["alarms"]
        .as_array()
        .expect("/status has an alarms array")
        .iter()
        .find(|a| a["alarm"] == alarm)
}

/// When `/status` says `alarm` was raised (panics when it is not listed).
fn since_of(status: &serde_json::Value, alarm: &str) -> chrono::DateTime<chrono::Utc> {
    let entry = status_alarm(status, alarm).unwrap_or_else(|| panic!("{alarm} not in {status}"));
    chrono::DateTime::parse_from_rfc3339(entry["since"].as_str().expect("since is a string"))
        .expect("since is RFC 3339")
        .with_timezone(&chrono::Utc)
}

/// Checks that `alarm` was raised within [`RAISED_LAG`] of `cause`.
fn assert_raised_soon_after(
    status: &serde_json::Value,
    alarm: &str,
    cause: chrono::DateTime<chrono::Utc>,
) {
    let lag = (since_of(status, alarm) - cause)
        .to_std()
        .unwrap_or_else(|_| panic!("{alarm} raised before its cause: {status}"));
    eprintln!("{alarm} raised {lag:?} after its cause");
    assert!(lag <= RAISED_LAG, "{alarm} raised {lag:?} after its cause");
}

/// Polls `/metrics` until `mft_alarm_active{alarm}` is `want` (1 or 0) and `/status` agrees;
/// returns how long it took, panics after `within`.
async fn wait_alarm(node: &TestNode, alarm: &str, want: bool, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let metric = scrape(node)
            .await
            .get(telemetry::ALARM_ACTIVE, &[("alarm", alarm)]);
        let st = status(node).await;
        let listed = status_alarm(&st, alarm).is_some();
        if metric == Some(if want { 1.0 } else { 0.0 }) && listed == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{alarm} not {} within {within:?}: metric {metric:?}, /status {st:#}",
            if want { "raised" } else { "cleared" }
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Structured log events

/// Every `tracing` event of the process, as JSON lines.
fn log_lines() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer_buf = buf.clone();
        let installed = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new("mft=info"))
            .with_writer(move || LogWriter(writer_buf.clone()))
            .try_init();
        assert!(installed.is_ok(), "a tracing subscriber was already set");
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log events with `message` and field `alarm == alarm`, as `(level, fields)`.
fn alarm_events(message: &str, alarm: &str) -> Vec<(String, serde_json::Value)> {
    let buf = log_lines()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    String::from_utf8_lossy(&buf)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["fields"]["message"] == message && e["fields"]["alarm"] == alarm)
        .map(|e| {
            (
                e["level"].as_str().unwrap_or("").to_string(),
                e["fields"].clone(),
            )
        })
        .collect()
}

fn assert_logged(message: &str, alarm: &str, level: &str, before: usize) {
    let events = alarm_events(message, alarm);
    assert!(
        events.len() > before,
        "no new `{message}` event for {alarm} in the log"
    );
    let (got_level, fields) = events.last().expect("an event");
    assert_eq!(got_level, level, "{message} {alarm}: {fields}");
    assert!(
        fields["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{message} {alarm} carries no detail: {fields}"
    );
}

// ---------------------------------------------------------------------------------------------
// Webhook receiver

/// A tiny HTTP server on 127.0.0.1 that answers 200 to anything and hands over each body.
async fn webhook_receiver() -> (String, mpsc::UnboundedReceiver<serde_json::Value>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the webhook receiver");
    let url = format!(
        "http://{}/hooks/mft?source=test",
        listener.local_addr().expect("receiver address")
    );
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, length) = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                        assert!(
                            head.starts_with("post /hooks/mft?source=test http/1.1"),
                            "{head}"
                        );
                        assert!(head.contains("content-type: application/json"), "{head}");
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .expect("webhook request has a Content-Length");
                        break (i + 4, length);
                    }
                };
                while buf.len() < head_end + length {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = &buf[head_end..head_end + length];
                let json = serde_json::from_slice(body).expect("webhook body is JSON");
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = tx.send(json);
            });
        }
    });
    (url, rx)
}

/// The next webhook event for `alarm` (others are skipped), within `within`.
async fn next_webhook(
    rx: &mut mpsc::UnboundedReceiver<serde_json::Value>,
    alarm: &str,
    within: Duration,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(event)) if event["alarm"] == alarm => return event,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("webhook receiver stopped"),
            Err(_) => panic!("no webhook event for {alarm} within {within:?}"),
        }
    }
}

fn assert_webhook(event: &serde_json::Value, alarm: &str, state: &str) {
    assert_eq!(event["node"], "node1", "{event}");
    assert_eq!(event["alarm"], alarm, "{event}");
    assert_eq!(event["state"], state, "{event}");
    let at = event["at"].as_str().expect("`at` is a string");
    let at = chrono::DateTime::parse_from_rfc3339(at).expect("`at` is RFC 3339");
    assert!(at <= chrono::Utc::now(), "{event}");
    assert!(
        event["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{event}"
    );
}

// ---------------------------------------------------------------------------------------------
// Rig

fn config(rig: &Rig) -> mft::config::Config {
    let mut c = sftp_postgres_config(&rig.sshd, &rig.pg, rig.data.path());
    c.alarms.check_interval_s = 1;
    c
}

/// Every `mft_…` metric name in `text` (PromQL name runs; recording-rule names, which hold
/// `:`, are not metrics the node emits).
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut token = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            token.push(c);
            continue;
        }
        if token.starts_with("mft_") && !token.contains(':') {
            names.insert(token.clone());
        }
        token.clear();
    }
    names
}

/// Whether the exposition carries `name`: as a sample, or (for a histogram family) its buckets.
fn exposes(s: &Scrape, name: &str) -> Result<(), String> {
    let names = s.names();
    match s.types.get(name).map(String::as_str) {
        Some("histogram") => {
            if names.contains(format!("{name}_bucket").as_str()) {
                Ok(())
            } else {
                Err(format!("{name}: histogram without buckets"))
            }
        }
        Some("summary") => Err(format!("{name}: a summary, not a histogram")),
        _ if names.contains(name) => Ok(()),
        _ => Err(format!("{name}: not in the exposition")),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

/// After real uploads, downloads and refused uploads, every metric of SPEC section 7 and every
/// metric the dashboards and alert rules use is exposed, histograms as buckets, and the
/// counters add up to what was transferred.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_real_transfers() {
    let _serial = SERIAL.lock().await;
    let rig = rig();
    let mut cfg = config(&rig);
    // Only the start-up check can set the file server gauges within this test.
    cfg.alarms.check_interval_s = 3600;
    cfg.transfer.max_file_size = 4_000_000;
    // The gauges are process-wide and an earlier test's node may have set them: poison them, so
    // only this node's start-up check can make them positive.
    let recorder = telemetry::install_recorder();
    metrics::gauge!(telemetry::FS_FREE_BYTES).set(-1.0);
    metrics::gauge!(telemetry::FS_TOTAL_BYTES).set(-1.0);
    let pre_start = Scrape::parse(&recorder.render());
    let mut node = TestNode::start(cfg).await;

    // Start-up: the first check runs at once, every alarm is exported, build info is there.
    let started = Instant::now();
    let boot = loop {
        let s = scrape(&node).await;
        if s.get(telemetry::FS_TOTAL_BYTES, &[])
            .is_some_and(|v| v > 0.0)
        {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "file server gauges not set at start-up:\n{}",
            s.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let free = boot.value(telemetry::FS_FREE_BYTES, &[]);
    let total = boot.value(telemetry::FS_TOTAL_BYTES, &[]);
    assert!(free > 0.0 && total >= free, "free {free} of {total}");
    let free_percent = free * 100.0 / total;
    for alarm in ALARMS {
        let expected = if alarm == FREE_SPACE && free_percent <= 10.0 {
            1.0
        } else {
            0.0
        };
        assert_eq!(
            boot.value(telemetry::ALARM_ACTIVE, &[("alarm", alarm)]),
            expected,
            "{alarm}"
        );
    }
    assert_eq!(
        boot.value(
            telemetry::BUILD_INFO,
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(boot.value(telemetry::FS_FREE_LOWER_THRESHOLD, &[]), 10.0);
    assert_eq!(boot.value(telemetry::FS_FREE_UPPER_THRESHOLD, &[]), 15.0);
    let before = boot;

    // Transfers: five uploads (an empty file among them), each downloaded once.
    let sizes: [usize; 5] = [0, 1, 100_000, 1_000_000, 3_999_999];
    let mut uploaded = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        uploaded.push(
            node.upload_ok(&format!("m{i}.bin"), test_bytes(*size, 500 + i as u64))
                .await,
        );
    }
    for up in &uploaded {
        let resp = node.download(&up.uri, "carol@example.com").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().await.expect("body").len() as u64, up.size);
    }
    // Refused: a ticket announcing more than max_file_size (413 before the body is read), and
    // no ticket at all (401).
    let ticket = node.upload_ticket("big.bin", Some(4_000_001));
    let resp = node
        .client
        .post(format!("{}/files", node.base_url()))
        .bearer_auth(ticket)
        .body(vec![0u8; 16])
        .send()
        .await
        .expect("refused upload");
    assert_eq!(resp.status(), 413);
    let resp = node
        .client
        .post(format!("{}/files", node.base_url()))
        .body(vec![0u8; 16])
        .send()
        .await
        .expect("unauthenticated upload");
    assert_eq!(resp.status(), 401);

    // Get rows are written in the background: wait for them.
    let started = Instant::now();
    let after = loop {
        let s = scrape(&node).await;
        let gets = s.delta(
            &before,
            telemetry::AFTLOG_ROWS_WRITTEN,
            &[("method", "Get")],
        );
        let busy = s.get(telemetry::SFTP_POOL_SESSIONS, &[("state", "busy")]);
        if gets >= 5.0 && s.value(telemetry::AFTLOG_PENDING_ROWS, &[]) == 0.0 && busy == Some(0.0) {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "Get rows not written or SFTP sessions still busy:\n{}",
            s.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Every name on the dashboard and in the alert rules, and every metric of ALL_METRICS.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut wanted = BTreeSet::new();
    for file in ["mft-node.json", "alerts.rules.yml"] {
        let text = std::fs::read_to_string(dir.join(file)).expect("reading dashboards/");
        let names = metric_names_in(&text);
        assert!(names.len() >= 5, "{file}: only {names:?}");
        wanted.extend(names);
    }
    let missing: Vec<String> = wanted
        .iter()
        .map(String::as_str)
        .chain(telemetry::ALL_METRICS.iter().copied())
        .filter_map(|name| {
            // A dashboard may name `_bucket`/`_sum`/`_count` series directly.
            let plain = exposes(&after, name);
            let as_series = after.names().contains(name);
            (plain.is_err() && !as_series).then(|| plain.unwrap_err())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "not exposed after real transfers:\n  {}\n{}",
        missing.join("\n  "),
        after.text
    );
    for histogram in [
        telemetry::TRANSFER_DURATION,
        telemetry::TRANSFER_SIZE,
        telemetry::SFTP_POOL_WAIT,
        telemetry::AFTLOG_BATCH_ROWS,
        telemetry::AFTLOG_FLUSH_DURATION,
    ] {
        assert_eq!(
            after.types.get(histogram).map(String::as_str),
            Some("histogram"),
            "{histogram}"
        );
    }

    // Counters add up.
    let n = sizes.len() as f64;
    let bytes: f64 = sizes.iter().map(|s| *s as f64).sum();
    let d = |name: &str, labels: &[(&str, &str)]| after.delta(&before, name, labels);
    assert_eq!(d(telemetry::FILES_UPLOADED, &[]), n);
    assert_eq!(d(telemetry::BYTES_UPLOADED, &[]), bytes);
    assert_eq!(d(telemetry::FILES_DOWNLOADED, &[]), n);
    assert_eq!(d(telemetry::BYTES_DOWNLOADED, &[]), bytes);
    let up = [("direction", "upload")];
    let down = [("direction", "download")];
    assert_eq!(
        d(
            telemetry::TRANSFER_ERRORS,
            &[("direction", "upload"), ("reason", "too_large")]
        ),
        1.0
    );
    assert_eq!(
        d(
            telemetry::TRANSFER_ERRORS,
            &[("direction", "upload"), ("reason", "ticket_missing")]
        ),
        1.0
    );
    assert_eq!(d(telemetry::TRANSFER_ERRORS, &up), 2.0);
    assert_eq!(
        after.get(telemetry::TRANSFER_ERRORS, &down),
        before.get(telemetry::TRANSFER_ERRORS, &down)
    );
    for dir in [&up, &down] {
        let count = format!("{}_count", telemetry::TRANSFER_DURATION);
        let sum = format!("{}_sum", telemetry::TRANSFER_DURATION);
        assert_eq!(d(&count, dir), n, "{dir:?}");
        assert!(d(&sum, dir) > 0.0, "{dir:?}");
        let size_sum = format!("{}_sum", telemetry::TRANSFER_SIZE);
        assert_eq!(d(&size_sum, dir), bytes, "{dir:?}");
        let bucket = format!("{}_bucket", telemetry::TRANSFER_SIZE);
        let mut le_1k = dir.to_vec();
        le_1k.push(("le", "1024"));
        assert_eq!(d(&bucket, &le_1k), 2.0, "0 and 1 byte files, {dir:?}");
        let mut le_inf = dir.to_vec();
        le_inf.push(("le", "+Inf"));
        assert_eq!(d(&bucket, &le_inf), n, "{dir:?}");
        assert_eq!(after.value(telemetry::TRANSFERS_IN_FLIGHT, dir), 0.0);
    }
    let upload_2xx = [("route", "upload"), ("status", "2xx")];
    let upload_4xx = [("route", "upload"), ("status", "4xx")];
    let download_2xx = [("route", "download"), ("status", "2xx")];
    assert_eq!(d(telemetry::HTTP_RESPONSES, &upload_2xx), n);
    assert_eq!(d(telemetry::HTTP_RESPONSES, &upload_4xx), 2.0);
    assert_eq!(d(telemetry::HTTP_RESPONSES, &download_2xx), n);

    // AFT_LOG: one row per transfer, batched, nothing pending.
    assert_eq!(d(telemetry::AFTLOG_ROWS_WRITTEN, &[("method", "Post")]), n);
    assert_eq!(d(telemetry::AFTLOG_ROWS_WRITTEN, &[("method", "Get")]), n);
    let batch_rows = format!("{}_sum", telemetry::AFTLOG_BATCH_ROWS);
    let batches = d(&format!("{}_count", telemetry::AFTLOG_BATCH_ROWS), &[]);
    assert_eq!(d(&batch_rows, &[]), 2.0 * n, "rows in batches");
    assert!((1.0..=2.0 * n).contains(&batches), "{batches} batches");
    assert_eq!(
        d(&format!("{}_count", telemetry::AFTLOG_FLUSH_DURATION), &[]),
        batches,
        "one flush latency per batch"
    );
    assert_eq!(after.value(telemetry::AFTLOG_PENDING_ROWS, &[]), 0.0);

    // SFTP pool: this node's connections, all idle again; one wait sample per checkout.
    assert!(after.delta(&pre_start, telemetry::SFTP_CONNECTIONS_OPENED, &[]) >= 1.0);
    assert!(after.value(telemetry::SFTP_POOL_SESSIONS, &[("state", "idle")]) >= 1.0);
    assert!(
        d(&format!("{}_count", telemetry::SFTP_POOL_WAIT), &[]) >= 2.0 * n,
        "at least one checkout per transfer"
    );

    node.stop().await;
    let rows = aft_rows(&rig.pg.url(), None).await;
    assert_eq!(rows.len(), 2 * sizes.len(), "{rows:?}");
}

/// Thresholds above the current free space raise `XcpMFTExtFsFreeSpaceWarn`: gauge 1, listed
/// in `/status` with since-when, a warn event, and a webhook POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_space_warn_raised_above_free_space() {
    let _serial = SERIAL.lock().await;
    let logged_before = alarm_events("Alarm raised", FREE_SPACE).len();
    let rig = rig();
    let (url, mut hooks) = webhook_receiver().await;
    let mut cfg = config(&rig);
    cfg.alarms.free_space_lower_threshold_percent = 99.9;
    cfg.alarms.free_space_upper_threshold_percent = 100.0;
    cfg.alarms.webhook_url = Some(url);
    let before = chrono::Utc::now();
    let mut node = TestNode::start(cfg).await;

    wait_alarm(&node, FREE_SPACE, true, ALARM_WITHIN).await;
    let st = status(&node).await;
    let entry = status_alarm(&st, FREE_SPACE).expect("listed");
    let since = since_of(&st, FREE_SPACE);
    assert!(since <= chrono::Utc::now(), "{entry}");
    assert_raised_soon_after(&st, FREE_SPACE, before);
    assert!(
        st["file_server"]["free_percent"]
            .as_f64()
            .expect("free_percent")
            < 99.9,
        "{st}"
    );
    assert!(
        entry["detail"].as_str().is_some_and(|d| d.contains("99.9")),
        "the detail gives the figures: {entry}"
    );
    // The other alarms stay clear.
    let s = scrape(&node).await;
    for alarm in [MOUNT, DB_CONNECT, DB_FULL] {
        assert_eq!(s.value(telemetry::ALARM_ACTIVE, &[("alarm", alarm)]), 0.0);
        assert!(status_alarm(&st, alarm).is_none(), "{st}");
    }
    assert_eq!(s.value(telemetry::FS_FREE_LOWER_THRESHOLD, &[]), 99.9);
    assert_eq!(s.value(telemetry::FS_FREE_UPPER_THRESHOLD, &[]), 100.0);
    assert_logged("Alarm raised", FREE_SPACE, "WARN", logged_before);
    let event = next_webhook(&mut hooks, FREE_SPACE, ALARM_WITHIN).await;
    assert_webhook(&event, FREE_SPACE, "raised");
    // Raised once, not on every check.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        alarm_events("Alarm raised", FREE_SPACE).len(),
        logged_before + 1
    );
    assert!(hooks.try_recv().is_err(), "a second webhook for one raise");

    node.stop().await;
}

/// `sshd` stopped raises `XcpMFTExtFsMountError` within a few check intervals (uploads get 503
/// meanwhile); restarted, the alarm clears; each change is logged and POSTed to the webhook.
/// The node directory moved away raises it too, moved back clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_error_follows_sshd_with_webhook() {
    let _serial = SERIAL.lock().await;
    let raised_before = alarm_events("Alarm raised", MOUNT).len();
    let cleared_before = alarm_events("Alarm cleared", MOUNT).len();
    let mut rig = rig();
    let (url, mut hooks) = webhook_receiver().await;
    let mut cfg = config(&rig);
    cfg.alarms.webhook_url = Some(url);
    let mut node = TestNode::start(cfg).await;
    node.upload_ok("before.txt", b"before".to_vec()).await;
    wait_alarm(&node, MOUNT, false, ALARM_WITHIN).await;

    let stopped = chrono::Utc::now();
    rig.sshd.stop();
    wait_alarm(&node, MOUNT, true, ALARM_WITHIN).await;
    let st = status(&node).await;
    assert_raised_soon_after(&st, MOUNT, stopped);
    assert_eq!(st["file_server"]["status"], "error", "{st}");
    let ready = node
        .client
        .get(format!("{}/readyz", node.base_url()))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(ready.status(), 503);
    assert_logged("Alarm raised", MOUNT, "WARN", raised_before);
    assert_webhook(
        &next_webhook(&mut hooks, MOUNT, ALARM_WITHIN).await,
        MOUNT,
        "raised",
    );
    let resp = node.upload("during.txt", b"during".to_vec()).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));

    rig.sshd.restart();
    let took = wait_alarm(&node, MOUNT, false, ALARM_WITHIN).await;
    eprintln!("XcpMFTExtFsMountError cleared {took:?} after sshd restarted");
    assert_logged("Alarm cleared", MOUNT, "INFO", cleared_before);
    assert_webhook(
        &next_webhook(&mut hooks, MOUNT, ALARM_WITHIN).await,
        MOUNT,
        "cleared",
    );
    node.upload_ok("after.txt", b"after".to_vec()).await;

    // The node's directory disappearing (an unmounted volume) is a mount error too.
    let root = node.store_root();
    let moved = root.with_extension("away");
    let cause = chrono::Utc::now();
    std::fs::rename(&root, &moved).expect("moving the node directory away");
    wait_alarm(&node, MOUNT, true, ALARM_WITHIN).await;
    assert_raised_soon_after(&status(&node).await, MOUNT, cause);
    assert_webhook(
        &next_webhook(&mut hooks, MOUNT, ALARM_WITHIN).await,
        MOUNT,
        "raised",
    );
    std::fs::rename(&moved, &root).expect("moving the node directory back");
    wait_alarm(&node, MOUNT, false, ALARM_WITHIN).await;
    assert_webhook(
        &next_webhook(&mut hooks, MOUNT, ALARM_WITHIN).await,
        MOUNT,
        "cleared",
    );
    let s = scrape(&node).await;
    for alarm in ALARMS {
        if alarm != FREE_SPACE {
            assert_eq!(
                s.value(telemetry::ALARM_ACTIVE, &[("alarm", alarm)]),
                0.0,
                "{alarm}"
            );
        }
    }

    node.stop().await;
    rig.sshd.stop();
}

/// PostgreSQL stopped raises `XcpMFTDBConnectError`; uploads meanwhile get 503 with
/// Retry-After and leave no file; a download meanwhile is served and its `Get` row is written
/// exactly once after PostgreSQL is back, when the alarm clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_connect_error_follows_postgres_without_losing_rows() {
    let _serial = SERIAL.lock().await;
    let raised_before = alarm_events("Alarm raised", DB_CONNECT).len();
    let cleared_before = alarm_events("Alarm cleared", DB_CONNECT).len();
    let mut rig = rig();
    let mut node = TestNode::start(config(&rig)).await;
    let body = test_bytes(300_000, 7);
    let up = node.upload_ok("report.pdf", body.clone()).await;
    wait_alarm(&node, DB_CONNECT, false, ALARM_WITHIN).await;
    let files_before = files_under(&node.store_root());
    let before = scrape(&node).await;

    let stopped = chrono::Utc::now();
    rig.pg.stop();
    wait_alarm(&node, DB_CONNECT, true, ALARM_WITHIN).await;
    let st = status(&node).await;
    assert_raised_soon_after(&st, DB_CONNECT, stopped);
    assert_eq!(st["database"]["status"], "error", "{st}");
    assert!(status_alarm(&st, DB_FULL).is_none(), "{st}");
    assert_logged("Alarm raised", DB_CONNECT, "WARN", raised_before);

    // A download is served from the file server; its row waits for the database.
    let resp = node.download(&up.uri, "dave@example.com").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.expect("body").as_ref(), body.as_slice());
    // An upload cannot be logged: 503, Retry-After, nothing left on the file server.
    let resp = tokio::time::timeout(
        Duration::from_secs(60),
        node.upload("lost.txt", b"never logged".to_vec()),
    )
    .await
    .expect("the upload is answered within the commit timeout");
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(files_under(&node.store_root()), files_before);
    let during = scrape(&node).await;
    assert_eq!(during.delta(&before, telemetry::FILES_UPLOADED, &[]), 0.0);
    let db_errors: f64 = ["db_unavailable", "db_timeout"]
        .iter()
        .map(|r| {
            during
                .get(
                    telemetry::TRANSFER_ERRORS,
                    &[("direction", "upload"), ("reason", r)],
                )
                .unwrap_or(0.0)
                - before
                    .get(
                        telemetry::TRANSFER_ERRORS,
                        &[("direction", "upload"), ("reason", r)],
                    )
                    .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(db_errors, 1.0, "{}", during.text);
    assert!(
        during.value(telemetry::AFTLOG_PENDING_ROWS, &[]) >= 1.0,
        "the Get row waits"
    );

    rig.pg.start_again();
    let took = wait_alarm(&node, DB_CONNECT, false, Duration::from_secs(40)).await;
    eprintln!("XcpMFTDBConnectError cleared {took:?} after PostgreSQL restarted");
    assert_logged("Alarm cleared", DB_CONNECT, "INFO", cleared_before);
    let started = Instant::now();
    loop {
        let rows = aft_rows(&rig.pg.url(), Some(&up.resource)).await;
        if rows.iter().any(|r| r.method == "Get") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the Get row did not reach the database: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    node.stop().await;

    let rows = aft_rows(&rig.pg.url(), None).await;
    let gets: Vec<_> = rows.iter().filter(|r| r.method == "Get").collect();
    assert_eq!(gets.len(), 1, "exactly one Get row: {rows:?}");
    assert_eq!(gets[0].jid, "dave@example.com");
    assert_eq!(gets[0].filename, up.resource);
    assert_eq!(gets[0].bytes_transferred, body.len() as i64);
    let posts: Vec<_> = rows.iter().filter(|r| r.method == "Post").collect();
    assert_eq!(
        posts.len(),
        1,
        "only the upload answered 201 is logged: {rows:?}"
    );
    assert_eq!(posts[0].filename, up.resource);
    rig.pg.stop();
}

/// PostgreSQL refusing writes with SQLSTATE 53100 (`disk_full`, raised here by a trigger so no
/// disk has to be filled) raises `XcpMFTDBFullError` while `XcpMFTDBConnectError` stays clear;
/// `SELECT 1` working does not clear it, a successful write does; the download row made
/// meanwhile is written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_full_error_follows_refused_writes() {
    let _serial = SERIAL.lock().await;
    let raised_before = alarm_events("Alarm raised", DB_FULL).len();
    let cleared_before = alarm_events("Alarm cleared", DB_FULL).len();
    let rig = rig();
    let mut node = TestNode::start(config(&rig)).await;
    let up = node.upload_ok("notes.txt", b"some notes".to_vec()).await;
    wait_alarm(&node, DB_FULL, false, ALARM_WITHIN).await;

    let admin = sqlx::PgPool::connect(&rig.pg.url())
        .await
        .expect("connecting to PostgreSQL");
    sqlx::query(
        "CREATE FUNCTION mft_test_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         RAISE EXCEPTION 'could not extend file: No space left on device' \
         USING ERRCODE = 'disk_full'; END $$",
    )
    .execute(&admin)
    .await
    .expect("creating the trigger function");
    sqlx::query(
        "CREATE TRIGGER mft_test_disk_full BEFORE INSERT ON aft_log \
         FOR EACH STATEMENT EXECUTE FUNCTION mft_test_disk_full()",
    )
    .execute(&admin)
    .await
    .expect("creating the trigger");
    let files_before = files_under(&node.store_root());
    let full_since = chrono::Utc::now();

    let resp = tokio::time::timeout(
        Duration::from_secs(60),
        node.upload("refused.txt", b"no room".to_vec()),
    )
    .await
    .expect("the upload is answered within the commit timeout");
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(files_under(&node.store_root()), files_before);
    wait_alarm(&node, DB_FULL, true, ALARM_WITHIN).await;
    let st = status(&node).await;
    assert_raised_soon_after(&st, DB_FULL, full_since);
    assert_eq!(st["database"]["status"], "ok", "reachable, only full: {st}");
    assert!(status_alarm(&st, DB_CONNECT).is_none(), "{st}");
    assert_logged("Alarm raised", DB_FULL, "WARN", raised_before);

    // A download meanwhile; several checks later the alarm holds (pings succeed, writes fail).
    let resp = node.download(&up.uri, "erin@example.com").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.expect("body").as_ref(), b"some notes");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let s = scrape(&node).await;
    assert_eq!(s.value(telemetry::ALARM_ACTIVE, &[("alarm", DB_FULL)]), 1.0);
    assert_eq!(
        s.value(telemetry::ALARM_ACTIVE, &[("alarm", DB_CONNECT)]),
        0.0
    );
    assert!(s.value(telemetry::AFTLOG_PENDING_ROWS, &[]) >= 1.0);

    sqlx::query("DROP TRIGGER mft_test_disk_full ON aft_log")
        .execute(&admin)
        .await
        .expect("dropping the trigger");
    admin.close().await;
    let took = wait_alarm(&node, DB_FULL, false, ALARM_WITHIN).await;
    eprintln!("XcpMFTDBFullError cleared {took:?} after writes were accepted again");
    assert_logged("Alarm cleared", DB_FULL, "INFO", cleared_before);
    node.stop().await;

    let rows = aft_rows(&rig.pg.url(), None).await;
    assert_eq!(
        rows.len(),
        2,
        "the first Post and the Get, nothing else: {rows:?}"
    );
    assert_eq!(rows[0].method, "Post");
    assert_eq!(rows[1].method, "Get");
    assert_eq!(rows[1].jid, "erin@example.com");
    assert_eq!(rows[1].filename, up.resource);
}
