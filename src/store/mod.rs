//! The file server abstraction: what the HTTP front and the layout need from a store.
//!
//! Two backends implement [`FileStore`]: [`sftp::SftpStore`] (an external OpenSSH server over a
//! pool of SSH connections, the production backend) and [`local::LocalStore`] (a local
//! directory, the embedded default). Both follow the same rules: paths are relative to the
//! node's directory and produced by [`crate::layout`]; an upload is written under a hidden
//! temporary name (`.<name>.part`) in its target directory and renamed into place only on
//! [`UploadSink::commit`], so a reader never sees a partial file under a final name.

pub mod local;
pub mod sftp;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

/// Why a store operation failed. HTTP maps these to statuses without string matching.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("file server unreachable: {0}")]
    Unavailable(String),
    #[error("file server host key mismatch: expected {expected}, the server offered {offered}")]
    HostKeyMismatch { expected: String, offered: String },
    #[error("authentication to the file server failed: {0}")]
    Auth(String),
    #[error("file server is out of space: {0}")]
    NoSpace(String),
    #[error("invalid store path: {0}")]
    InvalidPath(String),
    #[error("file server I/O error: {0}")]
    Io(String),
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound(_))
    }

    /// Whether the file server itself could not be reached or logged into (the mount alarm).
    pub fn is_connectivity(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::HostKeyMismatch { .. } | StoreError::Auth(_)
        )
    }

    /// A short stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::NotFound(_) => "not_found",
            StoreError::Unavailable(_) => "file_server_unavailable",
            StoreError::HostKeyMismatch { .. } => "host_key_mismatch",
            StoreError::Auth(_) => "file_server_auth",
            StoreError::NoSpace(_) => "file_server_full",
            StoreError::InvalidPath(_) => "invalid_path",
            StoreError::Io(_) => "file_server_io",
        }
    }
}

/// Free and total space of the file system holding the node's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceInfo {
    pub total_bytes: u64,
    pub free_bytes: u64,
}

impl SpaceInfo {
    pub fn free_percent(&self) -> f64 {
        if self.total_bytes == 0 {
            0.0
        } else {
            self.free_bytes as f64 * 100.0 / self.total_bytes as f64
        }
    }
}

/// One entry of a directory listing (`.` and `..` left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
}

/// A stream of file bytes read from the store.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>;

/// A file server holding the node's directory.
#[async_trait]
pub trait FileStore: Send + Sync + 'static {
    /// The file server's name for `AFT_LOG.file_server` (its host for SFTP).
    fn server_name(&self) -> &str;

    /// The absolute path on the file server of `rel` (for `AFT_LOG.file_path`).
    fn absolute_path(&self, rel: &str) -> String;

    /// Lists directory `rel`; a missing directory lists as empty.
    async fn list_dir(&self, rel: &str) -> Result<Vec<DirEntry>, StoreError>;

    /// Starts an upload of `rel_dir/name`: creates `rel_dir` (and its parents) when missing and
    /// opens the temporary file `rel_dir/.name.part`.
    async fn create_upload(
        &self,
        rel_dir: &str,
        name: &str,
    ) -> Result<Box<dyn UploadSink>, StoreError>;

    /// Size in bytes of file `rel`.
    async fn size_of(&self, rel: &str) -> Result<u64, StoreError>;

    /// Streams `len` bytes of file `rel` from offset `start`.
    async fn read_range(&self, rel: &str, start: u64, len: u64) -> Result<ByteStream, StoreError>;

    /// Removes file `rel`.
    async fn remove(&self, rel: &str) -> Result<(), StoreError>;

    /// Free and total space where the node's directory lives.
    async fn space(&self) -> Result<SpaceInfo, StoreError>;

    /// Connects (verifying the host key and authenticating for SFTP) and checks that the
    /// node's directory exists and is writable, creating it when missing.
    async fn check(&self) -> Result<(), StoreError>;
}

/// An upload in progress. Dropping it without `commit` or `abort` removes the temporary file
/// in the background.
#[async_trait]
pub trait UploadSink: Send {
    /// Appends `data`. Returns once the bytes are handed to the server within the pipeline
    /// depth, so backpressure reaches the caller.
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError>;

    /// Waits for every write, syncs, closes, and renames the file to its final name.
    /// Returns the number of bytes written.
    async fn commit(self: Box<Self>) -> Result<u64, StoreError>;

    /// Closes and removes the temporary file.
    async fn abort(self: Box<Self>);
}

/// Rejects relative paths that could leave the node's directory. Layout builds every path the
/// stores see; this is the stores' own last check.
pub fn check_relative(rel: &str) -> Result<(), StoreError> {
    let bad = rel.is_empty()
        || rel.starts_with('/')
        || rel.contains('\0')
        || rel.contains('\\')
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        Err(StoreError::InvalidPath(rel.to_string()))
    } else {
        Ok(())
    }
}

/// The temporary name an upload of `name` is written under.
pub fn temp_name(name: &str) -> String {
    format!(".{name}.part")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_checked() {
        assert!(check_relative("files/im/20261203/17/abc").is_ok());
        for bad in ["", "/etc", "a/../b", "a//b", "a/./b", "a\0b", "..", "a\\b"] {
            assert!(check_relative(bad).is_err(), "{bad:?} accepted");
        }
    }
}
