//! HTTP error responses: one enum of what can go wrong for a client, each with its status, a
//! stable code, and a message safe to show (never the backend's root cause).

use http::{Response, StatusCode};

use super::{ResponseBody, json_response};
use crate::telemetry;
use crate::ticket::TicketError;

/// Seconds a client is told to wait after a 503.
pub const RETRY_AFTER_S: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the request body stopped arriving")]
    RequestTimeout,
    #[error("a Content-Length or chunked body is required")]
    LengthRequired,
    #[error("the file exceeds the size limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the requested range is not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    #[error("the service is temporarily unavailable; retry later")]
    Unavailable,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::LengthRequired => StatusCode::LENGTH_REQUIRED,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::LengthRequired => "length_required",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            ApiError::Unavailable => "unavailable",
        }
    }

    /// Counts the error in `mft_transfer_errors_total{direction, reason}` and logs it.
    pub fn record(&self, direction: &'static str, reason: &'static str) {
        metrics::counter!(telemetry::TRANSFER_ERRORS, "direction" => direction, "reason" => reason)
            .increment(1);
        if self.status().is_server_error() {
            tracing::warn!(direction, reason, status = self.status().as_u16(), message = %self, "Transfer refused");
        } else {
            tracing::info!(direction, reason, status = self.status().as_u16(), message = %self, "Transfer refused");
        }
    }

    pub fn into_response(self) -> Response<ResponseBody> {
        let mut resp = json_response(
            self.status(),
            &serde_json::json!({ "error": self.code(), "message": self.to_string() }),
        );
        let headers = resp.headers_mut();
        match &self {
            ApiError::Unavailable => {
                headers.insert(http::header::RETRY_AFTER, RETRY_AFTER_S.into());
            }
            ApiError::RangeNotSatisfiable { size } => {
                if let Ok(v) = http::HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(http::header::CONTENT_RANGE, v);
                }
            }
            ApiError::Unauthorized(_) => {
                headers.insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
            }
            ApiError::MethodNotAllowed => {
                headers.insert(
                    http::header::ALLOW,
                    http::HeaderValue::from_static("GET, HEAD, POST"),
                );
            }
            _ => {}
        }
        resp
    }
}

impl From<TicketError> for ApiError {
    fn from(e: TicketError) -> Self {
        match e {
            TicketError::Missing | TicketError::Expired | TicketError::Malformed => {
                ApiError::Unauthorized(e.to_string())
            }
            TicketError::BadSignature | TicketError::WrongKind { .. } => {
                ApiError::Forbidden(e.to_string())
            }
            TicketError::BadClaims(_) => ApiError::BadRequest(e.to_string()),
            TicketError::Signing(_) | TicketError::BadKey(_) => ApiError::Unavailable,
        }
    }
}

/// The metric reason for a ticket failure.
pub fn ticket_reason(e: &TicketError) -> &'static str {
    match e {
        TicketError::Missing => "ticket_missing",
        TicketError::Expired => "ticket_expired",
        TicketError::Malformed => "ticket_malformed",
        TicketError::BadSignature => "ticket_bad_signature",
        TicketError::WrongKind { .. } => "ticket_wrong_kind",
        TicketError::BadClaims(_) => "ticket_bad_claims",
        TicketError::Signing(_) | TicketError::BadKey(_) => "ticket_internal",
    }
}
