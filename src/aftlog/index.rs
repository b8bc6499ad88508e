//! `aft_index` generation: Snowflake-style 63-bit ids, unique across nodes sharing a database.
//!
//! Layout (most significant first): 41 bits of milliseconds since 2020-01-01 UTC (good until
//! 2089), 10 bits from a hash of the node id, 12 bits of sequence within the millisecond. Ids are
//! strictly increasing within a process even if the wall clock steps back: the generator keeps
//! its own logical millisecond, never below the last one used.

use std::sync::Mutex;

use chrono::Utc;

/// 2020-01-01T00:00:00Z in Unix milliseconds.
const EPOCH_MS: i64 = 1_577_836_800_000;
const NODE_BITS: u32 = 10;
const SEQ_BITS: u32 = 12;
const SEQ_MAX: u16 = (1 << SEQ_BITS) - 1;
const TIME_MAX: i64 = (1 << 41) - 1;

/// Generates the ids of one node.
#[derive(Debug)]
pub(crate) struct IndexGen {
    node_bits: i64,
    /// (logical ms since [`EPOCH_MS`], last sequence used). A std mutex: held for a few
    /// instructions, never across an await.
    state: Mutex<(i64, u16)>,
}

impl IndexGen {
    /// `node_index` (0..=1023, from `database.node_index`) when set, else a hash of `node_id`.
    pub(crate) fn new(node_id: &str, node_index: Option<u16>) -> IndexGen {
        IndexGen {
            node_bits: node_index
                .map(|i| i64::from(i) & ((1 << NODE_BITS) - 1))
                .unwrap_or_else(|| node_hash(node_id)),
            state: Mutex::new((0, 0)),
        }
    }

    /// The next id. Never blocks for more than a millisecond.
    pub(crate) fn next(&self) -> i64 {
        self.next_at(Utc::now().timestamp_millis() - EPOCH_MS)
    }

    fn next_at(&self, mut now: i64) -> i64 {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (last, seq) = *guard;
        let (ms, seq) = loop {
            if now > last {
                break (now, 0);
            }
            if seq < SEQ_MAX {
                // Same millisecond, or the clock stepped back: continue on the logical clock.
                break (last, seq + 1);
            }
            // 4096 ids used in this millisecond: wait for the next one if the wall clock is
            // about to get there; if the clock is far behind (stepped back), move the logical
            // clock forward by one instead of waiting for the wall clock to catch up.
            if last - now >= 1 {
                break (last + 1, 0);
            }
            std::thread::yield_now();
            now = Utc::now().timestamp_millis() - EPOCH_MS;
        };
        *guard = (ms, seq);
        ((ms & TIME_MAX) << (NODE_BITS + SEQ_BITS)) | (self.node_bits << SEQ_BITS) | i64::from(seq)
    }
}

/// 10 bits of FNV-1a of the node id: stable across builds and platforms.
fn node_hash(node_id: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Fold the whole hash so every byte of the id counts.
    let folded = h ^ (h >> 10) ^ (h >> 20) ^ (h >> 30) ^ (h >> 40) ^ (h >> 50) ^ (h >> 60);
    (folded & ((1 << NODE_BITS) - 1)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_positive_increasing_and_carry_the_node() {
        let g = IndexGen::new("node1", None);
        let mut prev = 0;
        for _ in 0..20_000 {
            let id = g.next();
            assert!(id > prev, "{id} after {prev}");
            assert_eq!((id >> SEQ_BITS) & 0x3ff, node_hash("node1"));
            prev = id;
        }
    }

    #[test]
    fn clock_stepping_back_keeps_ids_increasing() {
        let g = IndexGen::new("n", None);
        let a = g.next_at(1_000_000);
        let b = g.next_at(999_000);
        assert!(b > a);
        // Exhaust the sequence on a clock stuck in the past: the logical clock moves on.
        let mut prev = b;
        for _ in 0..10_000 {
            let id = g.next_at(999_000);
            assert!(id > prev);
            prev = id;
        }
        assert!(prev >> (NODE_BITS + SEQ_BITS) > 1_000_000);
    }

    #[test]
    fn different_nodes_usually_differ() {
        assert_ne!(node_hash("node1"), node_hash("node2"));
        assert_ne!(node_hash("a"), node_hash("b"));
    }

    #[test]
    fn time_field_starts_in_2020() {
        let g = IndexGen::new("n", None);
        let id = g.next_at(0);
        assert_eq!(id >> (NODE_BITS + SEQ_BITS), 0);
        assert!(g.next() > 0);
    }
}
