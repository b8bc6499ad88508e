//! Alarms (SPEC section 6): their state, raise and clear, and the background checks feeding them.
//!
//! Every raise and clear is a structured `tracing` event (warn on raise, info on clear), sets
//! `mft_alarm_active{alarm}` and, when `alarms.webhook_url` is configured, is POSTed as JSON
//! by a background task that retries with backoff and never blocks a transfer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::aftlog::{AftLog, DbCondition};
use crate::config::AlarmsConfig;
use crate::store::FileStore;
use crate::telemetry;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Alarm {
    XcpMFTExtFsFreeSpaceWarn,
    XcpMFTExtFsMountError,
    XcpMFTDBConnectError,
    XcpMFTDBFullError,
}

impl Alarm {
    pub const ALL: [Alarm; 4] = [
        Alarm::XcpMFTExtFsFreeSpaceWarn,
        Alarm::XcpMFTExtFsMountError,
        Alarm::XcpMFTDBConnectError,
        Alarm::XcpMFTDBFullError,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Alarm::XcpMFTExtFsFreeSpaceWarn => "XcpMFTExtFsFreeSpaceWarn",
            Alarm::XcpMFTExtFsMountError => "XcpMFTExtFsMountError",
            Alarm::XcpMFTDBConnectError => "XcpMFTDBConnectError",
            Alarm::XcpMFTDBFullError => "XcpMFTDBFullError",
        }
    }
}

/// One active alarm, as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveAlarm {
    pub alarm: &'static str,
    pub since: DateTime<Utc>,
    pub detail: String,
}

/// The JSON body POSTed to `alarms.webhook_url`.
#[derive(Debug, Clone, Serialize)]
struct WebhookEvent {
    /// `node.id`, so one receiver can serve many nodes.
    node: String,
    alarm: &'static str,
    /// `raised` or `cleared`.
    state: &'static str,
    at: DateTime<Utc>,
    detail: String,
}

/// The node's alarm board.
pub struct Alarms {
    node: String,
    /// A std mutex: held only to read or flip an entry, never across an await.
    active: Mutex<BTreeMap<Alarm, ActiveAlarm>>,
    /// Queue to the webhook task; bounded so a dead receiver cannot grow memory.
    webhook: Option<mpsc::Sender<WebhookEvent>>,
}

/// Events waiting for the webhook receiver; beyond this, new ones are dropped (and logged).
const WEBHOOK_QUEUE: usize = 1024;
/// Delivery attempts per webhook event before it is given up.
const WEBHOOK_ATTEMPTS: u32 = 6;
/// A file server or database check that takes longer than this counts as a failure.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

impl Alarms {
    /// A board with every alarm clear (and exported as 0) for node `node`.
    pub fn new(node: &str, config: &AlarmsConfig) -> Arc<Alarms> {
        for alarm in Alarm::ALL {
            metrics::gauge!(telemetry::ALARM_ACTIVE, "alarm" => alarm.name()).set(0.0);
        }
        metrics::gauge!(telemetry::FS_FREE_LOWER_THRESHOLD)
            .set(config.free_space_lower_threshold_percent);
        metrics::gauge!(telemetry::FS_FREE_UPPER_THRESHOLD)
            .set(config.free_space_upper_threshold_percent);
        let webhook = config.webhook_url.clone().map(|url| {
            if let Err(e) = webhook_target(&url) {
                tracing::error!(url = %url, error = %e, "alarms.webhook_url cannot be used; alarm events will not be delivered");
            }
            let (tx, rx) = mpsc::channel(WEBHOOK_QUEUE);
            tokio::spawn(deliver_webhooks(url, rx));
            tx
        });
        Arc::new(Alarms {
            node: node.to_string(),
            active: Mutex::new(BTreeMap::new()),
            webhook,
        })
    }

    pub fn is_active(&self, alarm: Alarm) -> bool {
        self.lock().contains_key(&alarm)
    }

    pub fn active(&self) -> Vec<ActiveAlarm> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Alarm, ActiveAlarm>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Raises `alarm` unless it is already raised.
    pub fn raise(&self, alarm: Alarm, detail: String) {
        let now = Utc::now();
        {
            let mut active = self.lock();
            if active.contains_key(&alarm) {
                return;
            }
            active.insert(
                alarm,
                ActiveAlarm {
                    alarm: alarm.name(),
                    since: now,
                    detail: detail.clone(),
                },
            );
        }
        metrics::gauge!(telemetry::ALARM_ACTIVE, "alarm" => alarm.name()).set(1.0);
        tracing::warn!(alarm = alarm.name(), detail = %detail, "Alarm raised");
        self.notify(alarm, "raised", now, detail);
    }

    /// Clears `alarm` if it is raised.
    pub fn clear(&self, alarm: Alarm, detail: String) {
        if self.lock().remove(&alarm).is_none() {
            return;
        }
        metrics::gauge!(telemetry::ALARM_ACTIVE, "alarm" => alarm.name()).set(0.0);
        tracing::info!(alarm = alarm.name(), detail = %detail, "Alarm cleared");
        self.notify(alarm, "cleared", Utc::now(), detail);
    }

    fn notify(&self, alarm: Alarm, state: &'static str, at: DateTime<Utc>, detail: String) {
        if let Some(tx) = &self.webhook {
            let event = WebhookEvent {
                node: self.node.clone(),
                alarm: alarm.name(),
                state,
                at,
                detail,
            };
            if tx.try_send(event).is_err() {
                tracing::warn!(
                    alarm = alarm.name(),
                    "Alarm webhook queue full; event dropped"
                );
            }
        }
    }

    /// Applies one free-space reading with hysteresis: raise at or below `lower`, clear at or
    /// above `upper`, hold in between.
    pub fn observe_free_space(&self, free_percent: f64, lower: f64, upper: f64) {
        let detail = format!(
            "file server free space {free_percent:.2} % (raise at <= {lower} %, clear at >= {upper} %)"
        );
        if free_percent <= lower {
            self.raise(Alarm::XcpMFTExtFsFreeSpaceWarn, detail);
        } else if free_percent >= upper {
            self.clear(Alarm::XcpMFTExtFsFreeSpaceWarn, detail);
        }
    }
}

/// Polls the file server's free space and reachability and the database every
/// `check_interval_s` (the first time at once, so the gauges exist from start-up), and follows
/// the database writer's condition between polls, raising and clearing alarms. Runs until the
/// node aborts it.
pub async fn run_checks(
    alarms: Arc<Alarms>,
    config: AlarmsConfig,
    store: Arc<dyn FileStore>,
    aftlog: AftLog,
) {
    let mut db_condition = aftlog.condition();
    let initial = db_condition.borrow_and_update().clone();
    apply_db_condition(&alarms, &initial);
    // The first tick completes immediately.
    let mut tick = tokio::time::interval(Duration::from_secs(config.check_interval_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // Concurrently, so a hanging file server does not delay the database check.
                tokio::join!(
                    check_file_server(&alarms, &config, store.as_ref()),
                    check_database(&alarms, &aftlog),
                );
            }
            changed = db_condition.changed() => {
                if changed.is_err() {
                    return;
                }
                let condition = db_condition.borrow_and_update().clone();
                apply_db_condition(&alarms, &condition);
            }
        }
    }
}

/// `SELECT 1` against the database: raises or clears `XcpMFTDBConnectError`. (`XcpMFTDBFullError`
/// clears only when a write succeeds: a database that is full still answers `SELECT 1`.)
async fn check_database(alarms: &Alarms, aftlog: &AftLog) {
    match tokio::time::timeout(CHECK_TIMEOUT, aftlog.ping()).await {
        Ok(Ok(())) => alarms.clear(Alarm::XcpMFTDBConnectError, "database reachable".into()),
        Ok(Err(e)) => alarms.raise(
            Alarm::XcpMFTDBConnectError,
            format!("database unreachable: {e}"),
        ),
        Err(_) => alarms.raise(
            Alarm::XcpMFTDBConnectError,
            format!(
                "database did not answer within {} s",
                CHECK_TIMEOUT.as_secs()
            ),
        ),
    }
}

fn apply_db_condition(alarms: &Alarms, condition: &DbCondition) {
    match condition {
        DbCondition::Ok => {
            alarms.clear(
                Alarm::XcpMFTDBConnectError,
                "database writes succeed".into(),
            );
            alarms.clear(Alarm::XcpMFTDBFullError, "database writes succeed".into());
        }
        DbCondition::Unreachable(msg) => {
            alarms.raise(
                Alarm::XcpMFTDBConnectError,
                format!("database unreachable: {msg}"),
            );
        }
        DbCondition::Full(msg) => {
            alarms.raise(Alarm::XcpMFTDBFullError, format!("database full: {msg}"));
        }
    }
}

/// Free space (`statvfs@openssh.com`, or `statvfs(3)` for the local store): updates the free and
/// total gauges and `XcpMFTExtFsFreeSpaceWarn`; a connection, authentication or host key
/// failure, a missing node directory, or no answer in time raises `XcpMFTExtFsMountError`.
async fn check_file_server(alarms: &Alarms, config: &AlarmsConfig, store: &dyn FileStore) {
    match tokio::time::timeout(CHECK_TIMEOUT, store.space()).await {
        Ok(Ok(space)) => {
            alarms.clear(Alarm::XcpMFTExtFsMountError, "file server reachable".into());
            metrics::gauge!(telemetry::FS_FREE_BYTES).set(space.free_bytes as f64);
            metrics::gauge!(telemetry::FS_TOTAL_BYTES).set(space.total_bytes as f64);
            alarms.observe_free_space(
                space.free_percent(),
                config.free_space_lower_threshold_percent,
                config.free_space_upper_threshold_percent,
            );
        }
        // Unreachable, refused, or the node's directory is gone (an unmounted volume): the
        // file server cannot be used.
        Ok(Err(e)) if e.is_connectivity() || e.is_not_found() => {
            alarms.raise(Alarm::XcpMFTExtFsMountError, e.to_string());
        }
        // Reachable but the free space is unknown (e.g. no statvfs@openssh.com): say so, and
        // leave the alarms as they are.
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Free space check failed");
        }
        Err(_) => alarms.raise(
            Alarm::XcpMFTExtFsMountError,
            format!(
                "file server did not answer the free space check within {} s",
                CHECK_TIMEOUT.as_secs()
            ),
        ),
    }
}

/// Delivers queued events in order, each retried with exponential backoff (0.5 s doubling,
/// at most 30 s apart) up to [`WEBHOOK_ATTEMPTS`] times.
async fn deliver_webhooks(url: String, mut rx: mpsc::Receiver<WebhookEvent>) {
    while let Some(event) = rx.recv().await {
        let body = match serde_json::to_vec(&event) {
            Ok(b) => b,
            Err(_) => continue,
        };
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=WEBHOOK_ATTEMPTS {
            match post_json(&url, &body).await {
                Ok(()) => break,
                Err(e) if attempt == WEBHOOK_ATTEMPTS => {
                    tracing::error!(attempt, error = %e, alarm = event.alarm, state = event.state, "Alarm webhook failed; event given up");
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %e, alarm = event.alarm, state = event.state, "Alarm webhook failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// Where a webhook URL points: `(host, port, path and query)`. Only `http://` is supported.
fn webhook_target(url: &str) -> Result<(String, u16, String), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad webhook URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// webhook URLs are supported".into());
    }
    let host = uri.host().ok_or("webhook URL has no host")?;
    // `[::1]` in a URL is `::1` to connect to.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".to_string());
    Ok((host, port, path))
}

/// A minimal HTTP/1.1 POST over plain TCP (webhook receivers are internal services).
async fn post_json(url: &str, body: &[u8]) -> Result<(), String> {
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    let (host, port, path) = webhook_target(url)?;
    let authority = http::Uri::try_from(url)
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().to_string()))
        .unwrap_or_else(|| host.clone());
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::copy_from_slice(body)))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .map_err(|_| "request timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("webhook answered {}", resp.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn free_space_hysteresis() {
        let alarms = Alarms::new("node1", &AlarmsConfig::default());
        alarms.observe_free_space(50.0, 10.0, 15.0);
        assert!(!alarms.is_active(Alarm::XcpMFTExtFsFreeSpaceWarn));
        alarms.observe_free_space(10.0, 10.0, 15.0);
        assert!(alarms.is_active(Alarm::XcpMFTExtFsFreeSpaceWarn));
        alarms.observe_free_space(14.9, 10.0, 15.0);
        assert!(
            alarms.is_active(Alarm::XcpMFTExtFsFreeSpaceWarn),
            "held between thresholds"
        );
        alarms.observe_free_space(15.0, 10.0, 15.0);
        assert!(!alarms.is_active(Alarm::XcpMFTExtFsFreeSpaceWarn));
    }

    #[test]
    fn webhook_targets() {
        assert_eq!(
            webhook_target("http://127.0.0.1:9000/hooks/mft?x=1").unwrap(),
            ("127.0.0.1".to_string(), 9000, "/hooks/mft?x=1".to_string())
        );
        assert_eq!(
            webhook_target("http://alerts.internal").unwrap(),
            ("alerts.internal".to_string(), 80, "/".to_string())
        );
        assert_eq!(webhook_target("http://[::1]:81/").unwrap().0, "::1");
        assert!(webhook_target("https://alerts.internal/").is_err());
        assert!(webhook_target("not a url").is_err());
    }
}
