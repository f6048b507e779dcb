//! Resumes in flight on a subscriber's shard. A session's SubscribeResume subscribes it at
//! once and asks each topic's owner shard for what it missed; until every owner has answered,
//! live Pushes of those topics for that session are dropped here. That loses nothing and
//! duplicates nothing: an owner sends a shard its Pushes and its answer on one ordered channel,
//! so every Push dropped while waiting was sequenced before the answer and is in its replay,
//! and every Push after the answer is newer than the answer's last seq.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use holdfast_protocol::payload::TopicResumed;

use crate::conn::ConnKey;

/// How long a subscriber's shard waits for the owners' answers (a message lost to a full
/// inbox must not hold a session's pushes forever); then the missing topics are answered
/// "not recovered" and live delivery resumes.
pub const RESUME_REPLY_TIMEOUT_MS: u64 = 2_000;

/// An owner's answer for one topic.
pub struct TopicReply {
    pub resumed: TopicResumed,
    /// The replayed frames, oldest first (empty unless recovered).
    pub frames: Vec<Bytes>,
}

/// One session's SubscribeResume waiting for its owners.
pub struct PendingResume {
    pub generation: u32,
    /// The SubscribeResume's frame id (its Ack carries it).
    pub request_id: u64,
    pub topics: Vec<Arc<str>>,
    pub replies: Vec<Option<TopicReply>>,
    pub deadline: Instant,
}

impl PendingResume {
    pub fn complete(&self) -> bool {
        self.replies.iter().all(Option::is_some)
    }
}

/// The resumes in flight on one shard, by connection slot (one per session at a time).
#[derive(Default)]
pub struct Resumes {
    pending: HashMap<u32, PendingResume>,
}

impl Resumes {
    pub fn is_pending(&self, conn: ConnKey) -> bool {
        self.pending
            .get(&conn.slot)
            .is_some_and(|p| p.generation == conn.generation)
    }

    pub fn start(&mut self, conn: ConnKey, pending: PendingResume) {
        debug_assert_eq!(pending.generation, conn.generation);
        self.pending.insert(conn.slot, pending);
    }

    /// Whether a live Push of `topic` for `conn` is held back (dropped: the replay has it).
    pub fn holds(&self, conn: ConnKey, topic: &str) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        self.pending.get(&conn.slot).is_some_and(|p| {
            p.generation == conn.generation && p.topics.iter().any(|t| &**t == topic)
        })
    }

    /// Stores an owner's answer; returns the whole resume once every topic is answered.
    pub fn answer(
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
    pub fn take_expired(&mut self, now: Instant) -> Vec<(u32, PendingResume)> {
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
    pub fn remove_conn(&mut self, conn: ConnKey) {
        if self.is_pending(conn) {
            self.pending.remove(&conn.slot);
        }
    }
}
