//! How a publish names its receivers, and which shard owns a name. Shared by everything that
//! publishes (admin, publisher sessions, the event processor, the cluster bridge) and the
//! shards that deliver, so it sits below all of them.

use bytes::Bytes;

use crate::conn::ConnId;

/// Longest topic name, in bytes.
pub(crate) const MAX_TOPIC_BYTES: usize = 128;
/// The pseudo-topic of broadcasts (its own sequence numbers).
pub(crate) const BROADCAST_TOPIC: &str = "*";

/// Who a publish is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Topic(String),
    Broadcast,
    Conn(ConnId),
    Client(String),
}

/// What a shard does with an encoded Push frame it was handed.
#[derive(Clone, Debug)]
pub enum Scope {
    /// Every local subscriber of the topic.
    Topic(std::sync::Arc<str>),
    /// Every open session.
    Broadcast,
    /// One connection, if its generation still matches.
    Conn(ConnId),
}

impl Target {
    /// The shard a publish to this target goes to: the owner of its topic or client id (of
    /// the broadcast pseudo-topic for broadcasts), or the connection's own shard.
    pub fn owner_shard(&self, shards: usize) -> usize {
        match self {
            Target::Topic(topic) => owner_shard(topic, shards),
            Target::Client(client) => owner_shard(client, shards),
            Target::Broadcast => owner_shard(BROADCAST_TOPIC, shards),
            Target::Conn(id) => id.shard(),
        }
    }
}

/// The answer to a publish, sent back to whoever asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Topic or broadcast: the sequence number assigned.
    Sequenced { seq: u64 },
    /// Connection or client target: how many connections got the frame.
    Delivered { connections: u64 },
    /// The connection id is stale or unknown, or the client has no session.
    NoSuchTarget,
    /// The shard is draining and took nothing: a publish accepted now could not reach the
    /// sessions it is leaving (the caller retries on the restarted or another server).
    Draining,
    /// JetStream mode: the stream did not confirm the publish within
    /// jetstream_publish_timeout_ms (NATS down, or the bridge's queue full); the caller retries.
    /// An attempt stored without its acknowledgement arriving is in the stream: a retry with
    /// the same `msg_id` finds it (stored once), one without is a second message.
    Unavailable,
}

/// JetStream mode: what a message of the stream says about its place in its topic's sequence
/// (cluster/stream.rs reads and writes it as headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The topic's sequence number, from 1.
    pub seq: u64,
    /// The number before it (0 for a run's first).
    pub prev: u64,
    /// The run (the topic's epoch) the numbers belong to.
    pub run: u64,
}

/// A publish on its way to the shard that sequences or owns its target.
#[derive(Debug)]
pub struct Publish {
    pub target: Target,
    pub payload: Bytes,
    /// The publisher's name for it (push::request), so a retry is stored once (JetStream).
    pub msg_id: Option<Box<str>>,
    pub reply: Option<flume::Sender<PublishOutcome>>,
}

/// The shard that owns `key` (a topic's sequence, a client id's directory entry).
pub(crate) fn owner_shard(key: &str, shards: usize) -> usize {
    // FNV-1a: stable across processes and builds, so every host and shard agrees.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % shards as u64) as usize
}

/// Checks a topic name from a client or a publisher.
pub(crate) fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= MAX_TOPIC_BYTES && topic != BROADCAST_TOPIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_shard_is_stable_and_in_range() {
        for shards in 1..8 {
            let owner = owner_shard("news", shards);
            assert!(owner < shards);
            assert_eq!(owner, owner_shard("news", shards));
        }
    }

    #[test]
    fn broadcast_pseudo_topic_and_long_names_are_not_topics() {
        assert!(valid_topic("news"));
        assert!(!valid_topic("*"));
        assert!(!valid_topic(""));
        assert!(!valid_topic(&"x".repeat(MAX_TOPIC_BYTES + 1)));
    }
}
