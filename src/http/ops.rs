//! Operational endpoints: `/metrics` (Prometheus text), `/healthz` (liveness), `/readyz`
//! (database and file server reachable) and `/status` (JSON for operators).

use std::time::Duration;

use http::{Response, StatusCode};

use super::{AppState, ResponseBody, full_body, json_response};
use crate::telemetry;

/// How long a readiness or status probe waits for each backend.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn metrics(state: &AppState) -> Response<ResponseBody> {
    let mut resp = Response::new(full_body(state.metrics.render()));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

pub fn healthz() -> Response<ResponseBody> {
    json_response(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

/// Probes the database and the file server; `Err` holds a safe description.
async fn probe_database(state: &AppState) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, state.aftlog.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

pub async fn readyz(state: &AppState) -> Response<ResponseBody> {
    let (db, fs) = tokio::join!(
        probe_database(state),
        tokio::time::timeout(PROBE_TIMEOUT, state.store.space())
    );
    let fs_ok = matches!(fs, Ok(Ok(_)));
    let ready = db.is_ok() && fs_ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        &serde_json::json!({
            "ready": ready,
            "database": if db.is_ok() { "ok" } else { "unavailable" },
            "file_server": if fs_ok { "ok" } else { "unavailable" },
        }),
    )
}

pub async fn status(state: &AppState) -> Response<ResponseBody> {
    let (db, fs) = tokio::join!(
        probe_database(state),
        tokio::time::timeout(PROBE_TIMEOUT, state.store.space())
    );
    let file_server = match fs {
        Ok(Ok(space)) => {
            metrics::gauge!(telemetry::FS_FREE_BYTES).set(space.free_bytes as f64);
            metrics::gauge!(telemetry::FS_TOTAL_BYTES).set(space.total_bytes as f64);
            serde_json::json!({
                "status": "ok",
                "name": state.store.server_name(),
                "free_bytes": space.free_bytes,
                "total_bytes": space.total_bytes,
                "free_percent": (space.free_percent() * 100.0).round() / 100.0,
            })
        }
        Ok(Err(e)) => serde_json::json!({
            "status": "error",
            "name": state.store.server_name(),
            "error": e.to_string(),
        }),
        Err(_) => serde_json::json!({
            "status": "error",
            "name": state.store.server_name(),
            "error": "timed out",
        }),
    };
    let database = match db {
        Ok(()) => serde_json::json!({ "status": "ok", "backend": state.aftlog.backend_name() }),
        Err(e) => serde_json::json!({
            "status": "error",
            "backend": state.aftlog.backend_name(),
            "error": e,
        }),
    };
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "node": state.config.node.id,
            "version": env!("CARGO_PKG_VERSION"),
            "transfer_mode": format!("{:?}", state.config.transfer.mode),
            "max_file_size": state.config.transfer.effective_max_file_size(),
            "database": database,
            "file_server": file_server,
            "alarms": state.alarms.active(),
        }),
    )
}
