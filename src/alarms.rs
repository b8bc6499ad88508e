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

#[derive(Debug, Clone, Serialize)]
struct WebhookEvent {
    alarm: &'static str,
    state: &'static str,
    at: DateTime<Utc>,
    detail: String,
}

/// The node's alarm board.
pub struct Alarms {
    active: Mutex<BTreeMap<Alarm, ActiveAlarm>>,
    webhook: Option<mpsc::Sender<WebhookEvent>>,
}

impl Alarms {
    /// A board with every alarm clear (and exported as 0).
    pub fn new(config: &AlarmsConfig) -> Arc<Alarms> {
        for alarm in Alarm::ALL {
            metrics::gauge!(telemetry::ALARM_ACTIVE, "alarm" => alarm.name()).set(0.0);
        }
        metrics::gauge!(telemetry::FS_FREE_LOWER_THRESHOLD)
            .set(config.free_space_lower_threshold_percent);
        metrics::gauge!(telemetry::FS_FREE_UPPER_THRESHOLD)
            .set(config.free_space_upper_threshold_percent);
        let webhook = config.webhook_url.clone().map(|url| {
            let (tx, rx) = mpsc::channel(1024);
            tokio::spawn(deliver_webhooks(url, rx));
            tx
        });
        Arc::new(Alarms {
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

/// Polls the file server's free space and reachability every `check_interval_s`, and follows
/// the database writer's condition, raising and clearing alarms. Runs until the node stops.
pub async fn run_checks(
    alarms: Arc<Alarms>,
    config: AlarmsConfig,
    store: Arc<dyn FileStore>,
    aftlog: AftLog,
) {
    let mut db_condition = aftlog.condition();
    let mut tick = tokio::time::interval(Duration::from_secs(config.check_interval_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                check_file_server(&alarms, &config, store.as_ref()).await;
                match aftlog.ping().await {
                    Err(e) => alarms.raise(
                        Alarm::XcpMFTDBConnectError,
                        format!("database unreachable: {e}"),
                    ),
                    Ok(()) => alarms.clear(Alarm::XcpMFTDBConnectError, "database reachable".into()),
                }
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

async fn check_file_server(alarms: &Alarms, config: &AlarmsConfig, store: &dyn FileStore) {
    match store.space().await {
        Ok(space) => {
            alarms.clear(Alarm::XcpMFTExtFsMountError, "file server reachable".into());
            metrics::gauge!(telemetry::FS_FREE_BYTES).set(space.free_bytes as f64);
            metrics::gauge!(telemetry::FS_TOTAL_BYTES).set(space.total_bytes as f64);
            alarms.observe_free_space(
                space.free_percent(),
                config.free_space_lower_threshold_percent,
                config.free_space_upper_threshold_percent,
            );
        }
        Err(e) if e.is_connectivity() => {
            alarms.raise(Alarm::XcpMFTExtFsMountError, e.to_string());
        }
        Err(e) => {
            tracing::warn!(error = %e, "Free space check failed");
        }
    }
}

async fn deliver_webhooks(url: String, mut rx: mpsc::Receiver<WebhookEvent>) {
    while let Some(event) = rx.recv().await {
        let body = match serde_json::to_vec(&event) {
            Ok(b) => b,
            Err(_) => continue,
        };
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=6 {
            match post_json(&url, &body).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(attempt, error = %e, alarm = event.alarm, "Alarm webhook failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// A minimal HTTP/1.1 POST over plain TCP (webhook receivers are internal services).
async fn post_json(url: &str, body: &[u8]) -> Result<(), String> {
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    let uri: http::Uri = url.parse().map_err(|e| format!("bad webhook URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// webhook URLs are supported".into());
    }
    let host = uri.host().ok_or("webhook URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
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
    let req = http::Request::post(uri.path())
        .header(http::header::HOST, host)
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
        let alarms = Alarms::new(&AlarmsConfig::default());
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
}
