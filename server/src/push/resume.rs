//! Resumes in flight on a subscriber's shard. A session's SubscribeResume subscribes it at
//! once and asks each topic's owner shard for what it missed; until every owner has answered,
//! live Pushes of those topics for that session are dropped here. That loses nothing and
//! duplicates nothing: an owner sends a shard its Pushes and its answer on one ordered channel,
//! so every Push dropped while waiting was sequenced before the answer and is in its replay,
//! and every Push after the answer is newer than the answer's last seq. A topic the session
//! unsubscribes while its resume waits gets its Ack result but no replay (the shard checks the
//! subscription when it sends the replay, shard/push.rs `finish_resume`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use holdfast_protocol::payload::TopicResumed;

use super::broadcast_seen::LiveBroadcasts;
use crate::conn::ConnKey;

/// How long a subscriber's shard waits for the owners' answers (a message lost to a full
/// inbox must not hold a session's pushes forever); then the missing topics are answered
/// "not recovered" and live delivery resumes.
pub(crate) const RESUME_REPLY_TIMEOUT_MS: u64 = 2_000;

/// JetStream mode: resumes one owner shard holds back at most (the rest are answered at once,
/// "not recovered" when the point is ahead of this host).
pub(crate) const WAITING_RESUMES_MAX_PER_SHARD: usize = 65_536;

/// JetStream mode, on a topic's owner shard: a resume whose `last_seq` is ahead of what this
/// host has read of the topic (another host delivered it to the client first). Answered when
/// this host reaches `last_seq` (or the topic's run changes); dropped at `deadline`, when the
/// subscriber's shard has answered it "unknown, resume again" on its own
/// ([`RESUME_REPLY_TIMEOUT_MS`]).
pub(crate) struct WaitingResume {
    pub conn: crate::conn::ConnId,
    pub request_id: u64,
    pub index: usize,
    pub topic: Box<str>,
    pub epoch: u64,
    pub last_seq: u64,
    pub deadline: Instant,
}

/// An owner's answer for one topic.
pub(crate) struct TopicReply {
    pub resumed: TopicResumed,
    /// The replayed frames, oldest first (empty unless recovered).
    pub frames: Vec<Bytes>,
}

/// One session's SubscribeResume waiting for its owners.
pub(crate) struct PendingResume {
    pub generation: u32,
    /// The SubscribeResume's frame id (its Ack carries it).
    pub request_id: u64,
    pub topics: Vec<Arc<str>>,
    pub replies: Vec<Option<TopicReply>>,
    pub deadline: Instant,
    /// Resuming `"*"`: the broadcasts that reached the session live before it asked, left out
    /// of the replay (push::broadcast_seen).
    pub broadcast_live: Option<LiveBroadcasts>,
}

impl PendingResume {
    pub(crate) fn complete(&self) -> bool {
        self.replies.iter().all(Option::is_some)
    }
}

/// The resumes in flight on one shard, by connection slot (one per session at a time).
#[derive(Default)]
pub(crate) struct Resumes {
    pending: HashMap<u32, PendingResume>,
}

impl Resumes {
    pub(crate) fn is_pending(&self, conn: ConnKey) -> bool {
        self.pending
            .get(&conn.slot)
            .is_some_and(|p| p.generation == conn.generation)
    }

    pub(crate) fn start(&mut self, conn: ConnKey, pending: PendingResume) {
        debug_assert_eq!(pending.generation, conn.generation);
        self.pending.insert(conn.slot, pending);
    }

    /// Whether a live Push of `topic` for `conn` is held back (dropped: the replay has it).
    pub(crate) fn holds(&self, conn: ConnKey, topic: &str) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        self.pending.get(&conn.slot).is_some_and(|p| {
            p.generation == conn.generation && p.topics.iter().any(|t| &**t == topic)
        })
    }

    /// Stores an owner's answer; returns the whole resume once every topic is answered.
    pub(crate) fn answer(
        &mut self,
        conn: ConnKey,
        request_id: u64,
        index: usize,
        reply: TopicReply,
    ) -> Option<PendingResume> {
        let pending = self.pending.get_mut(&conn.slot)?;
        if pending.generation != conn.generation || pending.request_id != request_id {
            return None;
        }
        *pending.replies.get_mut(index)? = Some(reply);
        if pending.complete() {
            self.pending.remove(&conn.slot)
        } else {
            None
        }
    }

    /// Takes the resumes whose owners did not all answer by `now` (their missing topics are
    /// then answered "not recovered").
    pub(crate) fn take_expired(&mut self, now: Instant) -> Vec<(u32, PendingResume)> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let expired: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(slot, _)| *slot)
            .collect();
        expired
            .into_iter()
            .filter_map(|slot| self.pending.remove(&slot).map(|p| (slot, p)))
            .collect()
    }

    /// A closing connection's resume goes with it.
    pub(crate) fn remove_conn(&mut self, conn: ConnKey) {
        if self.is_pending(conn) {
            self.pending.remove(&conn.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn conn(generation: u32) -> ConnKey {
        ConnKey {
            slot: 3,
            generation,
        }
    }

    fn pending(topics: &[&str], deadline: Instant) -> PendingResume {
        PendingResume {
            generation: 1,
            request_id: 9,
            topics: topics.iter().map(|t| Arc::from(*t)).collect(),
            replies: topics.iter().map(|_| None).collect(),
            deadline,
            broadcast_live: None,
        }
    }

    fn reply(seq: u64) -> TopicReply {
        TopicReply {
            resumed: TopicResumed {
                epoch: 7,
                seq,
                oldest_seq: 1,
                recovered: 1,
            },
            frames: Vec::new(),
        }
    }

    #[test]
    fn holds_only_its_topics_until_every_owner_answered() {
        let now = Instant::now();
        let mut resumes = Resumes::default();
        resumes.start(conn(1), pending(&["a", "*"], now + Duration::from_secs(2)));
        assert!(resumes.holds(conn(1), "a") && resumes.holds(conn(1), "*"));
        assert!(!resumes.holds(conn(1), "b"), "other topics flow");
        assert!(
            !resumes.holds(conn(2), "a"),
            "another generation is another session"
        );
        assert!(
            resumes.answer(conn(1), 8, 0, reply(5)).is_none(),
            "wrong request"
        );
        assert!(
            resumes.answer(conn(2), 9, 0, reply(5)).is_none(),
            "wrong generation"
        );
        assert!(
            resumes.answer(conn(1), 9, 0, reply(5)).is_none(),
            "one of two"
        );
        assert!(resumes.holds(conn(1), "a"));
        let done = resumes
            .answer(conn(1), 9, 1, reply(6))
            .expect("both answered");
        assert_eq!(done.replies[1].as_ref().unwrap().resumed.seq, 6);
        assert!(!resumes.holds(conn(1), "a") && !resumes.is_pending(conn(1)));
    }

    #[test]
    fn an_unanswered_resume_expires_and_a_closed_one_is_dropped() {
        let now = Instant::now();
        let mut resumes = Resumes::default();
        resumes.start(conn(1), pending(&["a"], now + Duration::from_secs(2)));
        assert!(resumes.take_expired(now).is_empty());
        let expired = resumes.take_expired(now + Duration::from_secs(2));
        assert_eq!(expired.len(), 1);
        assert!(!resumes.holds(conn(1), "a"));
        resumes.start(conn(1), pending(&["a"], now));
        resumes.remove_conn(conn(1));
        assert!(!resumes.is_pending(conn(1)));
    }
}
