//! Pipelined SFTP download: a [`ByteStream`] keeping up to `depth` READ requests in flight and
//! yielding their data in file order; short reads are re-requested, and dropping the stream
//! closes the remote handle.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, StreamExt};
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::StatusCode;

use super::pool::{Lease, classify};
use crate::store::StoreError;

/// One READ in flight: its offset, requested length, and the reply.
type ReadFuture = BoxFuture<'static, (u64, u32, Result<Vec<u8>, SftpError>)>;

pub(crate) struct SftpRead {
    /// The share of a pooled connection, given back when the stream ends (`None` for a
    /// stream on a session of its own, as in the benches).
    lease: Option<Lease>,
    sftp: Arc<RawSftpSession>,
    broken: Arc<AtomicBool>,
    handle: String,
    path: String,
    /// Offset of the next READ to queue.
    next: u64,
    /// End of the range (exclusive).
    end: u64,
    chunk: u32,
    depth: usize,
    inflight: FuturesOrdered<ReadFuture>,
    /// Gaps left by short reads, requested before anything further.
    gaps: VecDeque<(u64, u32)>,
    done: bool,
}

impl SftpRead {
    pub(crate) fn new(
        lease: Option<Lease>,
        sftp: Arc<RawSftpSession>,
        handle: String,
        path: String,
        (start, len): (u64, u64),
        (chunk, depth): (u32, usize),
    ) -> SftpRead {
        let broken = match &lease {
            Some(l) => l.conn().broken_flag(),
            None => Arc::new(AtomicBool::new(false)),
        };
        SftpRead {
            lease,
            sftp,
            broken,
            handle,
            path,
            next: start,
            end: start.saturating_add(len),
            chunk: chunk.max(1),
            depth: depth.max(1),
            inflight: FuturesOrdered::new(),
            gaps: VecDeque::new(),
            done: len == 0,
        }
    }

    fn read_future(&self, offset: u64, len: u32) -> ReadFuture {
        let sftp = self.sftp.clone();
        let handle = self.handle.clone();
        Box::pin(async move {
            let r = sftp.read(handle, offset, len).await.map(|d| d.data);
            (offset, len, r)
        })
    }

    /// Tops the pipeline up to `depth` requests.
    fn fill(&mut self) {
        while self.inflight.len() < self.depth && self.next < self.end {
            let len = (self.end - self.next).min(u64::from(self.chunk)) as u32;
            let fut = self.read_future(self.next, len);
            self.inflight.push_back(fut);
            self.next += u64::from(len);
        }
    }

    /// Ends the stream: closes the remote handle in the background and gives the lease back.
    fn finish(&mut self) {
        self.done = true;
        self.inflight = FuturesOrdered::new();
        if self.handle.is_empty() {
            return;
        }
        let lease = self.lease.take();
        let sftp = self.sftp.clone();
        let handle = std::mem::take(&mut self.handle);
        let close = async move {
            let _ = sftp.close(handle).await;
            drop(lease);
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(close);
        }
    }
}

impl Stream for SftpRead {
    type Item = Result<Bytes, StoreError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        while let Some((off, len)) = this.gaps.pop_front() {
            let fut = this.read_future(off, len);
            this.inflight.push_front(fut);
        }
        this.fill();
        match this.inflight.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some((off, want, Ok(data)))) => {
                let got = data.len();
                if got == 0 {
                    this.finish();
                    return Poll::Ready(Some(Err(StoreError::Io(format!(
                        "{}: the file ended at {off} bytes, before the requested range",
                        this.path
                    )))));
                }
                if got < want as usize {
                    // Short read: ask for the rest before anything later is delivered.
                    this.gaps.push_back((off + got as u64, want - got as u32));
                } else if got > want as usize {
                    this.finish();
                    return Poll::Ready(Some(Err(StoreError::Io(format!(
                        "{}: the server returned more data than requested",
                        this.path
                    )))));
                }
                Poll::Ready(Some(Ok(Bytes::from(data))))
            }
            Poll::Ready(Some((off, _, Err(e)))) => {
                let err = match e {
                    SftpError::Status(s) if s.status_code == StatusCode::Eof => {
                        StoreError::Io(format!(
                            "{}: the file ended at {off} bytes, before the requested range",
                            this.path
                        ))
                    }
                    e => classify(&this.broken, e, &this.path),
                };
                this.finish();
                Poll::Ready(Some(Err(err)))
            }
        }
    }
}

impl Drop for SftpRead {
    fn drop(&mut self) {
        self.finish();
    }
}
