//! The write side of a transfer, independent of the pool (so benches can drive it over an
//! in-process session): [`Chunker`] cuts body frames into chunk-sized pieces, slicing the
//! frames' `Bytes` where a frame holds a whole chunk and coalescing only small frames;
//! [`WritePipeline`] sends the pieces as `SSH_FXP_WRITE`s with at most `depth` in flight, so
//! the memory an upload holds is bounded by depth x chunk whatever the file size, and the
//! caller (the HTTP body) waits when the file server falls behind. [`read_stream`] is the
//! download side (pipelined READs) on a session of its own.

use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;

/// Cuts a byte stream into pieces of exactly `chunk` bytes (the last one shorter).
#[derive(Debug)]
pub struct Chunker {
    chunk: usize,
    /// Small frames collected until a whole chunk is there; empty otherwise.
    pending: Vec<u8>,
}

impl Chunker {
    pub fn new(chunk: usize) -> Chunker {
        Chunker {
            chunk: chunk.max(1),
            pending: Vec::new(),
        }
    }

    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// Bytes held back waiting for a whole chunk.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// Takes the next whole chunk out of `data`, or keeps what is left of `data` (less than a
    /// chunk) and returns `None`. A chunk lying wholly inside `data` is a slice of it, not a
    /// copy; a chunk made of several frames is copied once into a buffer of its own.
    pub fn next_chunk(&mut self, data: &mut Bytes) -> Option<Bytes> {
        while !data.is_empty() {
            if self.pending.is_empty() && data.len() >= self.chunk {
                return Some(data.split_to(self.chunk));
            }
            if self.pending.capacity() == 0 {
                self.pending.reserve_exact(self.chunk);
            }
            let take = (self.chunk - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data.advance(take);
            if self.pending.len() == self.chunk {
                return Some(Bytes::from(std::mem::take(&mut self.pending)));
            }
        }
        None
    }

    /// The bytes held back, as the last (short) chunk.
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.pending.is_empty()).then(|| Bytes::from(std::mem::take(&mut self.pending)))
    }
}

/// A pipelined download of `len` bytes from `start` of an open handle, with up to `depth`
/// READs of `chunk` bytes in flight, yielding data in file order; closes the handle when done.
pub fn read_stream(
    sftp: Arc<RawSftpSession>,
    handle: String,
    start: u64,
    len: u64,
    chunk: u32,
    depth: usize,
) -> crate::store::ByteStream {
    Box::pin(super::download::SftpRead::new(
        None,
        sftp,
        handle,
        "(stream)".to_string(),
        (start, len),
        (chunk, depth),
    ))
}

type WriteFuture = BoxFuture<'static, Result<(), SftpError>>;

/// Pipelined WRITEs to one open handle. Errors are the session's; the caller classifies them.
pub struct WritePipeline {
    sftp: Arc<RawSftpSession>,
    handle: String,
    /// Offset of the next WRITE (bytes handed to requests so far).
    offset: u64,
    chunker: Chunker,
    depth: usize,
    inflight: FuturesUnordered<WriteFuture>,
}

impl WritePipeline {
    pub fn new(sftp: Arc<RawSftpSession>, handle: String, chunk: usize, depth: usize) -> Self {
        WritePipeline {
            sftp,
            handle,
            offset: 0,
            chunker: Chunker::new(chunk),
            depth: depth.max(1),
            inflight: FuturesUnordered::new(),
        }
    }

    pub fn handle(&self) -> &str {
        &self.handle
    }

    /// Bytes handed to WRITE requests so far.
    pub fn sent(&self) -> u64 {
        self.offset
    }

    /// Appends `data`: sends every whole chunk, waiting while `depth` WRITEs are in flight.
    /// Returns with the remainder (less than a chunk) held back.
    pub async fn write(&mut self, mut data: Bytes) -> Result<(), SftpError> {
        while let Some(piece) = self.chunker.next_chunk(&mut data) {
            self.wait_below(self.depth).await?;
            self.send(piece)?;
        }
        Ok(())
    }

    /// Sends what is held back and waits for every WRITE. Returns the bytes written.
    pub async fn finish(&mut self) -> Result<u64, SftpError> {
        if let Some(rest) = self.chunker.finish() {
            self.wait_below(self.depth).await?;
            self.send(rest)?;
        }
        self.wait_below(1).await?;
        Ok(self.offset)
    }

    /// Forgets the WRITEs in flight (their replies are ignored) and returns the handle.
    pub fn abandon(&mut self) -> String {
        self.inflight = FuturesUnordered::new();
        std::mem::take(&mut self.handle)
    }

    /// Queues one WRITE; the request goes out on the future's first poll, just below.
    fn send(&mut self, piece: Bytes) -> Result<(), SftpError> {
        let len = piece.len() as u64;
        let sftp = self.sftp.clone();
        let handle = self.handle.clone();
        let offset = self.offset;
        // russh-sftp's public write takes a Vec: free for a chunk the chunker assembled
        // (uniquely owned), one copy for a slice of a body frame.
        let data = Vec::from(piece);
        self.inflight.push(Box::pin(async move {
            sftp.write(handle, offset, data).await.map(|_| ())
        }));
        self.offset += len;
        self.reap_ready()
    }

    /// Collects finished WRITEs without waiting (and sends newly queued ones).
    fn reap_ready(&mut self) -> Result<(), SftpError> {
        while let Some(Some(done)) = self.inflight.next().now_or_never() {
            done?;
        }
        Ok(())
    }

    /// Waits until fewer than `depth` WRITEs are in flight.
    async fn wait_below(&mut self, depth: usize) -> Result<(), SftpError> {
        while self.inflight.len() >= depth.max(1) {
            match self.inflight.next().await {
                Some(done) => done?,
                None => break,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(chunk: usize, frames: &[usize]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut c = Chunker::new(chunk);
        let mut all = Vec::new();
        let mut out = Vec::new();
        let mut n = 0u8;
        for &len in frames {
            let frame: Vec<u8> = (0..len)
                .map(|_| {
                    n = n.wrapping_add(7);
                    n
                })
                .collect();
            all.extend_from_slice(&frame);
            let mut data = Bytes::from(frame);
            while let Some(p) = c.next_chunk(&mut data) {
                out.push(p.to_vec());
            }
            assert!(data.is_empty());
            assert!(c.buffered() < chunk);
        }
        if let Some(p) = c.finish() {
            out.push(p.to_vec());
        }
        (out, all)
    }

    #[test]
    fn chunks_are_exact_and_in_order() {
        for (chunk, frames) in [
            (4, vec![1, 1, 1, 1, 1]),
            (4, vec![3, 3, 3, 3]),
            (4, vec![12]),
            (4, vec![13, 2]),
            (5, vec![0, 9, 0, 1, 4, 11]),
            (1, vec![3, 2]),
        ] {
            let (out, all) = pieces(chunk, &frames);
            let (last, whole) = out.split_last().expect("some output");
            assert!(whole.iter().all(|p| p.len() == chunk), "{chunk} {frames:?}");
            assert!(!last.is_empty() && last.len() <= chunk);
            assert_eq!(out.concat(), all, "{chunk} {frames:?}");
        }
        assert!(pieces(4, &[]).0.is_empty());
    }

    #[test]
    fn whole_chunks_are_slices_of_the_frame() {
        let frame = Bytes::from(vec![1u8; 10]);
        let base = frame.as_ptr();
        let mut data = frame.clone();
        let mut c = Chunker::new(4);
        let a = c.next_chunk(&mut data).expect("first");
        let b = c.next_chunk(&mut data).expect("second");
        assert_eq!((a.as_ptr(), b.as_ptr()), (base, base.wrapping_add(4)));
        assert!(c.next_chunk(&mut data).is_none());
        assert_eq!(c.buffered(), 2);
    }
}
