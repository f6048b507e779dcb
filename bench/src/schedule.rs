//! Open-loop scheduling (the `rate` and `request` workloads). A worker's requests have fixed
//! intended send times, `start + i * 1 s / rate`; request `i` belongs to session `i % n` as that
//! session's `j = i / n`-th request. Latency is measured from the intended time, never from the
//! time the request actually left (wrk2's coordinated-omission correction): a session that is
//! blocked behind a slow reply owes the requests that fell due meanwhile, and each of them
//! carries its wait in its latency.

use crate::clock::NS_PER_S;

/// Intended send times at a fixed rate from `start_ns`, computed without accumulated drift.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateSchedule {
    start_ns: u64,
    rate_per_s: u64,
}

impl RateSchedule {
    pub fn new(start_ns: u64, rate_per_s: u64) -> RateSchedule {
        assert!(rate_per_s > 0, "a schedule needs a positive rate");
        RateSchedule {
            start_ns,
            rate_per_s,
        }
    }

    pub fn rate_per_s(&self) -> u64 {
        self.rate_per_s
    }

    /// Intended time of request `i` (the first is `i = 0`, at `start_ns`).
    pub fn intended_ns(&self, i: u64) -> u64 {
        self.start_ns + (u128::from(i) * u128::from(NS_PER_S) / u128::from(self.rate_per_s)) as u64
    }

    /// How many requests are due at `now_ns`: the number of `i` with `intended_ns(i) <= now_ns`.
    pub fn due_count(&self, now_ns: u64) -> u64 {
        if now_ns < self.start_ns {
            return 0;
        }
        // intended(i) <= now  <=>  floor(i * 1e9 / r) <= d  <=>  i * 1e9 < (d + 1) * r.
        let d_plus_1 = u128::from(now_ns - self.start_ns) + 1;
        let scaled = d_plus_1 * u128::from(self.rate_per_s);
        scaled.div_ceil(u128::from(NS_PER_S)) as u64
    }
}

/// A worker's open-loop schedule spread round-robin over its `n` sessions.
#[derive(Clone, Copy, Debug)]
pub struct OpenLoop {
    pub schedule: RateSchedule,
    pub sessions: u64,
}

impl OpenLoop {
    pub fn new(schedule: RateSchedule, sessions: u64) -> OpenLoop {
        assert!(sessions > 0);
        OpenLoop { schedule, sessions }
    }

    /// The session that request `i` belongs to.
    pub fn session_of(&self, i: u64) -> u64 {
        i % self.sessions
    }

    /// Intended time of session `s`'s `j`-th request.
    pub fn intended_ns(&self, session: u64, j: u64) -> u64 {
        self.schedule.intended_ns(j * self.sessions + session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hist;

    #[test]
    fn intended_times_are_evenly_spaced_without_drift() {
        let s = RateSchedule::new(5_000, 3);
        assert_eq!(s.intended_ns(0), 5_000);
        assert_eq!(s.intended_ns(1), 5_000 + 333_333_333);
        assert_eq!(s.intended_ns(2), 5_000 + 666_666_666);
        assert_eq!(s.intended_ns(3), 5_000 + NS_PER_S);
        // After a day at 1M/s the time is still exact.
        let fast = RateSchedule::new(0, 1_000_000);
        assert_eq!(fast.intended_ns(86_400 * 1_000_000), 86_400 * NS_PER_S);
    }

    #[test]
    fn due_count_counts_exactly_the_requests_whose_time_has_come() {
        for rate in [1, 3, 7, 1_000, 999_983, 1_000_000_000] {
            let s = RateSchedule::new(1_000, rate);
            assert_eq!(s.due_count(999), 0);
            for i in [0u64, 1, 2, 17, 1_000, 123_457] {
                let t = s.intended_ns(i);
                assert_eq!(
                    s.due_count(t),
                    i + 1,
                    "rate {rate} i {i}: due at its own time"
                );
                if t > s.intended_ns(i.saturating_sub(1)) && i > 0 {
                    assert_eq!(
                        s.due_count(t - 1),
                        i,
                        "rate {rate} i {i}: not due 1 ns early"
                    );
                }
            }
        }
    }

    #[test]
    fn requests_go_round_robin_over_sessions() {
        let ol = OpenLoop::new(RateSchedule::new(0, 1_000), 4);
        assert_eq!(
            (0..8).map(|i| ol.session_of(i)).collect::<Vec<_>>(),
            [0, 1, 2, 3, 0, 1, 2, 3]
        );
        assert_eq!(
            ol.intended_ns(2, 1),
            RateSchedule::new(0, 1_000).intended_ns(6)
        );
    }

    /// Drives one session (one request in flight at most) through a server that answers in
    /// `service_ns` except during a stall, when every reply waits until the stall ends.
    /// Returns (latency from intended time, latency from actual send), both in us.
    fn simulate(
        rate: u64,
        run_ns: u64,
        service_ns: u64,
        stall: (u64, u64),
    ) -> (hist::Hist, hist::Hist) {
        let ol = OpenLoop::new(RateSchedule::new(0, rate), 1);
        let (mut corrected, mut uncorrected) = (hist::new_hist(), hist::new_hist());
        let (mut now, mut j) = (0u64, 0u64);
        while ol.intended_ns(0, j) < run_ns {
            let intended = ol.intended_ns(0, j);
            let sent = now.max(intended); // blocked until the previous reply came back
            let mut reply = sent + service_ns;
            if sent >= stall.0 && sent < stall.1 {
                reply = reply.max(stall.1);
            }
            hist::record_clamped(&mut corrected, (reply - intended) / 1_000);
            hist::record_clamped(&mut uncorrected, (reply - sent) / 1_000);
            now = reply;
            j += 1;
        }
        (corrected, uncorrected)
    }

    #[test]
    fn one_second_stall_shows_as_a_latency_ramp_when_measured_from_intended_time() {
        // 1,000 req/s for 3 s, 100 us service time, server stalls from 1.0 s to 2.0 s.
        let (corrected, uncorrected) =
            simulate(1_000, 3 * NS_PER_S, 100_000, (NS_PER_S, 2 * NS_PER_S));
        assert_eq!(corrected.len(), 3_000);
        // The request sent at 1.0 s waits the whole second; the ~1,000 due during the stall queue
        // behind it and drain at 100 us each, so their latency falls from ~1 s by 0.9 ms per request:
        // about 555 of them exceed 500 ms.
        let over_half_second = corrected.count_between(500_000, hist::HIGHEST_US);
        assert!(
            (540..=570).contains(&over_half_second),
            "{over_half_second} samples over 500 ms"
        );
        assert!(
            corrected.max() >= 999_000 && corrected.max() <= 1_002_000,
            "max {}",
            corrected.max()
        );
        assert!(
            corrected.value_at_quantile(0.9) > 300_000,
            "p90 {}",
            corrected.value_at_quantile(0.9)
        );
        // Measured from actual send time the stall is one sample: coordinated omission.
        assert_eq!(uncorrected.count_between(500_000, hist::HIGHEST_US), 1);
        assert!(uncorrected.value_at_quantile(0.99) < 200);
    }

    #[test]
    fn without_a_stall_corrected_and_uncorrected_latency_agree() {
        let (corrected, uncorrected) = simulate(1_000, NS_PER_S, 100_000, (0, 0));
        assert_eq!(corrected.max(), uncorrected.max());
        assert_eq!(corrected.len(), 1_000);
    }
}
