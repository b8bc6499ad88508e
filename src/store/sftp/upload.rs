//! Pipelined SFTP upload: the [`UploadSink`] that writes `.name.part` with many WRITE requests
//! in flight, then syncs, closes and renames it into place (or removes it on abort or drop).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{Packet, StatusCode};

use super::pool::{Checkout, classify};
use crate::store::{StoreError, UploadSink};

type WriteFuture = BoxFuture<'static, Result<(), SftpError>>;

pub(crate) struct SftpUpload {
    /// The connection, held for the upload's life; `None` once finished.
    conn: Option<Checkout>,
    sftp: Arc<RawSftpSession>,
    broken: Arc<AtomicBool>,
    handle: String,
    /// Absolute paths on the server.
    temp_path: String,
    final_path: String,
    /// Bytes handed to WRITE requests so far (the offset of the next one).
    offset: u64,
    /// Small frames collected until a whole chunk can be sent.
    pending: Vec<u8>,
    chunk: usize,
    depth: usize,
    inflight: FuturesUnordered<WriteFuture>,
    failed: bool,
}

impl SftpUpload {
    pub(crate) fn new(
        conn: Checkout,
        handle: String,
        temp_path: String,
        final_path: String,
        chunk: usize,
        depth: usize,
    ) -> SftpUpload {
        let sftp = conn.conn().sftp.clone();
        let broken = conn.conn().broken_flag();
        SftpUpload {
            conn: Some(conn),
            sftp,
            broken,
            handle,
            temp_path,
            final_path,
            offset: 0,
            pending: Vec::new(),
            chunk,
            depth,
            inflight: FuturesUnordered::new(),
            failed: false,
        }
    }

    fn err(&self, e: SftpError) -> StoreError {
        classify(&self.broken, e, &self.temp_path)
    }

    /// Queues one WRITE and sends it (the request goes out on the future's first poll).
    fn send(&mut self, data: Vec<u8>) -> Result<(), StoreError> {
        let len = data.len() as u64;
        let sftp = self.sftp.clone();
        let handle = self.handle.clone();
        let offset = self.offset;
        self.inflight.push(Box::pin(async move {
            sftp.write(handle, offset, data).await.map(|_| ())
        }));
        self.offset += len;
        self.reap_ready()
    }

    /// Collects finished writes without waiting; sends newly queued ones.
    fn reap_ready(&mut self) -> Result<(), StoreError> {
        while let Some(Some(done)) = self.inflight.next().now_or_never() {
            done.map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Waits until fewer than `depth` writes are in flight.
    async fn wait_below(&mut self, depth: usize) -> Result<(), StoreError> {
        while self.inflight.len() >= depth.max(1) {
            match self.inflight.next().await {
                Some(done) => done.map_err(|e| self.err(e))?,
                None => break,
            }
        }
        Ok(())
    }

    async fn write_inner(&mut self, mut data: Bytes) -> Result<(), StoreError> {
        while !data.is_empty() {
            if self.pending.is_empty() && data.len() >= self.chunk {
                // A whole chunk straight from the frame. russh-sftp's public write takes a
                // Vec, so this is the one copy (none when the frame is uniquely owned).
                let piece = data.split_to(self.chunk);
                self.wait_below(self.depth).await?;
                self.send(Vec::from(piece))?;
                continue;
            }
            if self.pending.capacity() == 0 {
                self.pending.reserve_exact(self.chunk);
            }
            let take = (self.chunk - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data.split_to(take));
            if self.pending.len() == self.chunk {
                let full = std::mem::take(&mut self.pending);
                self.wait_below(self.depth).await?;
                self.send(full)?;
            }
        }
        Ok(())
    }

    async fn commit_inner(&mut self) -> Result<u64, StoreError> {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.wait_below(self.depth).await?;
            self.send(rest)?;
        }
        self.wait_below(1).await?;
        match self.sftp.fsync(self.handle.clone()).await {
            Ok(_) => {}
            Err(SftpError::Status(s)) if s.status_code == StatusCode::OpUnsupported => {}
            Err(e) => return Err(self.err(e)),
        }
        let closed = self.sftp.close(self.handle.clone()).await;
        self.handle.clear();
        closed.map_err(|e| self.err(e))?;
        posix_rename(&self.sftp, &self.temp_path, &self.final_path)
            .await
            .map_err(|e| self.err(e))?;
        Ok(self.offset)
    }

    /// Closes (if still open) and removes the temporary file, then returns the connection.
    fn cleanup_future(&mut self) -> Option<BoxFuture<'static, ()>> {
        let conn = self.conn.take()?;
        self.inflight = FuturesUnordered::new();
        let sftp = self.sftp.clone();
        let handle = std::mem::take(&mut self.handle);
        let temp = self.temp_path.clone();
        Some(Box::pin(async move {
            if !handle.is_empty() {
                let _ = sftp.close(handle).await;
            }
            let removed = sftp.remove(temp.clone()).await;
            let pool = conn.pool().clone();
            let dead = !conn.conn().is_alive();
            drop(conn);
            let result = match removed {
                Err(_) if dead => {
                    // The session died mid-upload: remove through a fresh connection.
                    match Checkout::get(&pool).await {
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
        if self.failed || self.conn.is_none() {
            return Err(StoreError::Io(format!(
                "{}: upload already failed",
                self.temp_path
            )));
        }
        let r = self.write_inner(data).await;
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
                self.conn = None;
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
