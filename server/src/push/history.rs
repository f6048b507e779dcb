//! Bounded history: per key (a topic, `"*"` for broadcasts, or a client id for its inbox) a ring
//! of the last frames pushed, held by the key's owner shard. A held frame is the very `Bytes`
//! the owner encoded and handed to the shards (one more reference, never a second copy).
//!
//! Bounds, all checked on every insert: messages, bytes and age per key, and bytes across every
//! key of the shard (the oldest frame of the shard goes first, whatever its key). A limit of 0
//! turns history off. Age is also enforced on reads, so an expired frame is never replayed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Bookkeeping a held frame costs beyond its bytes: its ring entry (seq, time, `Bytes`
/// handle) and its place in the shard-wide order (key handle and seq). Counted against the byte
/// limits so that many tiny frames cannot hold more memory than the limits say.
pub(crate) const ENTRY_OVERHEAD_BYTES: usize =
    std::mem::size_of::<Entry>() + std::mem::size_of::<(Arc<str>, u64)>();

/// The limits of one [`History`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HistoryLimits {
    pub max_messages: usize,
    pub max_bytes: usize,
    pub max_age: Duration,
    pub max_bytes_per_shard: usize,
}

impl HistoryLimits {
    /// Any limit at 0 turns history off.
    pub(crate) fn enabled(&self) -> bool {
        self.max_messages > 0
            && self.max_bytes > 0
            && !self.max_age.is_zero()
            && self.max_bytes_per_shard > 0
    }
}

struct Entry {
    seq: u64,
    at: Instant,
    frame: Bytes,
}

impl Entry {
    fn cost(&self) -> usize {
        self.frame.len() + ENTRY_OVERHEAD_BYTES
    }
}

#[derive(Default)]
struct Ring {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl Ring {
    /// Drops the oldest frame; returns what it cost (the caller's totals drop by as much).
    fn pop_oldest(&mut self) -> Option<usize> {
        let cost = self.entries.pop_front()?.cost();
        self.bytes -= cost;
        Some(cost)
    }
}

/// What a key's history holds after a given sequence number.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Since {
    /// Every frame after the asked-for seq, oldest first (empty when nothing is missed).
    Complete(Vec<Bytes>),
    /// The window no longer reaches back that far; `oldest_seq` is the oldest still held (0:
    /// none).
    Gap { oldest_seq: u64 },
}

/// One shard's rings (see the module comment).
pub(crate) struct History {
    limits: HistoryLimits,
    rings: HashMap<Arc<str>, Ring>,
    /// Every held frame as (key, seq), oldest first, for the shard-wide bound and age. Entries
    /// already evicted by a per-key bound stay here until they reach the front (skipped) or a
    /// compaction drops them.
    order: VecDeque<(Arc<str>, u64)>,
    held_bytes: usize,
    held_messages: usize,
}

impl History {
    pub(crate) fn new(limits: HistoryLimits) -> History {
        History {
            limits,
            rings: HashMap::new(),
            order: VecDeque::new(),
            held_bytes: 0,
            held_messages: 0,
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.limits.enabled()
    }

    /// Bytes held across every key (frames plus [`ENTRY_OVERHEAD_BYTES`] each).
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    #[cfg(test)]
    pub(crate) fn held_messages(&self) -> usize {
        self.held_messages
    }

    /// Holds `frame` as `key`'s message `seq` (seqs of one key must grow), then evicts what the
    /// bounds no longer allow. A frame bigger than a key's byte bound is not held.
    pub(crate) fn record(&mut self, key: &str, seq: u64, frame: Bytes, now: Instant) {
        if !self.enabled() {
            return;
        }
        let entry = Entry {
            seq,
            at: now,
            frame,
        };
        let cost = entry.cost();
        if cost > self.limits.max_bytes || cost > self.limits.max_bytes_per_shard {
            return;
        }
        let name: Arc<str> = match self.rings.get_key_value(key) {
            Some((name, _)) => name.clone(),
            None => Arc::from(key),
        };
        let ring = self.rings.entry(name.clone()).or_default();
        debug_assert!(ring.entries.back().is_none_or(|last| last.seq < seq));
        ring.entries.push_back(entry);
        ring.bytes += cost;
        self.held_bytes += cost;
        self.held_messages += 1;
        self.order.push_back((name, seq));
        let (max_messages, max_bytes) = (self.limits.max_messages, self.limits.max_bytes);
        let mut evicted = (0, 0);
        while ring.entries.len() > max_messages || ring.bytes > max_bytes {
            let cost = ring.pop_oldest().expect("over a bound, so not empty");
            evicted.0 += 1;
            evicted.1 += cost;
        }
        self.held_messages -= evicted.0;
        self.held_bytes -= evicted.1;
        self.evict_shard_wide(now);
        self.compact_order();
    }

    /// Drops the oldest frames of the shard while over the shard-wide byte bound, and any frame
    /// older than the age bound (the order is oldest first, so both stop at the first keeper).
    fn evict_shard_wide(&mut self, now: Instant) {
        while let Some((key, seq)) = self.order.front() {
            let Some(ring) = self.rings.get_mut(key) else {
                self.order.pop_front();
                continue;
            };
            let live = ring.entries.front().filter(|entry| entry.seq == *seq);
            let Some(entry) = live else {
                // Already evicted by its key's own bounds.
                self.order.pop_front();
                continue;
            };
            let expired = now.saturating_duration_since(entry.at) >= self.limits.max_age;
            if !expired && self.held_bytes <= self.limits.max_bytes_per_shard {
                break;
            }
            let cost = ring.pop_oldest().expect("its front was just read");
            self.held_bytes -= cost;
            self.held_messages -= 1;
            if ring.entries.is_empty() {
                self.rings.remove(key);
            }
            self.order.pop_front();
        }
    }

    /// Keeps the order queue within twice the frames held (plus slack), so stale entries
    /// stuck behind an old keeper cannot grow it without bound. Amortized O(log n) per insert:
    /// a ring's seqs are sorted, and a pass at least halves the queue.
    fn compact_order(&mut self) {
        if self.order.len() <= 2 * self.held_messages + 1024 {
            return;
        }
        let rings = &self.rings;
        self.order.retain(|(key, seq)| {
            rings
                .get(key)
                .is_some_and(|ring| ring.entries.binary_search_by_key(seq, |e| e.seq).is_ok())
        });
    }

    /// Drops `key`'s frames older than the age bound.
    fn expire(&mut self, key: &str, now: Instant) {
        let max_age = self.limits.max_age;
        let Some(ring) = self.rings.get_mut(key) else {
            return;
        };
        while let Some(entry) = ring.entries.front() {
            if now.saturating_duration_since(entry.at) < max_age {
                break;
            }
            let cost = ring.pop_oldest().expect("its front was just read");
            self.held_bytes -= cost;
            self.held_messages -= 1;
        }
        if ring.entries.is_empty() {
            self.rings.remove(key);
        }
    }

    /// The oldest seq held for `key` (0: none).
    pub(crate) fn oldest_seq(&mut self, key: &str, now: Instant) -> u64 {
        self.expire(key, now);
        self.rings
            .get(key)
            .and_then(|ring| ring.entries.front())
            .map_or(0, |entry| entry.seq)
    }

    /// The frames of `key` after `after_seq` up to `last_seq` (the key's latest seq), if the
    /// history still holds every one of them.
    pub(crate) fn since(
        &mut self,
        key: &str,
        after_seq: u64,
        last_seq: u64,
        now: Instant,
    ) -> Since {
        self.expire(key, now);
        let ring = self.rings.get(key);
        let oldest_seq = ring
            .and_then(|ring| ring.entries.front())
            .map_or(0, |entry| entry.seq);
        if after_seq >= last_seq {
            return Since::Complete(Vec::new());
        }
        match ring {
            Some(ring) if oldest_seq <= after_seq + 1 => Since::Complete(
                ring.entries
                    .iter()
                    .filter(|entry| entry.seq > after_seq)
                    .map(|entry| entry.frame.clone())
                    .collect(),
            ),
            _ => Since::Gap { oldest_seq },
        }
    }

    /// Removes and returns every frame held for `key`, oldest first (a client's inbox on
    /// reconnect).
    pub(crate) fn take(&mut self, key: &str, now: Instant) -> Vec<Bytes> {
        self.expire(key, now);
        let Some(ring) = self.rings.remove(key) else {
            return Vec::new();
        };
        self.held_bytes -= ring.bytes;
        self.held_messages -= ring.entries.len();
        ring.entries.into_iter().map(|entry| entry.frame).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_messages: usize, max_bytes: usize, max_bytes_per_shard: usize) -> HistoryLimits {
        HistoryLimits {
            max_messages,
            max_bytes,
            max_age: Duration::from_secs(60),
            max_bytes_per_shard,
        }
    }

    fn frame(seq: u64, len: usize) -> Bytes {
        let mut bytes = vec![0u8; len];
        bytes[..8].copy_from_slice(&seq.to_le_bytes());
        Bytes::from(bytes)
    }

    fn seqs(frames: &[Bytes]) -> Vec<u64> {
        frames
            .iter()
            .map(|f| u64::from_le_bytes(f[..8].try_into().unwrap()))
            .collect()
    }

    fn complete(since: Since) -> Vec<u64> {
        match since {
            Since::Complete(frames) => seqs(&frames),
            gap => panic!("expected the frames, got {gap:?}"),
        }
    }

    #[test]
    fn replays_exactly_what_follows_the_resume_point() {
        let now = Instant::now();
        let mut history = History::new(limits(8, 1 << 20, 1 << 20));
        for seq in 1..=5 {
            history.record("a", seq, frame(seq, 16), now);
        }
        assert_eq!(complete(history.since("a", 2, 5, now)), [3, 4, 5]);
        assert_eq!(complete(history.since("a", 0, 5, now)), [1, 2, 3, 4, 5]);
        assert!(complete(history.since("a", 5, 5, now)).is_empty());
        assert_eq!(history.since("b", 0, 3, now), Since::Gap { oldest_seq: 0 });
    }

    #[test]
    fn the_message_bound_evicts_oldest_and_reports_the_gap() {
        let now = Instant::now();
        let mut history = History::new(limits(3, 1 << 20, 1 << 20));
        for seq in 1..=10 {
            history.record("a", seq, frame(seq, 16), now);
        }
        assert_eq!(history.held_messages(), 3);
        assert_eq!(complete(history.since("a", 7, 10, now)), [8, 9, 10]);
        assert_eq!(history.since("a", 6, 10, now), Since::Gap { oldest_seq: 8 });
    }

    #[test]
    fn the_byte_bound_per_key_evicts_oldest() {
        let now = Instant::now();
        let cost = 100 + ENTRY_OVERHEAD_BYTES;
        let mut history = History::new(limits(100, 2 * cost, 1 << 20));
        for seq in 1..=4 {
            history.record("a", seq, frame(seq, 100), now);
        }
        assert_eq!(history.held_bytes(), 2 * cost);
        assert_eq!(history.oldest_seq("a", now), 3);
        // A frame over the key's bound is not held at all.
        history.record("a", 5, frame(5, 3 * cost), now);
        assert_eq!(history.oldest_seq("a", now), 3);
    }

    #[test]
    fn the_shard_bound_evicts_the_oldest_of_any_key() {
        let now = Instant::now();
        let cost = 100 + ENTRY_OVERHEAD_BYTES;
        let mut history = History::new(limits(100, 1 << 20, 3 * cost));
        history.record("a", 1, frame(1, 100), now);
        history.record("b", 1, frame(1, 100), now);
        history.record("a", 2, frame(2, 100), now);
        history.record("b", 2, frame(2, 100), now);
        assert_eq!(history.held_bytes(), 3 * cost);
        assert_eq!(
            history.oldest_seq("a", now),
            2,
            "a's first frame was oldest"
        );
        assert_eq!(history.oldest_seq("b", now), 1);
        history.record("c", 1, frame(1, 100), now);
        assert_eq!(history.oldest_seq("b", now), 2);
    }

    #[test]
    fn frames_older_than_the_age_bound_are_gone() {
        let start = Instant::now();
        let mut history = History::new(HistoryLimits {
            max_age: Duration::from_millis(100),
            ..limits(100, 1 << 20, 1 << 20)
        });
        history.record("a", 1, frame(1, 16), start);
        history.record("b", 1, frame(1, 16), start);
        let later = start + Duration::from_millis(150);
        history.record("a", 2, frame(2, 16), later);
        assert_eq!(history.held_messages(), 1, "b's old frame went too");
        assert_eq!(
            history.since("a", 0, 2, later),
            Since::Gap { oldest_seq: 2 }
        );
        assert_eq!(complete(history.since("a", 1, 2, later)), [2]);
    }

    #[test]
    fn a_zero_limit_turns_history_off() {
        let now = Instant::now();
        let mut history = History::new(limits(0, 1 << 20, 1 << 20));
        history.record("a", 1, frame(1, 16), now);
        assert_eq!(history.held_messages(), 0);
        assert_eq!(history.since("a", 0, 1, now), Since::Gap { oldest_seq: 0 });
    }

    #[test]
    fn the_order_queue_stays_bounded_behind_an_old_keeper() {
        let now = Instant::now();
        let mut history = History::new(limits(2, 1 << 20, 1 << 30));
        history.record("old", 1, frame(1, 16), now);
        for seq in 1..=10_000 {
            history.record("busy", seq, frame(seq, 16), now);
        }
        assert_eq!(history.held_messages(), 3);
        assert!(history.order.len() <= 2 * 3 + 1024 + 1);
        assert_eq!(history.oldest_seq("old", now), 1);
    }

    #[test]
    fn take_empties_a_key() {
        let now = Instant::now();
        let mut history = History::new(limits(8, 1 << 20, 1 << 20));
        history.record("alice", 1, frame(1, 16), now);
        history.record("alice", 2, frame(2, 16), now);
        assert_eq!(seqs(&history.take("alice", now)), [1, 2]);
        assert!(history.take("alice", now).is_empty());
        assert_eq!((history.held_bytes(), history.held_messages()), (0, 0));
    }
}
