//! Giving back what a burst grew. A shard's queues and side tables grow with the work of one
//! moment (every connection of a ring waiting for a receive buffer as all of them close, a
//! backlog of heartbeat Pings, a tick of completions, many TLS handshakes at once), and a
//! Vec, VecDeque or HashMap keeps its peak capacity: when all sessions leave at once, every
//! one of them waits for a receive buffer of its ring (measured: the recv waiters of a shard
//! of 22,500 sessions on 29 rings held 23,040 entries after all left; ~450,000 per shard at
//! 1M on 2 shards). Once a second the shard
//! shrinks each one holding less than a quarter of its capacity to twice what it holds (at
//! least BURST_QUEUE_KEEP_ENTRIES), so the memory goes back to the allocator, and a steady
//! load, which stays above a quarter, never reallocates.

use super::state::Shard;
use crate::trim::{trim_deque, trim_map, trim_vec, BURST_QUEUE_KEEP_ENTRIES};

/// How often a shard gives back what its queues and side tables grew in a burst.
pub(crate) const TRIM_INTERVAL_MS: u64 = 1_000;

impl Shard {
    /// Shrinks what grew in a burst (module docs); called from the tick, at most once per
    /// TRIM_INTERVAL_MS.
    pub(super) fn give_back_burst_capacity(&mut self) {
        for budget in &mut self.recv_budgets {
            trim_deque(&mut budget.waiters, 0);
        }
        trim_deque(&mut self.pings_due, BURST_QUEUE_KEEP_ENTRIES);
        trim_vec(&mut self.completions, BURST_QUEUE_KEEP_ENTRIES);
        self.ring.give_back_burst_capacity(BURST_QUEUE_KEEP_ENTRIES);
        trim_map(&mut self.transports);
        trim_map(&mut self.frame_started);
        trim_map(&mut self.held_input);
    }
}
