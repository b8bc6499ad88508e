//! Telemetry: the names of every metric the node emits, the Prometheus recorder, and logging.
//!
//! Metric names live here so that code, dashboards and alert rules agree on one list
//! ([`ALL_METRICS`]). Units are Prometheus base units (bytes, seconds); no label carries a user.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const FILES_UPLOADED: &str = "mft_files_uploaded_total";
pub const FILES_DOWNLOADED: &str = "mft_files_downloaded_total";
pub const BYTES_UPLOADED: &str = "mft_bytes_uploaded_total";
pub const BYTES_DOWNLOADED: &str = "mft_bytes_downloaded_total";
/// Labels: `direction` (upload|download), `reason`.
pub const TRANSFER_ERRORS: &str = "mft_transfer_errors_total";
/// Histogram, label `direction`.
pub const TRANSFER_DURATION: &str = "mft_transfer_duration_seconds";
/// Histogram, label `direction`.
pub const TRANSFER_SIZE: &str = "mft_transfer_size_bytes";
/// Gauge, label `direction`.
pub const TRANSFERS_IN_FLIGHT: &str = "mft_transfers_in_flight";
/// Gauge, label `state` (idle|busy).
pub const SFTP_POOL_SESSIONS: &str = "mft_sftp_pool_sessions";
/// Histogram: time spent waiting for a pooled SFTP session.
pub const SFTP_POOL_WAIT: &str = "mft_sftp_pool_wait_seconds";
/// Counter: SSH connections opened (reconnects show as a rising rate).
pub const SFTP_CONNECTIONS_OPENED: &str = "mft_sftp_connections_opened_total";
/// Histogram: rows per AFT_LOG INSERT.
pub const AFTLOG_BATCH_ROWS: &str = "mft_aftlog_batch_rows";
/// Histogram: seconds per AFT_LOG batch flush.
pub const AFTLOG_FLUSH_DURATION: &str = "mft_aftlog_flush_duration_seconds";
/// Gauge: rows waiting to be written.
pub const AFTLOG_PENDING_ROWS: &str = "mft_aftlog_pending_rows";
/// Counter: rows committed, label `method` (Post|Get).
pub const AFTLOG_ROWS_WRITTEN: &str = "mft_aftlog_rows_written_total";
/// Counter: failed flush attempts (retried).
pub const AFTLOG_FLUSH_ERRORS: &str = "mft_aftlog_flush_errors_total";
pub const FS_FREE_BYTES: &str = "mft_file_server_free_bytes";
pub const FS_TOTAL_BYTES: &str = "mft_file_server_total_bytes";
/// Gauges with the configured free-space thresholds, in percent, for dashboards.
pub const FS_FREE_LOWER_THRESHOLD: &str = "mft_file_server_free_lower_threshold_percent";
pub const FS_FREE_UPPER_THRESHOLD: &str = "mft_file_server_free_upper_threshold_percent";
/// Gauge, label `alarm`: 1 while raised, else 0.
pub const ALARM_ACTIVE: &str = "mft_alarm_active";
/// Gauge 1, labels `version`.
pub const BUILD_INFO: &str = "mft_build_info";
/// Counter: HTTP responses, labels `route`, `status` class.
pub const HTTP_RESPONSES: &str = "mft_http_responses_total";

/// Every metric name the node emits.
pub const ALL_METRICS: &[&str] = &[
    FILES_UPLOADED,
    FILES_DOWNLOADED,
    BYTES_UPLOADED,
    BYTES_DOWNLOADED,
    TRANSFER_ERRORS,
    TRANSFER_DURATION,
    TRANSFER_SIZE,
    TRANSFERS_IN_FLIGHT,
    SFTP_POOL_SESSIONS,
    SFTP_POOL_WAIT,
    SFTP_CONNECTIONS_OPENED,
    AFTLOG_BATCH_ROWS,
    AFTLOG_FLUSH_DURATION,
    AFTLOG_PENDING_ROWS,
    AFTLOG_ROWS_WRITTEN,
    AFTLOG_FLUSH_ERRORS,
    FS_FREE_BYTES,
    FS_TOTAL_BYTES,
    FS_FREE_LOWER_THRESHOLD,
    FS_FREE_UPPER_THRESHOLD,
    ALARM_ACTIVE,
    BUILD_INFO,
    HTTP_RESPONSES,
];

const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
const SIZE_BUCKETS: &[f64] = &[
    1024.0,
    16384.0,
    102400.0,
    1048576.0,
    10485760.0,
    104857600.0,
    1073741824.0,
    4294967296.0,
];
const FAST_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
const ROW_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn install_recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(TRANSFER_DURATION.into()), DURATION_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(TRANSFER_SIZE.into()), SIZE_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(SFTP_POOL_WAIT.into()), FAST_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(AFTLOG_FLUSH_DURATION.into()),
                        FAST_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(AFTLOG_BATCH_ROWS.into()), ROW_BUCKETS)
                })
                .expect("bucket lists are non-empty constants");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // A recorder may already be installed (tests running several nodes in one
            // process); the first one wins and every node renders from it.
            let _ = metrics::set_global_recorder(recorder);
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawning the metrics upkeep thread");
            describe_all();
            register_at_zero();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

/// `# HELP` lines for the exposition: what each metric counts, in which unit.
fn describe_all() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        FILES_UPLOADED,
        Unit::Count,
        "Files stored and logged in AFT_LOG (answered 201)"
    );
    describe_counter!(
        FILES_DOWNLOADED,
        Unit::Count,
        "Downloads served to the last byte"
    );
    describe_counter!(
        BYTES_UPLOADED,
        Unit::Bytes,
        "Bytes of files stored and logged (answered 201)"
    );
    describe_counter!(
        BYTES_DOWNLOADED,
        Unit::Bytes,
        "Bytes sent to downloaders, interrupted downloads included"
    );
    describe_counter!(
        TRANSFER_ERRORS,
        Unit::Count,
        "Refused or failed transfers, by direction and reason"
    );
    describe_histogram!(
        TRANSFER_DURATION,
        Unit::Seconds,
        "Duration of completed transfers, by direction"
    );
    describe_histogram!(
        TRANSFER_SIZE,
        Unit::Bytes,
        "Size of completed transfers, by direction"
    );
    describe_gauge!(
        TRANSFERS_IN_FLIGHT,
        Unit::Count,
        "Transfers in progress, by direction"
    );
    describe_gauge!(
        SFTP_POOL_SESSIONS,
        Unit::Count,
        "Pooled SFTP sessions to the file server, by state (idle, busy)"
    );
    describe_histogram!(
        SFTP_POOL_WAIT,
        Unit::Seconds,
        "Time waited for a pooled SFTP session (connecting included)"
    );
    describe_counter!(
        SFTP_CONNECTIONS_OPENED,
        Unit::Count,
        "SSH connections opened to the file server"
    );
    describe_histogram!(
        AFTLOG_BATCH_ROWS,
        Unit::Count,
        "Rows per committed AFT_LOG batch"
    );
    describe_histogram!(
        AFTLOG_FLUSH_DURATION,
        Unit::Seconds,
        "Duration of committed AFT_LOG batch writes"
    );
    describe_gauge!(
        AFTLOG_PENDING_ROWS,
        Unit::Count,
        "AFT_LOG rows accepted but not yet committed"
    );
    describe_counter!(
        AFTLOG_ROWS_WRITTEN,
        Unit::Count,
        "AFT_LOG rows committed, by method (Post, Get)"
    );
    describe_counter!(
        AFTLOG_FLUSH_ERRORS,
        Unit::Count,
        "Failed AFT_LOG batch attempts (retried)"
    );
    describe_gauge!(
        FS_FREE_BYTES,
        Unit::Bytes,
        "Free space available to the node on the file server"
    );
    describe_gauge!(
        FS_TOTAL_BYTES,
        Unit::Bytes,
        "Size of the file server's file system"
    );
    describe_gauge!(
        FS_FREE_LOWER_THRESHOLD,
        Unit::Percent,
        "Free space at or below which XcpMFTExtFsFreeSpaceWarn is raised"
    );
    describe_gauge!(
        FS_FREE_UPPER_THRESHOLD,
        Unit::Percent,
        "Free space at or above which XcpMFTExtFsFreeSpaceWarn is cleared"
    );
    describe_gauge!(ALARM_ACTIVE, "1 while the alarm is raised, else 0");
    describe_gauge!(BUILD_INFO, "Always 1; the label carries the node version");
    describe_counter!(
        HTTP_RESPONSES,
        Unit::Count,
        "HTTP responses, by route and status class"
    );
}

/// Exports the unlabelled counters and the gauges every node has at 0 from start-up, so the
/// first transfer shows in `increase()` and panels show 0 rather than "no data".
fn register_at_zero() {
    for counter in [
        FILES_UPLOADED,
        FILES_DOWNLOADED,
        BYTES_UPLOADED,
        BYTES_DOWNLOADED,
        AFTLOG_FLUSH_ERRORS,
    ] {
        metrics::counter!(counter).increment(0);
    }
    for method in ["Post", "Get"] {
        metrics::counter!(AFTLOG_ROWS_WRITTEN, "method" => method).increment(0);
    }
    for direction in ["upload", "download"] {
        metrics::gauge!(TRANSFERS_IN_FLIGHT, "direction" => direction).increment(0.0);
    }
    metrics::gauge!(AFTLOG_PENDING_ROWS).increment(0.0);
}

/// Sets up `tracing` output: human-readable by default, JSON with `MFT_LOG_FORMAT=json`;
/// filter from `RUST_LOG` (default `info`).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let json = std::env::var("MFT_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
