//! A hashed timer wheel with lazy rescheduling, generic over its entries (the shard keeps one
//! `ConnKey` per live connection: slot + generation, 8 bytes). Activity on a connection does not touch the wheel: it only
//! moves the connection's `last_activity_tick`. When an entry's bucket comes due, the shard
//! recomputes that connection's real deadline and either acts or re-inserts the entry further
//! on. So a frame costs one store, and a sweep visits each connection about once per timeout.
//!
//! Invariant: an entry is in the bucket of a tick at or before its connection's deadline.
//! Entries of closed connections (generation mismatch) are dropped when their bucket comes due.

/// Buckets in the wheel (a power of two). Deadlines further than this many ticks away are
/// parked in the bucket they hash to and re-inserted when it comes round.
pub const WHEEL_BUCKETS: usize = 4096;
/// Emptied bucket vectors kept for reuse. Entries due are re-inserted into buckets that are
/// empty at that point of the rotation; handing them a drained vector keeps the wheel's
/// capacity near its live entries instead of every bucket's high-water mark (measured by
/// capacity_sim: 248 B per connection after a rotation without this, docs/CAPACITY.md).
pub const WHEEL_SPARE_VECS_MAX: usize = 16;

pub struct TimerWheel<T> {
    buckets: Vec<Vec<T>>,
    /// Drained bucket vectors (empty, capacity kept), at most [`WHEEL_SPARE_VECS_MAX`].
    spare: Vec<Vec<T>>,
    /// The next tick to be processed.
    now_tick: u32,
    len: usize,
}

impl<T> Default for TimerWheel<T> {
    fn default() -> Self {
        TimerWheel::new()
    }
}

impl<T> TimerWheel<T> {
    pub fn new() -> TimerWheel<T> {
        TimerWheel {
            buckets: (0..WHEEL_BUCKETS).map(|_| Vec::new()).collect(),
            spare: Vec::with_capacity(WHEEL_SPARE_VECS_MAX),
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
    pub fn insert(&mut self, entry: T, deadline_tick: u32) {
        let tick = deadline_tick.max(self.now_tick);
        let horizon = self.now_tick + WHEEL_BUCKETS as u32 - 1;
        let bucket = &mut self.buckets[tick.min(horizon) as usize % WHEEL_BUCKETS];
        if bucket.capacity() == 0 {
            if let Some(spare) = self.spare.pop() {
                *bucket = spare;
            }
        }
        bucket.push(entry);
        self.len += 1;
    }

    /// Takes the entries due at the current tick and advances the clock by one tick. The caller
    /// re-inserts entries whose connection is not due yet, then hands the vector back with
    /// [`TimerWheel::recycle`] so its allocation is reused.
    pub fn advance(&mut self) -> Vec<T> {
        let bucket = self.now_tick as usize % WHEEL_BUCKETS;
        let due = std::mem::take(&mut self.buckets[bucket]);
        self.len -= due.len();
        self.now_tick += 1;
        due
    }

    /// Takes back an emptied vector from [`TimerWheel::advance`] for the next bucket that gets
    /// its first entry (its allocation is reused, not kept by the drained bucket).
    pub fn recycle(&mut self, mut due: Vec<T>) {
        due.clear();
        if due.capacity() > 0 && self.spare.len() < WHEEL_SPARE_VECS_MAX {
            self.spare.push(due);
        }
    }

    /// Entries the wheel's vectors can hold without allocating (buckets and spares).
    pub fn capacity_entries(&self) -> usize {
        let buckets: usize = self.buckets.iter().map(Vec::capacity).sum();
        buckets + self.spare.iter().map(Vec::capacity).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(slot: u32) -> u32 {
        slot
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
    fn capacity_follows_live_entries_after_a_full_rotation() {
        const LIVE: u32 = 30_000;
        const INTERVAL_TICKS: u32 = 300;
        let mut wheel = TimerWheel::new();
        for slot in 0..LIVE {
            wheel.insert(entry(slot), slot % INTERVAL_TICKS);
        }
        // More than one rotation: every bucket has been a re-insertion target.
        for _ in 0..WHEEL_BUCKETS as u32 + INTERVAL_TICKS {
            let now = wheel.now_tick();
            let due = wheel.advance();
            for e in &due {
                wheel.insert(*e, now + INTERVAL_TICKS);
            }
            wheel.recycle(due);
        }
        assert_eq!(wheel.len(), LIVE as usize);
        let capacity = wheel.capacity_entries();
        assert!(
            capacity <= 4 * LIVE as usize,
            "capacity {capacity} entries for {LIVE} live"
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
