//! Generated upload bodies: streams of pseudo-random bytes, never files on disk.
//!
//! One block of random bytes is made once and shared; a body is a sequence of zero-copy slices of
//! it, starting at an offset chosen per file so that files differ. A 4 GiB body costs no more
//! memory than the block.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::Stream;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

/// Bytes per chunk handed to the HTTP client.
pub const CHUNK: usize = 64 * 1024;

/// Distinct starting offsets; the block is this much longer than a chunk.
const OFFSETS: usize = 64 * 1024;

/// The shared source of body bytes.
#[derive(Clone)]
pub struct Payload {
    block: Bytes,
}

impl Payload {
    pub fn new(seed: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut block = vec![0u8; CHUNK + OFFSETS];
        rng.fill_bytes(&mut block);
        Payload {
            block: Bytes::from(block),
        }
    }

    /// The chunks of a body of `len` bytes for file number `file`.
    pub fn chunks(&self, len: u64, file: u64) -> Chunks {
        Chunks {
            block: self.block.clone(),
            offset: (file.wrapping_mul(7919) % OFFSETS as u64) as usize,
            remaining: len,
        }
    }

    /// The body of `len` bytes for file number `file`, as a stream.
    pub fn stream(
        &self,
        len: u64,
        file: u64,
    ) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        futures_util::stream::iter(self.chunks(len, file).map(Ok))
    }

    /// The SHA-256 (hex) of the body `stream(len, file)` yields.
    pub fn sha256(&self, len: u64, file: u64) -> String {
        let mut h = Sha256::new();
        for chunk in self.chunks(len, file) {
            h.update(&chunk);
        }
        hex::encode(h.finalize())
    }
}

/// Iterator over a generated body's chunks.
pub struct Chunks {
    block: Bytes,
    offset: usize,
    remaining: u64,
}

impl Iterator for Chunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.remaining == 0 {
            return None;
        }
        let n = (self.remaining.min(CHUNK as u64)) as usize;
        self.remaining -= n as u64;
        Some(self.block.slice(self.offset..self.offset + n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_exact_length() {
        let p = Payload::new(1);
        for len in [0u64, 1, 65_535, 65_536, 65_537, 1_000_000] {
            let total: u64 = p.chunks(len, 3).map(|c| c.len() as u64).sum();
            assert_eq!(total, len);
        }
    }

    #[test]
    fn files_differ_and_hashes_are_stable() {
        let p = Payload::new(1);
        assert_ne!(p.sha256(1000, 1), p.sha256(1000, 2));
        assert_eq!(p.sha256(1000, 1), Payload::new(1).sha256(1000, 1));
    }
}
