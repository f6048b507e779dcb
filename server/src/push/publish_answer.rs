//! A publisher session's `publish` is answered with what became of it, never with "handed on":
//! the session's shard sends the publish to the owner with a reply channel, and a task of the
//! shard waits for the owner's outcome (in JetStream mode: the stream's store) before the
//! session gets its Response or Error (shard/mod.rs, the publish-answers task). So "accepted"
//! means what `POST /publish`'s 202 means, and a publish the owner never took (its inbox full,
//! the shard draining, the stream away) is refused, not lost in silence. A publish the stream
//! did not confirm may still have been stored (its acknowledgement lost): the publisher retries
//! it with the same `msg_id` (push::request) and it is stored once.

use std::collections::HashMap;

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use holdfast_protocol::ErrorCode;

use crate::conn::ConnKey;
use crate::mesh::PublishOutcome;

/// Session publishes one shard waits on at once; past it a publish is refused at once
/// (`unavailable`). Each is one small task and one channel.
pub(crate) const PUBLISH_ANSWERS_PENDING_MAX_PER_SHARD: usize = 4_096;

/// Longest a session's publish waits for its outcome: above the longest JetStream
/// confirmation (config::JETSTREAM_PUBLISH_TIMEOUT_MAX_MS), like the admin's bound.
pub(crate) const PUBLISH_ANSWER_TIMEOUT_MS: u64 = 5_000;
const _: () = assert!(crate::config::JETSTREAM_PUBLISH_TIMEOUT_MAX_MS < PUBLISH_ANSWER_TIMEOUT_MS);

/// One session publish waiting for its outcome.
pub(crate) struct PublishWait {
    pub key: ConnKey,
    /// The Request's frame id (the answer carries it).
    pub request_id: u64,
    pub outcome: flume::Receiver<PublishOutcome>,
}

/// The shard's end of its session publishes in flight: waits go to the shard's answers task
/// (shard/mod.rs) through a local channel, at most
/// [`PUBLISH_ANSWERS_PENDING_MAX_PER_SHARD`] at once, and at most the session's
/// `max_inflight_requests` (what Welcome announced) for one connection, so one publisher
/// cannot take every place of its shard.
pub(crate) struct PublishWaits {
    sender: LocalSender<PublishWait>,
    receiver: Option<LocalReceiver<PublishWait>>,
    pending: usize,
    /// Waits per connection (only connections with one pending have an entry).
    pending_by_conn: HashMap<ConnKey, u16>,
}

/// Why a publish was not handed on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WaitRefused {
    /// The shard waits on [`PUBLISH_ANSWERS_PENDING_MAX_PER_SHARD`] already.
    ShardFull,
    /// The connection has its `max_inflight_requests` publishes unanswered.
    ConnectionFull,
}

impl Default for PublishWaits {
    fn default() -> PublishWaits {
        let (sender, receiver) = local_channel::new_unbounded();
        PublishWaits {
            sender,
            receiver: Some(receiver),
            pending: 0,
            pending_by_conn: HashMap::new(),
        }
    }
}

impl PublishWaits {
    /// Hands `wait` to the answers task, or refuses it (nothing queued) when the shard or the
    /// connection already waits on its maximum.
    pub(crate) fn start(
        &mut self,
        wait: PublishWait,
        max_per_conn: u16,
    ) -> Result<(), WaitRefused> {
        let key = wait.key;
        let conn_pending = self.pending_by_conn.get(&key).copied().unwrap_or(0);
        if conn_pending >= max_per_conn {
            return Err(WaitRefused::ConnectionFull);
        }
        if self.pending >= PUBLISH_ANSWERS_PENDING_MAX_PER_SHARD {
            return Err(WaitRefused::ShardFull);
        }
        if self.sender.try_send(wait).is_err() {
            return Err(WaitRefused::ShardFull);
        }
        self.pending += 1;
        self.pending_by_conn.insert(key, conn_pending + 1);
        Ok(())
    }

    /// The wait of connection `key` ended (answered, dropped or timed out).
    pub(crate) fn finish(&mut self, key: ConnKey) {
        assert!(self.pending > 0, "a publish answer without a wait");
        self.pending -= 1;
        let conn_pending = self
            .pending_by_conn
            .get_mut(&key)
            .expect("a publish answer for a connection with a wait");
        *conn_pending -= 1;
        if *conn_pending == 0 {
            self.pending_by_conn.remove(&key);
        }
    }

    /// Session publishes of this shard waiting for their outcome.
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// The answers task's end; taken once, when the shard starts.
    pub(crate) fn take_receiver(&mut self) -> Option<LocalReceiver<PublishWait>> {
        self.receiver.take()
    }
}

/// How the wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    Answered(PublishOutcome),
    /// The reply channel closed unanswered: the message never reached the owner (its inbox
    /// was full) or the bridge dropped it; nothing was taken.
    Dropped,
    /// No answer within [`PUBLISH_ANSWER_TIMEOUT_MS`]: the publish may still go out.
    TimedOut,
}

/// What the session is told.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PublishAnswer {
    /// A Response with this JSON body.
    Accepted(String),
    /// An Error frame.
    Refused(ErrorCode, &'static str),
}

/// The answer for an outcome: the same facts `POST /publish` answers with.
pub(crate) fn answer(waited: Waited) -> PublishAnswer {
    match waited {
        Waited::Answered(PublishOutcome::Sequenced { seq }) => {
            PublishAnswer::Accepted(format!(r#"{{"accepted":true,"seq":{seq}}}"#))
        }
        Waited::Answered(PublishOutcome::Delivered { connections }) => {
            PublishAnswer::Accepted(format!(r#"{{"accepted":true,"delivered":{connections}}}"#))
        }
        Waited::Answered(PublishOutcome::NoSuchTarget) => PublishAnswer::Refused(
            ErrorCode::HandlerFailed,
            "no such connection or client (stale id or no session)",
        ),
        Waited::Answered(PublishOutcome::Draining) => PublishAnswer::Refused(
            ErrorCode::ShuttingDown,
            "the server is draining and took nothing: publish on another server",
        ),
        Waited::Answered(PublishOutcome::Unavailable) => PublishAnswer::Refused(
            ErrorCode::Unavailable,
            "the cluster stream did not confirm the publish within jetstream_publish_timeout_ms; retry (with the same msg_id it is stored once)",
        ),
        Waited::Dropped => PublishAnswer::Refused(
            ErrorCode::Unavailable,
            "the owning shard could not take the publish (its inbox was full); nothing was taken, retry",
        ),
        Waited::TimedOut => PublishAnswer::Refused(
            ErrorCode::Unavailable,
            "no outcome in time; the publish may still be delivered",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(slot: u32) -> PublishWait {
        PublishWait {
            key: ConnKey {
                slot,
                generation: 1,
            },
            request_id: 1,
            outcome: flume::bounded(1).1,
        }
    }

    /// One publisher at its limit is refused (and only it); a finished wait frees its place;
    /// the shard's limit holds over all connections.
    #[test]
    fn a_connection_may_wait_on_its_limit_and_the_shard_on_its_own() {
        const MAX_PER_CONN: u16 = 3;
        let mut waits = PublishWaits::default();
        for _ in 0..MAX_PER_CONN {
            assert_eq!(waits.start(wait(1), MAX_PER_CONN), Ok(()));
        }
        assert_eq!(
            waits.start(wait(1), MAX_PER_CONN),
            Err(WaitRefused::ConnectionFull)
        );
        assert_eq!(waits.start(wait(2), MAX_PER_CONN), Ok(()));
        waits.finish(wait(1).key);
        assert_eq!(waits.start(wait(1), MAX_PER_CONN), Ok(()));
        for _ in 0..MAX_PER_CONN {
            waits.finish(wait(1).key);
        }
        waits.finish(wait(2).key);
        assert!(
            waits.pending_by_conn.is_empty(),
            "no entry outlives its waits"
        );

        for slot in 0..PUBLISH_ANSWERS_PENDING_MAX_PER_SHARD as u32 {
            assert_eq!(waits.start(wait(slot), 1), Ok(()));
        }
        assert_eq!(waits.start(wait(u32::MAX), 1), Err(WaitRefused::ShardFull));
    }

    #[test]
    fn a_sequenced_publish_is_accepted_with_its_seq_and_every_failure_is_refused() {
        assert_eq!(
            answer(Waited::Answered(PublishOutcome::Sequenced { seq: 42 })),
            PublishAnswer::Accepted(r#"{"accepted":true,"seq":42}"#.to_owned())
        );
        assert_eq!(
            answer(Waited::Answered(PublishOutcome::Delivered {
                connections: 3
            })),
            PublishAnswer::Accepted(r#"{"accepted":true,"delivered":3}"#.to_owned())
        );
        let refused = |waited| match answer(waited) {
            PublishAnswer::Refused(code, _) => code,
            other => panic!("{other:?} for a failure"),
        };
        assert_eq!(
            refused(Waited::Answered(PublishOutcome::NoSuchTarget)),
            ErrorCode::HandlerFailed
        );
        assert_eq!(
            refused(Waited::Answered(PublishOutcome::Draining)),
            ErrorCode::ShuttingDown
        );
        assert_eq!(
            refused(Waited::Answered(PublishOutcome::Unavailable)),
            ErrorCode::Unavailable
        );
        assert_eq!(refused(Waited::Dropped), ErrorCode::Unavailable);
        assert_eq!(refused(Waited::TimedOut), ErrorCode::Unavailable);
    }
}
