//! Shrinking a container that a burst grew and that is mostly empty again: a Vec, VecDeque
//! or HashMap keeps its peak capacity, so without this a queue that once held every
//! connection of a shard holds its memory for the life of the process (`shard/trim.rs` calls
//! these once a second). Below a quarter full a container shrinks to twice what it holds (at
//! least a floor); a steady load, which stays above a quarter, never reallocates.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Entries a burst queue keeps when it gives capacity back: what a steady shard reuses
/// without reallocating (a tick's completions, a round of Pings).
pub(crate) const BURST_QUEUE_KEEP_ENTRIES: usize = 1_024;

/// The capacity a container of `len` entries and `capacity` should shrink to, if any: below a
/// quarter full and above `keep`, twice its entries (at least `keep`).
pub(crate) fn trimmed_capacity(len: usize, capacity: usize, keep: usize) -> Option<usize> {
    (capacity > keep && len < capacity / 4).then(|| (len * 2).max(keep))
}

pub(crate) fn trim_vec<T>(vec: &mut Vec<T>, keep: usize) {
    if let Some(capacity) = trimmed_capacity(vec.len(), vec.capacity(), keep) {
        vec.shrink_to(capacity);
    }
}

pub(crate) fn trim_deque<T>(deque: &mut VecDeque<T>, keep: usize) {
    if let Some(capacity) = trimmed_capacity(deque.len(), deque.capacity(), keep) {
        deque.shrink_to(capacity);
    }
}

/// Side tables keyed by slot hold one entry per connection that needs one (none for most):
/// they keep no floor.
pub(crate) fn trim_map<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if let Some(capacity) = trimmed_capacity(map.len(), map.capacity(), 0) {
        map.shrink_to(capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_below_a_quarter_full_shrinks_to_twice_its_entries_but_not_below_keep() {
        assert_eq!(trimmed_capacity(0, 1_024, 1_024), None, "at keep");
        assert_eq!(
            trimmed_capacity(300, 1_024, 0),
            None,
            "a quarter full or more"
        );
        assert_eq!(trimmed_capacity(0, 65_536, 1_024), Some(1_024));
        assert_eq!(trimmed_capacity(5_000, 65_536, 1_024), Some(10_000));
        assert_eq!(trimmed_capacity(0, 16, 0), Some(0));
    }

    /// A queue that held 100,000 entries in a burst and is empty again gives its memory back
    /// (capacity down to the floor); one still a third full keeps it.
    #[test]
    fn a_burst_queue_gives_back_its_capacity_once_drained() {
        let mut deque: VecDeque<u64> = (0..100_000).collect();
        deque.clear();
        trim_deque(&mut deque, BURST_QUEUE_KEEP_ENTRIES);
        assert!(
            deque.capacity() < 2 * BURST_QUEUE_KEEP_ENTRIES,
            "{}",
            deque.capacity()
        );

        let mut busy: Vec<u64> = (0..100_000).collect();
        busy.truncate(40_000);
        let before = busy.capacity();
        trim_vec(&mut busy, BURST_QUEUE_KEEP_ENTRIES);
        assert_eq!(busy.capacity(), before, "still above a quarter full");

        let mut map: HashMap<u32, u64> = (0..50_000).map(|k| (k, 0)).collect();
        map.retain(|&k, _| k < 10);
        trim_map(&mut map);
        assert!(map.capacity() < 1_000, "{}", map.capacity());
        assert_eq!(map.len(), 10);
    }
}
