//! Rate-limited logging: under a flood of one error class a shard logs at most one line per
//! class per interval, with the count of lines it held back.

use std::time::{Duration, Instant};

/// At most one line per class per this interval.
pub(crate) const LOG_INTERVAL_MS: u64 = 1_000;

#[derive(Default)]
pub(crate) struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// Returns `Some(suppressed_since_last_line)` when a line may be logged now.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < Duration::from_millis(LOG_INTERVAL_MS) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flood_logs_once_per_interval_and_counts_the_rest() {
        let mut limiter = LogLimiter::default();
        let start = Instant::now();
        assert_eq!(limiter.allow(start), Some(0));
        for _ in 0..5 {
            assert_eq!(limiter.allow(start), None);
        }
        assert_eq!(
            limiter.allow(start + Duration::from_millis(LOG_INTERVAL_MS)),
            Some(5)
        );
    }
}
