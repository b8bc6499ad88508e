//! Mapping russh-sftp errors to [`StoreError`], and telling which ones mean the session died.

use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::StatusCode;

use crate::store::StoreError;

/// Maps an SFTP error about `what` (a path or an operation). The flag says whether the
/// session is unusable afterwards (the connection must be replaced).
pub(crate) fn map_sftp(err: SftpError, what: &str) -> (StoreError, bool) {
    match err {
        SftpError::Status(s) => match s.status_code {
            StatusCode::NoSuchFile => (StoreError::NotFound(what.to_string()), false),
            StatusCode::NoConnection | StatusCode::ConnectionLost => (
                StoreError::Unavailable(format!("{what}: {}", s.status_code)),
                true,
            ),
            StatusCode::PermissionDenied => {
                (StoreError::Io(format!("{what}: permission denied")), false)
            }
            code => {
                let msg = s.error_message.trim();
                let text = if msg.is_empty() || msg.eq_ignore_ascii_case(&code.to_string()) {
                    code.to_string()
                } else {
                    format!("{code}: {msg}")
                };
                let lower = text.to_ascii_lowercase();
                if lower.contains("no space") || lower.contains("quota") {
                    (StoreError::NoSpace(format!("{what}: {text}")), false)
                } else {
                    (StoreError::Io(format!("{what}: {text}")), false)
                }
            }
        },
        SftpError::Timeout => (
            StoreError::Unavailable(format!("{what}: the file server did not answer in time")),
            true,
        ),
        SftpError::IO(m) | SftpError::UnexpectedBehavior(m) => (
            StoreError::Unavailable(format!("{what}: session lost: {m}")),
            true,
        ),
        SftpError::Limited(m) => (StoreError::Io(format!("{what}: {m}")), false),
        SftpError::UnexpectedPacket => (
            StoreError::Io(format!("{what}: unexpected reply from the file server")),
            false,
        ),
    }
}

/// Whether the failed operation may be retried on a fresh connection: the session was dead,
/// so the request most likely never reached the server.
pub(crate) fn is_retryable(e: &StoreError, dead: bool) -> bool {
    dead && matches!(e, StoreError::Unavailable(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh_sftp::protocol::Status;

    fn status(code: StatusCode, msg: &str) -> SftpError {
        SftpError::Status(Status {
            id: 1,
            status_code: code,
            error_message: msg.into(),
            language_tag: "en".into(),
        })
    }

    #[test]
    fn codes_map() {
        let (e, dead) = map_sftp(status(StatusCode::NoSuchFile, "No such file"), "a/b");
        assert!(e.is_not_found() && !dead);
        let (e, dead) = map_sftp(status(StatusCode::ConnectionLost, ""), "a/b");
        assert!(matches!(e, StoreError::Unavailable(_)) && dead);
        let (e, dead) = map_sftp(status(StatusCode::Failure, "disk on fire"), "a/b");
        assert!(matches!(&e, StoreError::Io(m) if m.contains("disk on fire")) && !dead);
        let (e, dead) = map_sftp(SftpError::UnexpectedBehavior("session closed".into()), "x");
        assert!(matches!(e, StoreError::Unavailable(_)) && dead);
    }
}
