//! Asking every shard for its [`ShardReport`], with a bound on how long to wait.
//!
//! Shards share nothing: the only way to read one is to put a [`ShardMsg::Stats`] in its inbox
//! and wait for the copy it sends back. A shard that does not answer in time (stuck, or its inbox
//! full) shows as `None`, which is what `/healthz` and `holdfast_shard_up` report.

use std::time::{Duration, Instant};

use crate::shard::{ShardMsg, ShardReport};

/// How long the admin thread waits for all shards to answer a Stats message.
pub const ADMIN_STATS_TIMEOUT_MS: u64 = 1_000;

/// One answer per shard, by shard index; `None` = no answer within the timeout.
#[derive(Debug, Clone)]
pub struct ShardPoll {
    pub reports: Vec<Option<ShardReport>>,
    pub timeout_ms: u64,
}

impl ShardPoll {
    /// Shard indexes that did not answer.
    pub fn silent(&self) -> Vec<usize> {
        self.reports
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_none())
            .map(|(i, _)| i)
            .collect()
    }

    pub fn all_answered(&self) -> bool {
        self.reports.iter().all(Option::is_some)
    }

    pub fn any_draining(&self) -> bool {
        self.reports.iter().flatten().any(|r| r.draining)
    }
}

/// Sends Stats to every inbox and collects the replies until all are in or `timeout` passes.
/// Never blocks a shard: the message goes in with `try_send` (a full inbox counts as silent),
/// and the reply channel has room for every shard's one reply.
pub fn poll_shards(inboxes: &[flume::Sender<ShardMsg>], timeout: Duration) -> ShardPoll {
    let deadline = Instant::now() + timeout;
    let (reply_tx, reply_rx) = flume::bounded(inboxes.len());
    let mut asked = 0;
    for inbox in inboxes {
        if inbox.try_send(ShardMsg::Stats(reply_tx.clone())).is_ok() {
            asked += 1;
        }
    }
    // Once every shard has answered or dropped its message, the channel disconnects.
    drop(reply_tx);
    let mut reports: Vec<Option<ShardReport>> = vec![None; inboxes.len()];
    for _ in 0..asked {
        match reply_rx.recv_deadline(deadline) {
            Ok(report) => {
                assert!(
                    report.index < reports.len(),
                    "shard index {} beyond the {} inboxes",
                    report.index,
                    reports.len()
                );
                let index = report.index;
                reports[index] = Some(report);
            }
            Err(_) => break,
        }
    }
    ShardPoll {
        reports,
        timeout_ms: timeout.as_millis() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ShardCounters;
    use hdrhistogram::Histogram;

    fn report(index: usize) -> ShardReport {
        ShardReport {
            index,
            counters: ShardCounters::default(),
            reply_latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
            draining: false,
        }
    }

    #[test]
    fn a_shard_that_does_not_answer_is_none_after_the_timeout() {
        let (answering, answering_rx) = flume::bounded::<ShardMsg>(4);
        let (silent, _silent_rx) = flume::bounded::<ShardMsg>(4);
        let shard0 = std::thread::spawn(move || {
            if let Ok(ShardMsg::Stats(reply)) = answering_rx.recv() {
                reply.send(report(0)).unwrap();
            }
        });
        let started = Instant::now();
        let poll = poll_shards(&[answering, silent], Duration::from_millis(200));
        shard0.join().unwrap();
        assert!(poll.reports[0].is_some());
        assert!(poll.reports[1].is_none());
        assert_eq!(poll.silent(), vec![1]);
        assert!(!poll.all_answered());
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn an_exited_shard_is_none_at_once() {
        let (gone, gone_rx) = flume::bounded::<ShardMsg>(4);
        drop(gone_rx);
        let started = Instant::now();
        let poll = poll_shards(&[gone], Duration::from_secs(5));
        assert!(poll.reports[0].is_none());
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_full_inbox_counts_as_silent_without_blocking() {
        let (full, _full_rx) = flume::bounded::<ShardMsg>(1);
        full.try_send(ShardMsg::Drain).unwrap();
        let poll = poll_shards(&[full], Duration::from_millis(50));
        assert!(poll.reports[0].is_none());
    }
}
