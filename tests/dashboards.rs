//! The Grafana dashboard and the Prometheus rules in `dashboards/` use only metrics the node
//! emits (`mft::telemetry::ALL_METRICS`), and promtool accepts them (syntax, rule unit tests, and
//! the PromQL of every dashboard query). No network.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use mft::telemetry;

const PROMTOOL_MISSING: &str = "promtool missing: apt-get install prometheus";

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards")
}

fn read(name: &str) -> String {
    let path = dashboards_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn load_dashboard() -> serde_json::Value {
    serde_json::from_str(&read("mft-node.json")).expect("dashboards/mft-node.json is valid JSON")
}

const HISTOGRAMS: &[&str] = &[
    telemetry::TRANSFER_DURATION,
    telemetry::TRANSFER_SIZE,
    telemetry::SFTP_POOL_WAIT,
    telemetry::AFTLOG_BATCH_ROWS,
    telemetry::AFTLOG_FLUSH_DURATION,
];

/// Every `mft_…` metric name in `text`. A name is a maximal run of PromQL name characters
/// (`[A-Za-z0-9_:]`) starting with `mft_`; runs holding `:` are recording-rule names
/// (`level:metric:operation`), not metrics the node emits, and are skipped.
fn metric_names(text: &str) -> BTreeSet<String> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut token = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if is_name_char(c) {
            token.push(c);
            continue;
        }
        if token.starts_with("mft_") && !token.contains(':') {
            names.insert(std::mem::take(&mut token));
        }
        token.clear();
    }
    names
}

/// The metric `name` refers to: itself, or for `_bucket`/`_sum`/`_count` of a histogram the
/// histogram. Err with an explanation when the node does not emit it.
fn check_metric(name: &str) -> Result<(), String> {
    if telemetry::ALL_METRICS.contains(&name) {
        return Ok(());
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if HISTOGRAMS.contains(&base) {
                return Ok(());
            }
            if telemetry::ALL_METRICS.contains(&base) {
                return Err(format!(
                    "{name}: {base} is not a histogram, it has no {suffix}"
                ));
            }
        }
    }
    Err(format!("{name}: not in mft::telemetry::ALL_METRICS"))
}

fn assert_known(file: &str, names: &BTreeSet<String>) {
    let bad: Vec<String> = names.iter().filter_map(|n| check_metric(n).err()).collect();
    assert!(
        bad.is_empty(),
        "{file} uses metrics the node does not emit:\n  {}",
        bad.join("\n  ")
    );
}

/// Every PromQL query string in the dashboard: targets' and annotations' `expr`, and the
/// template variables' queries.
fn dashboard_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => dashboard_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

fn all_dashboard_queries() -> Vec<String> {
    let mut queries = Vec::new();
    dashboard_queries(&load_dashboard(), &mut queries);
    // The datasource variable's query is the plugin type, not PromQL.
    queries.retain(|q| q != "prometheus");
    queries
}

#[test]
fn dashboard_uses_only_emitted_metrics() {
    let queries = all_dashboard_queries();
    assert!(
        queries.len() >= 20,
        "expected the dashboard's queries, found {}",
        queries.len()
    );
    let names = metric_names(&queries.join("\n"));
    assert_known("dashboards/mft-node.json", &names);
    // The headline metrics are all on the dashboard.
    for want in [
        telemetry::BYTES_UPLOADED,
        telemetry::BYTES_DOWNLOADED,
        telemetry::FILES_UPLOADED,
        telemetry::FILES_DOWNLOADED,
        telemetry::TRANSFER_ERRORS,
        telemetry::TRANSFERS_IN_FLIGHT,
        telemetry::SFTP_POOL_SESSIONS,
        telemetry::AFTLOG_PENDING_ROWS,
        telemetry::AFTLOG_FLUSH_ERRORS,
        telemetry::FS_FREE_BYTES,
        telemetry::FS_TOTAL_BYTES,
        telemetry::FS_FREE_LOWER_THRESHOLD,
        telemetry::FS_FREE_UPPER_THRESHOLD,
        telemetry::ALARM_ACTIVE,
        telemetry::BUILD_INFO,
        telemetry::HTTP_RESPONSES,
    ] {
        assert!(names.contains(want), "dashboard does not show {want}");
    }
    for hist in [telemetry::TRANSFER_DURATION, telemetry::SFTP_POOL_WAIT] {
        let bucket = format!("{hist}_bucket");
        assert!(
            names.contains(&bucket),
            "dashboard has no quantiles from {bucket}"
        );
    }
}

#[test]
fn dashboard_is_importable() {
    let d = load_dashboard();
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    assert!(d["__inputs"].is_array(), "__inputs missing");
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("template variable {name} missing"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    let instance = var("instance");
    assert_eq!(
        instance["definition"],
        "label_values(mft_build_info, instance)"
    );
    assert_eq!(instance["multi"], true);
    assert_eq!(instance["includeAll"], true);

    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {:?}",
            p["title"]
        );
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "panel {:?}",
                p["title"]
            );
            let expr = t["expr"].as_str().expect("expr");
            if expr.contains("mft_") {
                assert!(
                    expr.contains(r#"instance=~"$instance""#),
                    "panel {:?}: query ignores $instance: {expr}",
                    p["title"]
                );
            }
        }
    }
}

#[test]
fn alert_rules_use_only_emitted_metrics() {
    let rules = read("alerts.rules.yml");
    let names = metric_names(&rules);
    assert!(!names.is_empty());
    assert_known("dashboards/alerts.rules.yml", &names);
    for alarm in [
        "XcpMFTExtFsFreeSpaceWarn",
        "XcpMFTExtFsMountError",
        "XcpMFTDBConnectError",
        "XcpMFTDBFullError",
    ] {
        assert!(
            rules.contains(&format!("alert: {alarm}"))
                && rules.contains(&format!(r#"mft_alarm_active{{alarm="{alarm}"}} == 1"#)),
            "alerts.rules.yml has no rule for alarm {alarm}"
        );
    }
    // The tests' synthetic series must be real metrics too.
    assert_known(
        "dashboards/alerts.test.yml",
        &metric_names(&read("alerts.test.yml")),
    );
}

#[test]
fn metric_name_scan() {
    let names = metric_names(
        "sum(rate(mft_transfer_duration_seconds_bucket{x=\"1\"}[5m])) \
         instance_direction:mft_transfer_errors:increase10m mft_build_info",
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        names,
        ["mft_build_info", "mft_transfer_duration_seconds_bucket"]
    );
    assert!(check_metric("mft_transfer_duration_seconds_bucket").is_ok());
    assert!(check_metric("mft_files_uploaded_total_sum").is_err());
    assert!(check_metric("mft_no_such_metric").is_err());
}

fn promtool(args: &[&str], dir: &Path) {
    let out = match Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!("{PROMTOOL_MISSING}"),
        Err(e) => panic!("running promtool: {e} ({PROMTOOL_MISSING})"),
    };
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_check_rules() {
    promtool(&["check", "rules", "alerts.rules.yml"], &dashboards_dir());
}

#[test]
fn promtool_test_rules() {
    promtool(&["test", "rules", "alerts.test.yml"], &dashboards_dir());
}

#[test]
fn promtool_check_config() {
    promtool(&["check", "config", "prometheus.yml"], &dashboards_dir());
}

/// Every dashboard query is valid PromQL: wrap them as recording rules (Grafana's variables
/// replaced by plain values) and let promtool parse them.
#[test]
fn dashboard_queries_parse() {
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in all_dashboard_queries().iter().enumerate() {
        if q.starts_with("label_values(") {
            continue; // Grafana variable query, not PromQL
        }
        let q = q
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*");
        let quoted = serde_json::to_string(&q).unwrap(); // a JSON string is a YAML string
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard.rules.yml"), rules).unwrap();
    promtool(&["check", "rules", "dashboard.rules.yml"], dir.path());
}
