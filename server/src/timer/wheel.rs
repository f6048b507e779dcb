//! A hashed timer wheel with lazy rescheduling. Each live connection has exactly one entry
//! (slot + generation, 8 bytes). Activity on a connection does not touch the wheel: it only
//! moves the connection's `last_activity_tick`. When an entry's bucket comes due, the shard
//! recomputes that connection's real deadline and either acts or re-inserts the entry further
//! on. So a frame costs one store, and a sweep visits each connection about once per timeout.
//!
//! Invariant: an entry is in the bucket of a tick at or before its connection's deadline.
//! Entries of closed connections (generation mismatch) are dropped when their bucket comes due.

/// Buckets in the wheel (a power of two). Deadlines further than this many ticks away are
/// parked in the bucket they hash to and re-inserted when it comes round.
pub const WHEEL_BUCKETS: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WheelEntry {
    pub slot: u32,
    pub generation: u32,
}

pub struct TimerWheel {
    buckets: Vec<Vec<WheelEntry>>,
    /// The next tick to be processed.
    now_tick: u32,
    len: usize,
}

impl Default for TimerWheel {
    fn default() -> Self {
        TimerWheel::new()
    }
}

impl TimerWheel {
    pub fn new() -> TimerWheel {
        TimerWheel {
            buckets: (0..WHEEL_BUCKETS).map(|_| Vec::new()).collect(),
            now_tick: 0,
            len: 0,
        }
    }

    pub fn now_tick(&self) -> u32 {
        self.now_tick
    }

    /// Entries held (live or stale).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `entry` for `deadline_tick` (a past deadline fires on the next tick).
    pub fn insert(&mut self, entry: WheelEntry, deadline_tick: u32) {
        let tick = deadline_tick.max(self.now_tick);
        let horizon = self.now_tick + WHEEL_BUCKETS as u32 - 1;
        self.buckets[tick.min(horizon) as usize % WHEEL_BUCKETS].push(entry);
        self.len += 1;
    }

    /// Takes the entries due at the current tick and advances the clock by one tick. The caller
    /// re-inserts entries whose connection is not due yet, then hands the vector back with
    /// [`TimerWheel::recycle`] so its allocation is reused.
    pub fn advance(&mut self) -> Vec<WheelEntry> {
        let bucket = self.now_tick as usize % WHEEL_BUCKETS;
        let due = std::mem::take(&mut self.buckets[bucket]);
        self.len -= due.len();
        self.now_tick += 1;
        due
    }

    /// Gives an emptied vector from [`TimerWheel::advance`] back to its bucket.
    pub fn recycle(&mut self, mut due: Vec<WheelEntry>) {
        due.clear();
        let bucket = (self.now_tick as usize + WHEEL_BUCKETS - 1) % WHEEL_BUCKETS;
        if self.buckets[bucket].is_empty() && self.buckets[bucket].capacity() < due.capacity() {
            self.buckets[bucket] = due;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(slot: u32) -> WheelEntry {
        WheelEntry {
            slot,
            generation: 0,
        }
    }

    #[test]
    fn entry_comes_due_at_its_tick_not_before() {
        let mut wheel = TimerWheel::new();
        wheel.insert(entry(1), 3);
        for _ in 0..3 {
            assert!(wheel.advance().is_empty());
        }
        assert_eq!(wheel.advance(), vec![entry(1)]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn far_deadline_is_parked_at_horizon_for_reinsertion() {
        let mut wheel = TimerWheel::new();
        wheel.insert(entry(7), 10 * WHEEL_BUCKETS as u32);
        let mut seen_at = None;
        for tick in 0..WHEEL_BUCKETS as u32 {
            if !wheel.advance().is_empty() {
                seen_at = Some(tick);
            }
        }
        assert_eq!(
            seen_at,
            Some(WHEEL_BUCKETS as u32 - 1),
            "never before its deadline, never lost"
        );
    }

    #[test]
    fn past_deadline_fires_on_next_tick() {
        let mut wheel = TimerWheel::new();
        wheel.advance();
        wheel.advance();
        wheel.insert(entry(2), 0);
        assert_eq!(wheel.advance(), vec![entry(2)]);
    }
}
