//! The HTTP front (SPEC section 3): listener, graceful drain, and routing to the handlers.
//!
//! One listener serves uploads ([`upload`]), downloads ([`download`]) and the operational
//! endpoints ([`ops`]: `/metrics`, `/healthz`, `/readyz`, `/status`). Errors become
//! [`errors::ApiError`] responses with a stable code and a safe message.

pub mod download;
pub mod errors;
pub mod ops;
pub mod upload;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::aftlog::AftLog;
use crate::alarms::Alarms;
use crate::config::Config;
use crate::layout::RolloverAllocator;
use crate::store::FileStore;
use crate::telemetry;
use crate::ticket::TicketAuthority;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Response body type: boxed, so handlers can stream or send a buffer.
pub type ResponseBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Everything a request handler needs.
pub struct AppState {
    pub config: Config,
    pub store: Arc<dyn FileStore>,
    pub allocator: RolloverAllocator,
    pub aftlog: AftLog,
    pub tickets: TicketAuthority,
    pub alarms: Arc<Alarms>,
    pub metrics: PrometheusHandle,
    /// `node.public_url` without trailing slash (port resolved).
    pub base_url: String,
    /// The path prefix of `public_url` (empty or `/prefix`), stripped from request paths.
    pub path_prefix: String,
}

/// A body with fixed content.
pub fn full_body(data: impl Into<Bytes>) -> ResponseBody {
    Full::new(data.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty_body() -> ResponseBody {
    full_body(Bytes::new())
}

/// Accepts connections until `stop` turns true, then waits for open connections to finish.
pub async fn serve(listener: TcpListener, state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "Accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(state, req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(peer = %peer, error = %e, "Connection ended with an error");
                    }
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn route(state: Arc<AppState>, req: Request<Incoming>) -> Response<ResponseBody> {
    let full_path = req.uri().path().to_string();
    let path = strip_public_prefix(&full_path, &state.path_prefix);
    let method = req.method().clone();
    let (route_name, response) = match (&method, path) {
        (&Method::POST, "/files") => ("upload", upload::handle(&state, req).await),
        (&Method::GET | &Method::HEAD, p) if p.starts_with("/files/") => {
            let p = p.to_string();
            ("download", download::handle(&state, req, &p).await)
        }
        (&Method::GET, "/metrics") => ("metrics", ops::metrics(&state)),
        (&Method::GET, "/healthz") => ("healthz", ops::healthz()),
        (&Method::GET, "/readyz") => ("readyz", ops::readyz(&state).await),
        (&Method::GET, "/status") => ("status", ops::status(&state).await),
        (_, "/files") | (_, "/metrics" | "/healthz" | "/readyz" | "/status") => {
            ("other", errors::ApiError::MethodNotAllowed.into_response())
        }
        (_, p) if p.starts_with("/files/") => {
            ("other", errors::ApiError::MethodNotAllowed.into_response())
        }
        _ => ("other", errors::ApiError::NotFound.into_response()),
    };
    count(route_name, response)
}

/// The request path without `node.public_url`'s path prefix. Paths without the prefix are
/// served too: a reverse proxy may strip it, and scrapers ask for `/metrics` directly.
fn strip_public_prefix<'a>(path: &'a str, prefix: &str) -> &'a str {
    if prefix.is_empty() {
        return path;
    }
    match path.strip_prefix(prefix) {
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

fn count(route: &'static str, response: Response<ResponseBody>) -> Response<ResponseBody> {
    let class = match response.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!(telemetry::HTTP_RESPONSES, "route" => route, "status" => class).increment(1);
    response
}

/// A JSON response.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<ResponseBody> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(full_body(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::strip_public_prefix;

    #[test]
    fn prefix_optional() {
        assert_eq!(strip_public_prefix("/mft/files", "/mft"), "/files");
        assert_eq!(strip_public_prefix("/files", "/mft"), "/files");
        assert_eq!(strip_public_prefix("/metrics", "/mft"), "/metrics");
        assert_eq!(strip_public_prefix("/mftx/files", "/mft"), "/mftx/files");
        assert_eq!(strip_public_prefix("/files", ""), "/files");
    }
}
