//! The mesh: how threads reach shards. Shards share nothing; everything that crosses a core
//! is a [`ShardMsg`] put in a shard's bounded inbox through a [`Mesh`]. This module sits below
//! everything that sends (shards, admin, the event processor, the cluster bridge, systemd's
//! monitor) and imports none of them, so those modules never import `shard/`.
//!
//! - [`msg`]: the messages and the report a shard sends back.
//! - [`address`]: publish targets and the shard that owns a topic or client id.
//! - [`Mesh`]: send to one shard or to all without blocking a shard, count what a full inbox
//!   refused, and ask every shard for its report before a deadline.

pub(crate) mod address;
pub(crate) mod doorbell;
pub(crate) mod msg;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use address::{
    owner_shard, valid_topic, Publish, PublishOutcome, Scope, Stamp, Target, BROADCAST_TOPIC,
    MAX_TOPIC_BYTES,
};
pub(crate) use msg::{ShardMsg, ShardReport, INBOX_BATCH_MAX, SHARD_INBOX_CAPACITY};

/// Why a message did not reach its shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The inbox stayed full (at once for `try_send`, for the whole wait for `send_timeout`).
    Full,
    /// The shard has exited (or no shard has that index).
    Gone,
}

/// Every shard's inbox, indexed by shard. Each holder owns its own clone (cheap: the senders
/// are shared) and counts the messages its sends lost to full or closed inboxes. The count is
/// atomic only so a holder may be shared by its own tasks (admin handlers); it is touched only
/// when a send fails.
pub struct Mesh {
    inboxes: Arc<[flume::Sender<ShardMsg>]>,
    /// One per inbox: rung after each message put in it (`doorbell.rs`).
    doorbells: Arc<[doorbell::Doorbell]>,
    dropped: AtomicU64,
}

impl Clone for Mesh {
    /// A clone shares the inboxes and starts its own drop count at zero.
    fn clone(&self) -> Mesh {
        Mesh {
            inboxes: self.inboxes.clone(),
            doorbells: self.doorbells.clone(),
            dropped: AtomicU64::new(0),
        }
    }
}

/// What one shard did with a Stats request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// Boxed: a report holds a histogram (~500 bytes), the other answers nothing.
    Report(Box<ShardReport>),
    /// Its inbox was full, or it did not answer before the deadline: stuck or overloaded.
    Silent,
    /// It has exited.
    Gone,
}

/// Every shard's answer to one Stats round, by shard index.
#[derive(Clone, Debug)]
pub struct StatsPoll {
    pub answers: Vec<Answer>,
    /// How long the round waited at most, in ms.
    pub timeout_ms: u64,
}

impl StatsPoll {
    /// Each shard's report, `None` where it did not answer.
    pub fn reports(&self) -> Vec<Option<ShardReport>> {
        self.answers
            .iter()
            .map(|answer| match answer {
                Answer::Report(report) => Some(ShardReport::clone(report)),
                Answer::Silent | Answer::Gone => None,
            })
            .collect()
    }

    /// Shard indexes that did not answer (silent or gone).
    pub fn silent(&self) -> Vec<usize> {
        (0..self.answers.len())
            .filter(|&i| !matches!(self.answers[i], Answer::Report(_)))
            .collect()
    }

    pub fn all_answered(&self) -> bool {
        self.answers.iter().all(|a| matches!(a, Answer::Report(_)))
    }

    pub fn all_gone(&self) -> bool {
        self.answers.iter().all(|a| matches!(a, Answer::Gone))
    }

    pub fn any_draining(&self) -> bool {
        self.answers
            .iter()
            .any(|a| matches!(a, Answer::Report(r) if r.draining))
    }
}

impl Mesh {
    /// A mesh of `shards` bounded inboxes; the receivers go to the shards, index by index.
    /// Fails only if an eventfd for a doorbell cannot be made (out of descriptors).
    pub fn new(
        shards: usize,
        capacity: usize,
    ) -> std::io::Result<(Mesh, Vec<flume::Receiver<ShardMsg>>)> {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| flume::bounded(capacity)).unzip();
        Ok((Mesh::from_inboxes(senders)?, receivers))
    }

    pub fn from_inboxes(inboxes: Vec<flume::Sender<ShardMsg>>) -> std::io::Result<Mesh> {
        let doorbells = inboxes
            .iter()
            .map(|_| doorbell::Doorbell::new())
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Mesh {
            inboxes: inboxes.into(),
            doorbells: doorbells.into(),
            dropped: AtomicU64::new(0),
        })
    }

    /// Shard `shard`'s doorbell, for the shard itself (it reads it in its ring and listens).
    pub(crate) fn doorbell(&self, shard: usize) -> &doorbell::Doorbell {
        &self.doorbells[shard]
    }

    /// Counts a failed send, or rings the shard's doorbell for a delivered one.
    fn sent(&self, shard: usize, result: Result<(), SendError>) -> Result<(), SendError> {
        if result.is_ok() {
            self.doorbells[shard].ring();
        }
        self.count(result)
    }

    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// Messages this holder's sends lost to a full or closed inbox.
    pub fn dropped_count(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn count(&self, result: Result<(), SendError>) -> Result<(), SendError> {
        if result.is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Sends without waiting: what shards use toward each other (a shard never blocks).
    pub fn try_send(&self, shard: usize, msg: ShardMsg) -> Result<(), SendError> {
        let Some(inbox) = self.inboxes.get(shard) else {
            return self.count(Err(SendError::Gone));
        };
        let result = inbox.try_send(msg).map_err(|e| match e {
            flume::TrySendError::Full(_) => SendError::Full,
            flume::TrySendError::Disconnected(_) => SendError::Gone,
        });
        self.sent(shard, result)
    }

    /// Waits for room without blocking its thread: for an async sender that must not drop
    /// what it hands over (the JetStream consumer: the stream holds the rest meanwhile).
    pub async fn send_async(&self, shard: usize, msg: ShardMsg) -> Result<(), SendError> {
        let Some(inbox) = self.inboxes.get(shard) else {
            return self.count(Err(SendError::Gone));
        };
        let result = inbox.send_async(msg).await.map_err(|_| SendError::Gone);
        self.sent(shard, result)
    }

    /// Waits up to `timeout` for room: for threads off the data path (admin, processor).
    pub fn send_timeout(
        &self,
        shard: usize,
        msg: ShardMsg,
        timeout: Duration,
    ) -> Result<(), SendError> {
        let Some(inbox) = self.inboxes.get(shard) else {
            return self.count(Err(SendError::Gone));
        };
        let result = inbox.send_timeout(msg, timeout).map_err(|e| match e {
            flume::SendTimeoutError::Timeout(_) => SendError::Full,
            flume::SendTimeoutError::Disconnected(_) => SendError::Gone,
        });
        self.sent(shard, result)
    }

    /// Puts `make()` in every shard's inbox, waiting for room: for control messages that must
    /// arrive (Drain). Returns how many shards took it (the rest have exited).
    pub fn send_all_wait(&self, mut make: impl FnMut() -> ShardMsg) -> usize {
        self.inboxes
            .iter()
            .zip(self.doorbells.iter())
            .filter(|(inbox, doorbell)| {
                let sent = inbox.send(make()).is_ok();
                if sent {
                    doorbell.ring();
                }
                sent
            })
            .count()
    }

    /// Asks every shard for its report and waits until `deadline` for the answers. Never
    /// blocks a shard: the request goes in with `try_send` (a full inbox is Silent), and the
    /// reply channel has room for every shard's one reply.
    pub fn poll_stats(&self, deadline: Instant) -> StatsPoll {
        let timeout_ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64;
        let (reply_tx, reply_rx) = flume::bounded::<ShardReport>(self.inboxes.len());
        let mut answers: Vec<Answer> = self
            .inboxes
            .iter()
            .zip(self.doorbells.iter())
            .map(
                |(inbox, doorbell)| match inbox.try_send(ShardMsg::Stats(reply_tx.clone())) {
                    Ok(()) => {
                        doorbell.ring();
                        Answer::Silent
                    }
                    Err(flume::TrySendError::Full(_)) => Answer::Silent,
                    Err(flume::TrySendError::Disconnected(_)) => Answer::Gone,
                },
            )
            .collect();
        // Once every asked shard has answered or dropped its message, the channel disconnects.
        drop(reply_tx);
        while let Ok(report) = reply_rx.recv_deadline(deadline) {
            assert!(
                report.index < answers.len(),
                "shard index {} beyond the {} inboxes",
                report.index,
                answers.len()
            );
            let index = report.index;
            answers[index] = Answer::Report(Box::new(report));
        }
        // A shard asked and then gone (it exited with the request unread) is Gone, not Silent.
        for (answer, inbox) in answers.iter_mut().zip(self.inboxes.iter()) {
            if matches!(answer, Answer::Silent) && inbox.is_disconnected() {
                *answer = Answer::Gone;
            }
        }
        StatsPoll {
            answers,
            timeout_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ShardCounters;
    use hdrhistogram::Histogram;

    pub(crate) fn report(index: usize, open: u64) -> ShardReport {
        ShardReport {
            index,
            counters: ShardCounters {
                open,
                ..ShardCounters::default()
            },
            reply_latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
            draining: false,
        }
    }

    /// A fake shard: answers one Stats with a report if `answers`, else holds the message.
    fn fake_shard(
        index: usize,
        answers: bool,
    ) -> (flume::Sender<ShardMsg>, std::thread::JoinHandle<()>) {
        let (tx, rx) = flume::bounded::<ShardMsg>(4);
        let join = std::thread::spawn(move || {
            if let Ok(ShardMsg::Stats(reply)) = rx.recv() {
                if answers {
                    reply.send(report(index, 1)).unwrap();
                } else {
                    std::thread::sleep(Duration::from_millis(400));
                }
            }
        });
        (tx, join)
    }

    #[test]
    fn a_shard_that_does_not_answer_is_silent_after_the_deadline() {
        let (answering, join0) = fake_shard(0, true);
        let (silent, join1) = fake_shard(1, false);
        let mesh = Mesh::from_inboxes(vec![answering, silent]).unwrap();
        let started = Instant::now();
        let poll = mesh.poll_stats(started + Duration::from_millis(200));
        assert!(matches!(poll.answers[0], Answer::Report(_)));
        assert!(matches!(poll.answers[1], Answer::Silent));
        assert_eq!(poll.silent(), vec![1]);
        assert!(!poll.all_answered());
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_secs(2));
        join0.join().unwrap();
        join1.join().unwrap();
    }

    #[test]
    fn an_exited_shard_is_gone_at_once() {
        let (gone, gone_rx) = flume::bounded::<ShardMsg>(4);
        drop(gone_rx);
        let mesh = Mesh::from_inboxes(vec![gone]).unwrap();
        let started = Instant::now();
        let poll = mesh.poll_stats(started + Duration::from_secs(5));
        assert!(poll.all_gone());
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_full_inbox_counts_as_silent_without_blocking() {
        let (full, _full_rx) = flume::bounded::<ShardMsg>(1);
        full.try_send(ShardMsg::Drain).unwrap();
        let mesh = Mesh::from_inboxes(vec![full]).unwrap();
        let poll = mesh.poll_stats(Instant::now() + Duration::from_millis(50));
        assert!(matches!(poll.answers[0], Answer::Silent));
    }

    #[test]
    fn sends_to_a_full_or_closed_inbox_are_counted_per_holder() {
        let (mesh, receivers) = Mesh::new(2, 1).unwrap();
        let other = mesh.clone();
        assert_eq!(mesh.try_send(0, ShardMsg::Drain), Ok(()));
        assert_eq!(mesh.try_send(0, ShardMsg::Drain), Err(SendError::Full));
        assert_eq!(mesh.try_send(7, ShardMsg::Drain), Err(SendError::Gone));
        drop(receivers);
        assert_eq!(
            mesh.send_timeout(1, ShardMsg::Drain, Duration::from_millis(10)),
            Err(SendError::Gone)
        );
        assert_eq!(mesh.dropped_count(), 3);
        assert_eq!(other.dropped_count(), 0, "a clone counts its own sends");
    }
}
