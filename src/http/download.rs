//! `GET`/`HEAD /files/<node>/<chat>/<date>/<HH[.n]>/<resource>/<filename>`: stream a file back.
//!
//! The URL is validated segment by segment ([`StoredPath::parse_segments`]) before anything
//! touches the store; the filename segment only names the download. `Range` gives 206/416.
//! Every GET writes a `Get` row with the bytes actually sent, also when the client goes away.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method as HttpMethod, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use percent_encoding::{percent_decode_str, utf8_percent_encode};

use super::errors::{ApiError, ticket_reason};
use super::upload::{InFlight, SEGMENT};
use super::{AppState, ResponseBody, empty_body};
use crate::aftlog::{AftRecord, Method};
use crate::layout::{StoredPath, file_type_of};
use crate::store::ByteStream;
use crate::telemetry;
use crate::ticket::bearer_token;

type Failure = (ApiError, &'static str);

/// Content types shown inline; everything else is an attachment served as octet-stream.
fn is_inline_safe(mime: &str) -> bool {
    matches!(
        mime,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp" | "image/bmp" | "text/plain"
    ) || mime.starts_with("audio/")
        || mime.starts_with("video/")
}

pub async fn handle(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    path: &str,
) -> Response<ResponseBody> {
    match download(state, &req, path).await {
        Ok(resp) => resp,
        Err((err, reason)) => {
            err.record("download", reason);
            err.into_response()
        }
    }
}

/// The decoded, validated download URL.
struct Target {
    stored: StoredPath,
    filename: String,
}

fn bad_path(what: &str) -> Failure {
    (
        ApiError::BadRequest(format!("invalid download path: {what}")),
        "bad_path",
    )
}

fn parse_target(state: &AppState, path: &str) -> Result<Target, Failure> {
    let rest = path
        .strip_prefix("/files/")
        .ok_or((ApiError::NotFound, "not_found"))?;
    let raw: Vec<&str> = rest.split('/').collect();
    if raw.len() != 6 {
        return Err(bad_path(
            "expected /files/<node>/<chat>/<date>/<hour>/<resource>/<filename>",
        ));
    }
    let mut decoded = Vec::with_capacity(6);
    for (i, seg) in raw.iter().enumerate() {
        let text = percent_decode_str(seg)
            .decode_utf8()
            .map_err(|_| bad_path("a segment is not UTF-8"))?;
        if text.is_empty() || text.contains('\0') || text.chars().any(char::is_control) {
            return Err(bad_path("empty segment or control character"));
        }
        // Storage segments must be plain words; only the display filename may hold `/`.
        if i < 5 && (text.contains('/') || text.contains('\\') || text == "." || text == "..") {
            return Err(bad_path("path separator or dot segment"));
        }
        decoded.push(text.into_owned());
    }
    if decoded[0] != state.config.node.id {
        return Err((ApiError::NotFound, "other_node"));
    }
    let stored = StoredPath::parse_segments(&decoded[1], &decoded[2], &decoded[3], &decoded[4])
        .map_err(|e| bad_path(&e.to_string()))?;
    Ok(Target {
        stored,
        filename: decoded[5].clone(),
    })
}

/// Parses a single `bytes=` range against `size` (RFC 9110 section 14): `Ok(None)` means
/// serve the whole file (no range, another unit, several ranges, or a syntactically invalid
/// one, which the RFC says to ignore); positions past `u64::MAX` are clamped; a first
/// position at or past the end is unsatisfiable (416).
fn parse_range(value: Option<&HeaderValue>, size: u64) -> Result<Option<(u64, u64)>, Failure> {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some((unit, spec)) = value.trim().split_once('=') else {
        return Ok(None);
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (first, last) = (first.trim(), last.trim());
    let position = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(s.parse::<u64>().unwrap_or(u64::MAX))
    };
    let unsatisfiable = (
        ApiError::RangeNotSatisfiable { size },
        "range_not_satisfiable",
    );
    if first.is_empty() {
        let Some(n) = position(last) else {
            return Ok(None);
        };
        if n == 0 || size == 0 {
            return Err(unsatisfiable);
        }
        let n = n.min(size);
        return Ok(Some((size - n, size - 1)));
    }
    let Some(start) = position(first) else {
        return Ok(None);
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match position(last) {
            Some(e) if e >= start => e,
            _ => return Ok(None),
        }
    };
    if start >= size {
        return Err(unsatisfiable);
    }
    Ok(Some((start, end.min(size - 1))))
}

/// RFC 6266: `disposition; filename="ascii"; filename*=UTF-8''percent-encoded`.
pub fn content_disposition(disposition: &str, filename: &str) -> String {
    let fallback: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' && c != '/' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{}",
        utf8_percent_encode(filename, SEGMENT)
    )
}

async fn download(
    state: &Arc<AppState>,
    req: &Request<Incoming>,
    path: &str,
) -> Result<Response<ResponseBody>, Failure> {
    if !state.config.transfer.mode.managed_enabled() {
        return Err((
            ApiError::Forbidden("managed file transfer is disabled on this node".into()),
            "transfers_disabled",
        ));
    }
    let header_value = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let claims = bearer_token(header_value)
        .and_then(|t| state.tickets.verify_download(t))
        .map_err(|e| {
            let reason = ticket_reason(&e);
            (ApiError::from(e), reason)
        })?;
    let target = parse_target(state, path)?;
    if let Some(bound) = &claims.res
        && bound != &target.stored.resource
    {
        return Err((
            ApiError::Forbidden("this ticket is for another file".into()),
            "ticket_wrong_resource",
        ));
    }
    let rel = target.stored.rel();
    let size = match state.store.size_of(&rel).await {
        Ok(s) => s,
        Err(e) if e.is_not_found() => return Err((ApiError::NotFound, "not_found")),
        Err(e) => {
            tracing::error!(error = %e, "File server error during download");
            return Err((ApiError::Unavailable, e.reason()));
        }
    };
    let range = parse_range(req.headers().get(header::RANGE), size)?;
    let (start, len, status) = match range {
        Some((first, last)) => (first, last - first + 1, StatusCode::PARTIAL_CONTENT),
        None => (0, size, StatusCode::OK),
    };

    let guessed = mime_guess::from_path(&target.filename)
        .first_raw()
        .unwrap_or("");
    let (content_type, disposition) = if is_inline_safe(guessed) {
        (guessed, "inline")
    } else {
        ("application/octet-stream", "attachment")
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox",
        )
        .header(header::CACHE_CONTROL, "private, no-store")
        .header(
            header::CONTENT_DISPOSITION,
            content_disposition(disposition, &target.filename),
        );
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    if req.method() == HttpMethod::HEAD {
        return builder
            .body(empty_body())
            .map_err(|_| (ApiError::Unavailable, "internal"));
    }
    let stream = if len == 0 {
        Box::pin(futures_util::stream::empty()) as ByteStream
    } else {
        state
            .store
            .read_range(&rel, start, len)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "File server error opening a download");
                (ApiError::Unavailable, e.reason())
            })?
    };
    let row = AftRecord {
        aft_index: state.aftlog.new_index(),
        jid: claims.sub,
        to_jid: String::new(),
        method: Method::Get,
        filename: target.stored.resource.clone(),
        real_filename: target.filename.clone(),
        file_type: file_type_of(&target.filename),
        chat_type: target.stored.chat.as_str().to_string(),
        file_server: state.store.server_name().to_string(),
        file_path: state.store.absolute_path(&rel),
        file_size: size as i64,
        bytes_transferred: 0,
        timestamp: chrono::Utc::now(),
    };
    let body = DownloadBody {
        stream,
        expected: len,
        sent: 0,
        failed: false,
        row: Some(row),
        state: state.clone(),
        started: Instant::now(),
        _in_flight: InFlight::new("download"),
    };
    builder
        .body(body.boxed_unsync())
        .map_err(|_| (ApiError::Unavailable, "internal"))
}

/// The streamed download body; writes the `Get` row when finished or dropped.
struct DownloadBody {
    stream: ByteStream,
    expected: u64,
    sent: u64,
    failed: bool,
    row: Option<AftRecord>,
    state: Arc<AppState>,
    started: Instant,
    _in_flight: InFlight,
}

impl Body for DownloadBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.sent >= self.expected {
            return Poll::Ready(None);
        }
        match self.stream.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(data))) => {
                self.sent += data.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => {
                self.failed = true;
                tracing::error!(error = %e, "File server error during a download");
                Poll::Ready(Some(Err(std::io::Error::other(e.to_string()))))
            }
            Poll::Ready(None) => {
                if self.sent < self.expected {
                    self.failed = true;
                    Poll::Ready(Some(Err(std::io::Error::other("file ended early"))))
                } else {
                    Poll::Ready(None)
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.expected
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.expected - self.sent.min(self.expected))
    }
}

impl Drop for DownloadBody {
    fn drop(&mut self) {
        let Some(mut row) = self.row.take() else {
            return;
        };
        row.bytes_transferred = self.sent as i64;
        row.timestamp = chrono::Utc::now();
        let seconds = self.started.elapsed().as_secs_f64();
        metrics::counter!(telemetry::BYTES_DOWNLOADED).increment(self.sent);
        if self.sent >= self.expected {
            metrics::counter!(telemetry::FILES_DOWNLOADED).increment(1);
            metrics::histogram!(telemetry::TRANSFER_DURATION, "direction" => "download")
                .record(seconds);
            metrics::histogram!(telemetry::TRANSFER_SIZE, "direction" => "download")
                .record(self.sent as f64);
            tracing::info!(resource = %row.filename, bytes = self.sent, seconds, "Download served");
        } else {
            let reason = if self.failed {
                "file_server_io"
            } else {
                "client_aborted"
            };
            metrics::counter!(telemetry::TRANSFER_ERRORS, "direction" => "download", "reason" => reason)
                .increment(1);
            tracing::info!(
                resource = %row.filename,
                bytes = self.sent,
                expected = self.expected,
                reason,
                "Download interrupted"
            );
        }
        self.state.aftlog.record_in_background(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str, size: u64) -> Result<Option<(u64, u64)>, StatusCode> {
        parse_range(Some(&HeaderValue::from_str(v).unwrap()), size).map_err(|(e, _)| e.status())
    }

    #[test]
    fn ranges() {
        assert_eq!(range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=-1000", 100), Ok(Some((0, 99))));
        assert_eq!(range("bytes=50-1000", 100), Ok(Some((50, 99))));
        assert_eq!(
            range("bytes=100-", 100),
            Err(StatusCode::RANGE_NOT_SATISFIABLE)
        );
        assert_eq!(range("bytes=9-3", 100), Ok(None));
        assert_eq!(range("BYTES=0-1", 100), Ok(Some((0, 1))));
        assert_eq!(
            range("bytes=0-99999999999999999999", 100),
            Ok(Some((0, 99)))
        );
        assert_eq!(range("bytes=-99999999999999999999", 100), Ok(Some((0, 99))));
        assert_eq!(
            range("bytes=-0", 100),
            Err(StatusCode::RANGE_NOT_SATISFIABLE)
        );
        assert_eq!(range("bytes=abc", 100), Ok(None));
        assert_eq!(range("bytes=1-x", 100), Ok(None));
        assert_eq!(
            range("bytes=0-0", 0),
            Err(StatusCode::RANGE_NOT_SATISFIABLE)
        );
        assert_eq!(range("items=0-1", 100), Ok(None));
        assert_eq!(range("bytes=0-1,5-6", 100), Ok(None));
    }

    #[test]
    fn disposition_has_fallback_and_utf8() {
        let v = content_disposition("attachment", "résumé \"1\".pdf");
        assert_eq!(
            v,
            "attachment; filename=\"r_sum_ _1_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%221%22.pdf"
        );
    }
}
