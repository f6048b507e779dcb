//! Log2 histograms, the one shape every probe reports in.

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

/// Number of buckets: enough for any `u64`.
pub const LOG2_BUCKETS: usize = 64;

/// A log2 histogram as the BPF programs keep it.
///
/// Bucket `i` counts values in `[2^i, 2^(i+1))`, except bucket 0, which
/// counts 0 and 1. The unit is the one in the field name that holds the
/// histogram (`runqueue_latency_us`, `data_ready_to_read_ns`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Log2Hist {
    pub buckets: [u64; LOG2_BUCKETS],
}

impl Default for Log2Hist {
    fn default() -> Self {
        Log2Hist {
            buckets: [0; LOG2_BUCKETS],
        }
    }
}

impl Log2Hist {
    /// The bucket a value falls in (the same rule as `log2_bucket` in probes.bpf.c).
    pub fn bucket_of(value: u64) -> usize {
        if value < 2 {
            0
        } else {
            63 - value.leading_zeros() as usize
        }
    }

    /// Smallest value bucket `i` counts.
    pub fn bucket_lower_bound(i: usize) -> u64 {
        assert!(i < LOG2_BUCKETS, "bucket {i} out of range");
        if i == 0 {
            0
        } else {
            1 << i
        }
    }

    /// Largest value bucket `i` counts (inclusive), in the histogram's unit.
    ///
    /// Values are integers, so this is also the Prometheus `le` bound of the
    /// bucket once converted to seconds: bucket 3 of a `_us` histogram holds
    /// 8..=15 us, `le="0.000015"`.
    pub fn bucket_upper_bound(i: usize) -> u64 {
        assert!(i < LOG2_BUCKETS, "bucket {i} out of range");
        if i == LOG2_BUCKETS - 1 {
            u64::MAX
        } else {
            (1u64 << (i + 1)) - 1
        }
    }

    /// Adds one sample (the BPF side does this in the kernel; useful in tests).
    pub fn record(&mut self, value: u64) {
        let i = Self::bucket_of(value);
        self.buckets[i] = self.buckets[i].saturating_add(1);
    }

    /// Total number of samples.
    pub fn count(&self) -> u64 {
        self.buckets
            .iter()
            .fold(0u64, |sum, n| sum.saturating_add(*n))
    }

    /// Upper-bound estimate of the `q` quantile, `q` in `0.0..=1.0`
    /// (`percentile(0.99)` is p99): the upper bound of the bucket that holds
    /// the sample of rank `ceil(q * count)`. 0 when the histogram is empty.
    pub fn percentile(&self, q: f64) -> u64 {
        assert!((0.0..=1.0).contains(&q), "quantile {q} is not in 0.0..=1.0");
        let count = self.count();
        if count == 0 {
            return 0;
        }
        // Rank of the sample we want, 1-based; q = 0 means the smallest sample.
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            seen = seen.saturating_add(*n);
            if seen >= rank {
                return Self::bucket_upper_bound(i);
            }
        }
        unreachable!("rank {rank} <= count {count} is always reached")
    }

    /// Adds another histogram's counts to this one.
    pub fn merge(&mut self, other: &Log2Hist) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// Counts added since `earlier` (a snapshot of the same cumulative histogram).
    pub fn delta(&self, earlier: &Log2Hist) -> Log2Hist {
        let mut out = *self;
        for (now, then) in out.buckets.iter_mut().zip(earlier.buckets.iter()) {
            *now = now.saturating_sub(*then);
        }
        out
    }

    /// Index of the highest non-empty bucket, if any.
    pub fn highest_bucket(&self) -> Option<usize> {
        self.buckets.iter().rposition(|n| *n != 0)
    }
}

/// JSON shape: `{"count": n, "p50": x, "p99": y, "buckets": [64 counts]}`.
/// The summary fields are derived; the buckets are the data.
impl Serialize for Log2Hist {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Log2Hist", 4)?;
        s.serialize_field("count", &self.count())?;
        s.serialize_field("p50", &self.percentile(0.5))?;
        s.serialize_field("p99", &self.percentile(0.99))?;
        s.serialize_field("buckets", &self.buckets[..])?;
        s.end()
    }
}
