//! Reconnect delays: exponential backoff with full jitter. Attempt `n` (from 0) waits a delay
//! drawn uniformly from `0 ..= min(max, base × 2^n)` milliseconds, so clients cut off together
//! spread over the whole window instead of reconnecting in waves.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The backoff state of one client: the attempt count since the last successful Welcome.
#[derive(Debug)]
pub struct Backoff {
    base_delay_ms: u64,
    max_delay_ms: u64,
    attempt: u32,
    rng: SmallRng,
}

impl Backoff {
    /// A backoff whose first ceiling is `base_delay_ms`, doubling up to `max_delay_ms`.
    pub fn new(base_delay_ms: u64, max_delay_ms: u64) -> Backoff {
        Backoff::with_rng(base_delay_ms, max_delay_ms, SmallRng::from_entropy())
    }

    /// As [`Backoff::new`] with a seeded generator (reproducible tests).
    pub fn with_rng(base_delay_ms: u64, max_delay_ms: u64, rng: SmallRng) -> Backoff {
        Backoff {
            base_delay_ms,
            max_delay_ms: max_delay_ms.max(base_delay_ms),
            attempt: 0,
            rng,
        }
    }

    /// The ceiling of the next delay: `min(max, base × 2^attempt)`, without overflow.
    pub fn ceiling_ms(&self) -> u64 {
        let factor = 1u64.checked_shl(self.attempt).unwrap_or(u64::MAX);
        self.base_delay_ms
            .saturating_mul(factor)
            .min(self.max_delay_ms)
    }

    /// The next delay (uniform in `0 ..= ceiling`), and one more attempt counted.
    pub fn next_delay(&mut self) -> Duration {
        let delay_ms = self.rng.gen_range(0..=self.ceiling_ms());
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_millis(delay_ms)
    }

    /// Attempts counted since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Back to the first ceiling (after a Welcome).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded(base: u64, max: u64) -> Backoff {
        Backoff::with_rng(base, max, SmallRng::seed_from_u64(7))
    }

    #[test]
    fn ceiling_doubles_from_base_and_stops_at_max() {
        let mut backoff = seeded(100, 1_000);
        let mut ceilings = Vec::new();
        for _ in 0..7 {
            ceilings.push(backoff.ceiling_ms());
            backoff.next_delay();
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1_000, 1_000, 1_000]);
    }

    #[test]
    fn every_delay_lies_within_zero_and_its_ceiling() {
        let mut backoff = seeded(50, 30_000);
        for _ in 0..10_000 {
            let ceiling = backoff.ceiling_ms();
            let delay = backoff.next_delay().as_millis() as u64;
            assert!(delay <= ceiling, "{delay} ms above ceiling {ceiling} ms");
            if backoff.attempt() > 40 {
                backoff.reset();
            }
        }
    }

    #[test]
    fn delays_are_spread_over_the_whole_window() {
        // Full jitter: with the ceiling pinned at max, 2,000 draws land in every tenth of
        // [0, max], so a herd of clients spreads out instead of retrying together.
        let mut backoff = seeded(1_000, 1_000);
        let mut tenths = [0u32; 10];
        for _ in 0..2_000 {
            let delay = backoff.next_delay().as_millis() as usize;
            tenths[(delay / 100).min(9)] += 1;
        }
        for (tenth, count) in tenths.iter().enumerate() {
            assert!(
                (120..=280).contains(count),
                "tenth {tenth} got {count} of 2,000 draws: {tenths:?}"
            );
        }
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut backoff = seeded(u64::MAX / 2, u64::MAX);
        for _ in 0..200 {
            backoff.next_delay();
        }
        assert_eq!(backoff.ceiling_ms(), u64::MAX);
        let mut small = seeded(1, 5);
        for _ in 0..100 {
            assert!(small.next_delay() <= Duration::from_millis(5));
        }
    }

    #[test]
    fn reset_returns_to_the_base_ceiling() {
        let mut backoff = seeded(10, 10_000);
        for _ in 0..5 {
            backoff.next_delay();
        }
        assert_eq!(backoff.ceiling_ms(), 320);
        backoff.reset();
        assert_eq!(backoff.ceiling_ms(), 10);
        assert!(backoff.next_delay() <= Duration::from_millis(10));
    }
}
