//! Pipelined SFTP upload: the [`UploadSink`] that writes `.name.part` through a
//! [`WritePipeline`] on a leased share of a pooled connection, then syncs once, closes and
//! renames it into place (or removes it on abort or drop).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{Packet, StatusCode};

use super::pipeline::WritePipeline;
use super::pool::{Lease, classify};
use crate::store::{StoreError, UploadSink};

pub(crate) struct SftpUpload {
    /// The share of a connection, held for the upload's life; `None` once finished.
    lease: Option<Lease>,
    sftp: Arc<RawSftpSession>,
    broken: Arc<AtomicBool>,
    writes: WritePipeline,
    /// Absolute paths on the server.
    temp_path: String,
    final_path: String,
    failed: bool,
}

impl SftpUpload {
    pub(crate) fn new(
        lease: Lease,
        handle: String,
        temp_path: String,
        final_path: String,
        chunk: usize,
        depth: usize,
    ) -> SftpUpload {
        let sftp = lease.conn().sftp.clone();
        let broken = lease.conn().broken_flag();
        SftpUpload {
            writes: WritePipeline::new(sftp.clone(), handle, chunk, depth),
            lease: Some(lease),
            sftp,
            broken,
            temp_path,
            final_path,
            failed: false,
        }
    }

    fn err(&self, e: SftpError) -> StoreError {
        classify(&self.broken, e, &self.temp_path)
    }

    async fn commit_inner(&mut self) -> Result<u64, StoreError> {
        let written = self.writes.finish().await.map_err(|e| self.err(e))?;
        let handle = self.writes.handle().to_string();
        // The one sync of the upload: the file is durable before it gets its final name.
        match self.sftp.fsync(handle.clone()).await {
            Ok(_) => {}
            Err(SftpError::Status(s)) if s.status_code == StatusCode::OpUnsupported => {}
            Err(e) => return Err(self.err(e)),
        }
        self.writes.abandon();
        self.sftp.close(handle).await.map_err(|e| self.err(e))?;
        posix_rename(&self.sftp, &self.temp_path, &self.final_path)
            .await
            .map_err(|e| self.err(e))?;
        Ok(written)
    }

    /// Closes (if still open) and removes the temporary file, then gives the lease back.
    fn cleanup_future(&mut self) -> Option<BoxFuture<'static, ()>> {
        let lease = self.lease.take()?;
        let handle = self.writes.abandon();
        let sftp = self.sftp.clone();
        let temp = self.temp_path.clone();
        Some(Box::pin(async move {
            if !handle.is_empty() {
                let _ = sftp.close(handle).await;
            }
            let removed = sftp.remove(temp.clone()).await;
            let pool = lease.pool().clone();
            let dead = !lease.conn().is_alive();
            drop(lease);
            let result = match removed {
                Err(_) if dead => {
                    // The session died mid-upload: remove through a fresh connection.
                    match Lease::get(&pool).await {
                        Ok(fresh) => fresh.conn().sftp.remove(temp.clone()).await.map(|_| ()),
                        Err(e) => Err(SftpError::IO(e.to_string())),
                    }
                }
                other => other.map(|_| ()),
            };
            match result {
                Ok(()) => {}
                Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => {}
                Err(e) => {
                    tracing::warn!(path = %temp, error = %e, "Could not remove partial upload")
                }
            }
        }))
    }
}

/// `posix-rename@openssh.com`: replaces the target atomically (plain SFTP rename refuses to).
pub(crate) async fn posix_rename(
    sftp: &RawSftpSession,
    from: &str,
    to: &str,
) -> Result<(), SftpError> {
    let mut data = Vec::with_capacity(8 + from.len() + to.len());
    for s in [from, to] {
        data.extend_from_slice(&(s.len() as u32).to_be_bytes());
        data.extend_from_slice(s.as_bytes());
    }
    match sftp.extended("posix-rename@openssh.com", data).await? {
        Packet::Status(s) if s.status_code == StatusCode::Ok => Ok(()),
        Packet::Status(s) => Err(SftpError::Status(s)),
        _ => Err(SftpError::UnexpectedPacket),
    }
}

#[async_trait]
impl UploadSink for SftpUpload {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        if self.failed || self.lease.is_none() {
            return Err(StoreError::Io(format!(
                "{}: upload already failed",
                self.temp_path
            )));
        }
        let r = self.writes.write(data).await.map_err(|e| self.err(e));
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    async fn commit(mut self: Box<Self>) -> Result<u64, StoreError> {
        if self.failed {
            if let Some(cleanup) = self.cleanup_future() {
                cleanup.await;
            }
            return Err(StoreError::Io(format!(
                "{}: upload already failed",
                self.temp_path
            )));
        }
        match self.commit_inner().await {
            Ok(n) => {
                self.lease = None;
                Ok(n)
            }
            Err(e) => {
                if let Some(cleanup) = self.cleanup_future() {
                    cleanup.await;
                }
                Err(e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) {
        if let Some(cleanup) = self.cleanup_future() {
            cleanup.await;
        }
    }
}

impl Drop for SftpUpload {
    fn drop(&mut self) {
        if let Some(cleanup) = self.cleanup_future() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(cleanup);
                }
                Err(_) => tracing::warn!(
                    path = %self.temp_path,
                    "Upload dropped outside a runtime; its temporary file stays"
                ),
            }
        }
    }
}
