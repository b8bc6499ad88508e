//! The HTTP client: one upload or one download, exactly as a chat client sends it, timed and
//! classified.
//!
//! Failures are sorted into a small fixed vocabulary ([`Failure::kind`]) so the report can count
//! them by kind without quoting error text.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// How an upload body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` announced up front (the node may refuse it before reading).
    ContentLength,
    /// `Transfer-Encoding: chunked` (the node enforces the limit while streaming).
    Chunked,
}

/// Why a transfer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("HTTP {status}")]
    Status {
        status: u16,
        retry_after: Option<String>,
    },
    #[error("could not connect")]
    Connect,
    #[error("timed out")]
    Timeout,
    #[error("connection failed mid-transfer")]
    Io,
    #[error("unexpected response: {0}")]
    BadResponse(String),
    #[error("received {got} bytes, expected {expected}")]
    SizeMismatch { got: u64, expected: u64 },
    #[error("content hash differs from the upload's")]
    HashMismatch,
    #[error("cannot mint a ticket: {0}")]
    Ticket(String),
}

impl Failure {
    /// A short stable label: `http_503`, `connect`, `timeout`, `io`, `bad_response`,
    /// `size_mismatch`, `hash_mismatch`, `ticket`.
    pub fn kind(&self) -> String {
        match self {
            Failure::Status { status, .. } => format!("http_{status}"),
            Failure::Connect => "connect".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Io => "io".into(),
            Failure::BadResponse(_) => "bad_response".into(),
            Failure::SizeMismatch { .. } => "size_mismatch".into(),
            Failure::HashMismatch => "hash_mismatch".into(),
            Failure::Ticket(_) => "ticket".into(),
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Failure::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn from_reqwest(e: &reqwest::Error) -> Failure {
        if e.is_timeout() {
            Failure::Timeout
        } else if e.is_connect() {
            Failure::Connect
        } else if let Some(status) = e.status() {
            Failure::Status {
                status: status.as_u16(),
                retry_after: None,
            }
        } else {
            Failure::Io
        }
    }
}

/// The node's answer to a successful upload (SPEC section 3).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Uploaded {
    pub uri: String,
    pub resource: String,
    pub size: u64,
    pub sha256: String,
}

/// What a download received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub bytes: u64,
    /// Hex SHA-256 of the body, when asked for.
    pub sha256: Option<String>,
}

/// A shared connection pool with per-request time limits.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_timeout: Duration,
    /// Slowest transfer rate allowed before a large transfer counts as timed out.
    min_rate_bytes_per_s: u64,
}

impl Client {
    pub fn new(base_timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .connect_timeout(base_timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Client {
            http,
            base_timeout,
            min_rate_bytes_per_s: 5_000_000,
        })
    }

    /// The time limit for a transfer of `bytes`: the base plus `bytes` at 5 MB/s.
    pub fn timeout_for(&self, bytes: u64) -> Duration {
        self.base_timeout + Duration::from_secs(bytes / self.min_rate_bytes_per_s)
    }

    /// `POST upload_url` with the generated `body` of `len` bytes.
    pub async fn upload<S>(
        &self,
        upload_url: &str,
        ticket: &str,
        body: S,
        len: u64,
        framing: Framing,
    ) -> Result<Uploaded, Failure>
    where
        S: Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static,
    {
        let mut req = self
            .http
            .post(upload_url)
            .header(AUTHORIZATION, format!("Bearer {ticket}"))
            .header(CONTENT_TYPE, "application/octet-stream")
            .timeout(self.timeout_for(len))
            .body(reqwest::Body::wrap_stream(body));
        if framing == Framing::ContentLength {
            // hyper keeps a length set by the caller, so the stream goes out with it instead of
            // chunked framing.
            req = req.header(CONTENT_LENGTH, len);
        }
        let resp = req.send().await.map_err(|e| Failure::from_reqwest(&e))?;
        let status = resp.status();
        if status.as_u16() != 201 {
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            // Read the (small) error body so the connection can be reused.
            let _ = resp.bytes().await;
            return Err(Failure::Status {
                status: status.as_u16(),
                retry_after,
            });
        }
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.bytes().await.map_err(|e| Failure::from_reqwest(&e))?;
        let up: Uploaded = serde_json::from_slice(&body)
            .map_err(|e| Failure::BadResponse(format!("upload JSON: {e}")))?;
        if location.as_deref() != Some(up.uri.as_str()) {
            return Err(Failure::BadResponse(
                "Location differs from the JSON uri".into(),
            ));
        }
        if up.size != len {
            return Err(Failure::SizeMismatch {
                got: up.size,
                expected: len,
            });
        }
        Ok(up)
    }

    /// `GET url`, reading the whole body; `expected` bytes are checked when given.
    pub async fn download(
        &self,
        url: &str,
        ticket: &str,
        expected: Option<u64>,
        hash: bool,
    ) -> Result<Downloaded, Failure> {
        let resp = self
            .http
            .get(url)
            .header(AUTHORIZATION, format!("Bearer {ticket}"))
            .timeout(self.timeout_for(expected.unwrap_or(0)))
            .send()
            .await
            .map_err(|e| Failure::from_reqwest(&e))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let _ = resp.bytes().await;
            return Err(Failure::Status {
                status,
                retry_after,
            });
        }
        let mut hasher = hash.then(Sha256::new);
        let mut bytes = 0u64;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Failure::from_reqwest(&e))?;
            bytes += chunk.len() as u64;
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk);
            }
        }
        if let Some(expected) = expected
            && bytes != expected
        {
            return Err(Failure::SizeMismatch {
                got: bytes,
                expected,
            });
        }
        Ok(Downloaded {
            bytes,
            sha256: hasher.map(|h| hex::encode(h.finalize())),
        })
    }

    /// `HEAD url`: the announced `Content-Length`.
    pub async fn head_len(&self, url: &str, ticket: &str) -> Result<Option<u64>, Failure> {
        let resp = self
            .http
            .head(url)
            .header(AUTHORIZATION, format!("Bearer {ticket}"))
            .timeout(self.base_timeout)
            .send()
            .await
            .map_err(|e| Failure::from_reqwest(&e))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(Failure::Status {
                status,
                retry_after: None,
            });
        }
        Ok(resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }
}
