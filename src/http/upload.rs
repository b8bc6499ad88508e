//! `POST /files`: stream an upload to the file server, log its `Post` row, answer with its URI.
//!
//! Order (SPEC section 1): ticket and size checks before the body is read; the body streamed
//! frame by frame into a temporary file (SHA-256 computed on the way); commit (sync + rename);
//! the `Post` row committed; only then `201 Created`. Any failure removes what was written and
//! logs nothing as uploaded. The finishing steps run in their own task, so a client that goes
//! away at the last moment cannot leave a file without its row.

use std::time::Instant;

use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

use super::errors::{ApiError, ticket_reason};
use super::{AppState, ResponseBody, json_response};
use crate::aftlog::{AftRecord, Method};
use crate::alarms::Alarm;
use crate::layout::{ChatType, StoredPath, file_type_of};
use crate::store::{StoreError, UploadSink, temp_name};
use crate::telemetry;
use crate::ticket::{UploadClaims, bearer_token};

/// Characters escaped in a URI path segment: all but RFC 3986 unreserved.
pub const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

type Failure = (ApiError, &'static str);

/// Keeps `mft_transfers_in_flight{direction}` accurate even when a handler is cancelled.
pub struct InFlight(&'static str);

impl InFlight {
    pub fn new(direction: &'static str) -> Self {
        metrics::gauge!(telemetry::TRANSFERS_IN_FLIGHT, "direction" => direction).increment(1.0);
        InFlight(direction)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(telemetry::TRANSFERS_IN_FLIGHT, "direction" => self.0).decrement(1.0);
    }
}

pub async fn handle(
    state: &std::sync::Arc<AppState>,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let _in_flight = InFlight::new("upload");
    match upload(state, req).await {
        Ok(resp) => resp,
        Err((err, reason)) => {
            err.record("upload", reason);
            err.into_response()
        }
    }
}

fn store_failure(e: &StoreError) -> Failure {
    tracing::error!(error = %e, "File server error during upload");
    (ApiError::Unavailable, e.reason())
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Failure> {
    let Some(v) = headers.get(http::header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or((
            ApiError::BadRequest("Content-Length is not a number".into()),
            "bad_content_length",
        ))
}

fn is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .any(|v| {
            v.to_str()
                .is_ok_and(|s| s.to_ascii_lowercase().contains("chunked"))
        })
}

/// Checks everything that can be checked before reading the body; returns the claims, the
/// chat type and the exact length the body must have (when known).
fn admit(
    state: &AppState,
    req: &Request<Incoming>,
) -> Result<(UploadClaims, ChatType, Option<u64>), Failure> {
    if !state.config.transfer.mode.managed_enabled() {
        return Err((
            ApiError::Forbidden("managed file transfer is disabled on this node".into()),
            "transfers_disabled",
        ));
    }
    let header = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let claims = bearer_token(header)
        .and_then(|t| state.tickets.verify_upload(t))
        .map_err(|e| {
            let reason = ticket_reason(&e);
            (ApiError::from(e), reason)
        })?;
    let chat: ChatType = claims.chat.parse().map_err(|_| {
        (
            ApiError::BadRequest("unknown chat type".into()),
            "ticket_bad_claims",
        )
    })?;
    let limit = state.config.transfer.effective_max_file_size();
    let declared = content_length(req.headers())?;
    // Without Content-Length or chunked framing an HTTP/1 body is empty by definition
    // (RFC 9112 section 6.3). Storing it as an empty file would silently drop whatever the
    // client meant to send, so a length is required unless the ticket says the file is empty.
    let unframed =
        declared.is_none() && !is_chunked(req.headers()) && req.version() < Version::HTTP_2;
    if unframed && claims.size != Some(0) {
        return Err((ApiError::LengthRequired, "length_required"));
    }
    for size in [declared, claims.size].into_iter().flatten() {
        if size > limit {
            return Err((ApiError::TooLarge { limit }, "too_large"));
        }
    }
    if let (Some(d), Some(t)) = (declared, claims.size)
        && d != t
    {
        return Err((
            ApiError::BadRequest(format!(
                "the body is {d} bytes but the ticket says {t} bytes"
            )),
            "size_mismatch",
        ));
    }
    let expected = claims.size.or(declared);
    Ok((claims, chat, expected))
}

async fn upload(
    state: &std::sync::Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Failure> {
    let started = Instant::now();
    let (claims, chat, expected) = match admit(state, &req) {
        Ok(admitted) => admitted,
        Err(refusal) => return Err(refuse_before_body(req, refusal).await),
    };
    if let Err(refusal) = database_reachable(state).await {
        return Err(refuse_before_body(req, refusal).await);
    }
    let limit = state.config.transfer.effective_max_file_size();
    let path = state
        .allocator
        .allocate(chat)
        .await
        .map_err(|e| store_failure(&e))?;
    let mut sink = state
        .store
        .create_upload(&path.dir(), &path.resource)
        .await
        .map_err(|e| store_failure(&e))?;

    let mut body = req.into_body();
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    let idle = std::time::Duration::from_secs(state.config.transfer.idle_timeout_s);
    loop {
        let Ok(next) = tokio::time::timeout(idle, body.frame()).await else {
            sink.abort().await;
            tracing::info!(received = total, "Upload body stalled; abandoned");
            return Err((ApiError::RequestTimeout, "client_stalled"));
        };
        let frame = match next {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                sink.abort().await;
                tracing::info!(error = %e, received = total, "Upload body ended early");
                return Err((
                    ApiError::BadRequest("the upload body was interrupted".into()),
                    "client_aborted",
                ));
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we store
        };
        total += data.len() as u64;
        if total > limit {
            sink.abort().await;
            drain(&mut body).await;
            return Err((ApiError::TooLarge { limit }, "too_large"));
        }
        if let Some(exp) = expected
            && total > exp
        {
            sink.abort().await;
            drain(&mut body).await;
            return Err((
                ApiError::BadRequest(format!("the body is longer than the {exp} bytes announced")),
                "size_mismatch",
            ));
        }
        hasher.update(&data);
        if let Err(e) = sink.write(data).await {
            sink.abort().await;
            return Err(store_failure(&e));
        }
    }
    if let Some(exp) = expected
        && total != exp
    {
        sink.abort().await;
        return Err((
            ApiError::BadRequest(format!(
                "the body is {total} bytes but {exp} bytes were announced"
            )),
            "size_mismatch",
        ));
    }
    let sha256 = hex::encode(hasher.finalize());

    // Commit and log in a task of its own: it completes even if this request is cancelled.
    let finish = tokio::spawn(finish(
        state.clone(),
        sink,
        path.clone(),
        claims.clone(),
        total,
    ));
    let outcome = finish.await.map_err(|e| {
        tracing::error!(error = %e, "Upload finishing task failed");
        (ApiError::Unavailable, "internal")
    })?;
    outcome?;

    let seconds = started.elapsed().as_secs_f64();
    metrics::counter!(telemetry::FILES_UPLOADED).increment(1);
    metrics::counter!(telemetry::BYTES_UPLOADED).increment(total);
    metrics::histogram!(telemetry::TRANSFER_DURATION, "direction" => "upload").record(seconds);
    metrics::histogram!(telemetry::TRANSFER_SIZE, "direction" => "upload").record(total as f64);
    tracing::info!(
        resource = %path.resource,
        dir = %path.dir(),
        bytes = total,
        seconds,
        "Upload stored"
    );

    let uri = download_uri(state, &path, &claims.name);
    let mut resp = json_response(
        StatusCode::CREATED,
        &serde_json::json!({
            "uri": uri,
            "resource": path.resource,
            "size": total,
            "sha256": sha256,
        }),
    );
    if let Ok(v) = http::HeaderValue::from_str(&uri) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    Ok(resp)
}

/// Refuses a request before its body is read. A small body is read and dropped first so the
/// client, still sending, sees the answer; a large one is not worth reading.
async fn refuse_before_body(req: Request<Incoming>, refusal: Failure) -> Failure {
    let declared = content_length(req.headers()).ok().flatten();
    if declared.is_none_or(|d| d <= DRAIN_MAX_BYTES) {
        drain(&mut req.into_body()).await;
    }
    refusal
}

/// How long an upload waits for a database ping while the database alarm is raised.
const DB_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// While `XcpMFTDBConnectError` is raised, no upload could be logged: a quick ping decides
/// whether to refuse at once (rather than storing a file only to remove it after
/// `database.commit_timeout_s`) or to go ahead because the database is back.
async fn database_reachable(state: &AppState) -> Result<(), Failure> {
    if !state.alarms.is_active(Alarm::XcpMFTDBConnectError) {
        return Ok(());
    }
    match tokio::time::timeout(DB_PROBE_TIMEOUT, state.aftlog.ping()).await {
        Ok(Ok(())) => Ok(()),
        _ => Err((ApiError::Unavailable, "db_unavailable")),
    }
}

/// Most bytes read and thrown away after refusing a body, so the client reads the answer.
const DRAIN_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Longest spent throwing a refused body away.
const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and discards the rest of a refused body (bounded in bytes and time). Answering while
/// the client is still sending makes the connection close under it, and many clients then
/// report a broken pipe instead of the status; after a short drain they see the 413 or 400.
async fn drain(body: &mut Incoming) {
    let mut drained = 0u64;
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, async {
        while drained <= DRAIN_MAX_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => {
                    drained += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                _ => break,
            }
        }
    })
    .await;
}

/// Commits the file, then its row; undoes the file when the row cannot be written.
async fn finish(
    state: std::sync::Arc<AppState>,
    sink: Box<dyn UploadSink>,
    path: StoredPath,
    claims: UploadClaims,
    total: u64,
) -> Result<(), Failure> {
    if let Err(e) = sink.commit().await {
        // The sink removes its temporary file on a failed commit; make sure of it.
        let _ = state
            .store
            .remove(&format!("{}/{}", path.dir(), temp_name(&path.resource)))
            .await;
        return Err(store_failure(&e));
    }
    let rel = path.rel();
    let row = AftRecord {
        aft_index: state.aftlog.new_index(),
        jid: claims.sub,
        to_jid: claims.to,
        method: Method::Post,
        filename: path.resource.clone(),
        file_type: file_type_of(&claims.name),
        real_filename: claims.name,
        chat_type: path.chat.as_str().to_string(),
        file_server: state.store.server_name().to_string(),
        file_path: state.store.absolute_path(&rel),
        file_size: total as i64,
        bytes_transferred: total as i64,
        timestamp: chrono::Utc::now(),
    };
    if let Err(e) = state.aftlog.record(row).await {
        tracing::error!(error = %e, resource = %path.resource, "AFT_LOG Post row not written; removing the file");
        if let Err(rm) = state.store.remove(&rel).await {
            tracing::error!(error = %rm, path = %rel, "Could not remove a file whose Post row failed");
        }
        return Err((ApiError::Unavailable, e.reason()));
    }
    Ok(())
}

/// `{public_url}/files/<node>/<chat>/<date>/<HH[.n]>/<resource>/<filename>`.
pub fn download_uri(state: &AppState, path: &StoredPath, real_filename: &str) -> String {
    format!(
        "{}/files/{}/{}/{}",
        state.base_url,
        state.config.node.id,
        path.url_segments(),
        utf8_percent_encode(real_filename, SEGMENT)
    )
}
