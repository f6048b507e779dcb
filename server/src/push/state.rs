//! What one shard keeps for push and events: its topic index, its slice of the client
//! directory, the client id of each local session that gave one, the sequence numbers of the
//! topics it owns, its end of the event pipeline, and messages for other shards produced while
//! handling frames (sent once the frame batch is done).

use std::collections::HashMap;
use std::time::Duration;

use super::broadcast_seen::BroadcastSeen;
use super::directory::ClientDirectory;
use super::history::{History, HistoryLimits};
use super::resume::Resumes;
use super::topics::TopicIndex;
use crate::events::sink::EventSink;
use crate::mesh::ShardMsg;

pub(crate) struct PushState {
    pub topics: TopicIndex,
    pub directory: ClientDirectory,
    /// slot -> (generation, client id) of local sessions that said who they are.
    pub client_ids: HashMap<u32, (u32, Box<str>)>,
    /// Last sequence number of each topic this shard owns (and of broadcasts on the owner).
    pub topic_seqs: HashMap<Box<str>, u64>,
    pub events: EventSink,
    /// (destination shard, message), sent after the current batch.
    pub outbox: Vec<(usize, ShardMsg)>,
    pub shards: usize,
    pub max_topics_per_session: usize,
    /// Cluster mode: the way to the NATS bridge (`None` when standalone).
    pub cluster: Option<crate::cluster::Link>,
    /// Recent pushes of the topics this shard owns (and of broadcasts on their owner).
    pub history: History,
    /// Pushes to client ids this shard owns that had no session (auth on only).
    pub inbox: History,
    /// Sequence numbers of the inbox rings (a client push has no topic seq).
    pub inbox_seq: u64,
    /// SubscribeResumes of local sessions waiting for their topics' owners.
    pub resumes: Resumes,
    /// The last broadcast delivered here and the start seqs of recently opened sessions, so a
    /// resume of `"*"` repeats nothing a session got live.
    pub broadcasts: BroadcastSeen,
    /// Drawn from the OS at start: every topic's epoch derives from it, so a restarted server
    /// (its history gone, its sequences back at 1) never matches an epoch it handed out before.
    pub epoch_seed: u64,
    /// JetStream mode: the stream's run. A topic's epoch is then the run of its numbers in the
    /// stream, the same on every host (`None`: standalone or core NATS).
    pub stream_run: Option<u64>,
    /// JetStream mode: the run of each topic whose messages this host has read (a topic not
    /// here is in its first run, `cluster::stream::first_run`).
    pub topic_runs: HashMap<Box<str>, u64>,
    /// JetStream mode: resumes from a point this host has not read up to yet (another host
    /// delivered it first), answered when it has (push::resume::WaitingResume).
    pub waiting_resumes: Vec<super::resume::WaitingResume>,
    /// Publisher sessions' publishes waiting for their outcome (push::publish_answer).
    pub publish_waits: super::publish_answer::PublishWaits,
}

/// The limits of the push state taken from the config.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PushLimits {
    pub max_topics_per_session: usize,
    pub history: HistoryLimits,
    pub inbox: HistoryLimits,
}

/// Bytes one client's inbox may hold (and at most half of `max_outbound_bytes`).
pub(crate) const CLIENT_INBOX_MAX_BYTES: usize = 256 * 1024;
/// Bytes all the client inboxes of one shard may hold.
pub(crate) const CLIENT_INBOX_MAX_BYTES_PER_SHARD: usize = 16 * 1024 * 1024;

impl PushLimits {
    pub(crate) fn from_config(config: &crate::config::Config) -> PushLimits {
        let inbox_on = config.auth_secret.is_some();
        PushLimits {
            max_topics_per_session: config.max_topics_per_session,
            history: HistoryLimits {
                max_messages: config.history_max_messages,
                max_bytes: config.history_max_bytes,
                max_age: Duration::from_millis(config.history_max_age_ms),
                max_bytes_per_shard: config.history_max_bytes_per_shard,
            },
            inbox: HistoryLimits {
                max_messages: if inbox_on {
                    config.client_inbox_max_messages
                } else {
                    0
                },
                // Half the outbound bound at most: an inbox delivered on reconnect never cuts
                // the new session as a slow consumer.
                max_bytes: CLIENT_INBOX_MAX_BYTES.min(config.max_outbound_bytes as usize / 2),
                max_age: Duration::from_millis(config.client_inbox_max_age_ms),
                max_bytes_per_shard: CLIENT_INBOX_MAX_BYTES_PER_SHARD,
            },
        }
    }
}

impl PushState {
    pub(crate) fn new(events: EventSink, shards: usize, limits: PushLimits) -> PushState {
        PushState {
            topics: TopicIndex::default(),
            directory: ClientDirectory::default(),
            client_ids: HashMap::new(),
            topic_seqs: HashMap::new(),
            events,
            outbox: Vec::new(),
            shards,
            max_topics_per_session: limits.max_topics_per_session,
            cluster: None,
            history: History::new(limits.history),
            inbox: History::new(limits.inbox),
            inbox_seq: 0,
            resumes: Resumes::default(),
            broadcasts: BroadcastSeen::default(),
            epoch_seed: rand::random(),
            stream_run: None,
            topic_runs: HashMap::new(),
            waiting_resumes: Vec::new(),
            publish_waits: Default::default(),
        }
    }

    /// The epoch of `topic`'s sequence on this owner shard: fixed for the life of the process
    /// (a topic's sequence is never reset while it runs), different after a restart, never 0.
    /// In JetStream mode, the run of the topic's numbers in the stream.
    pub(crate) fn epoch(&self, topic: &str) -> u64 {
        if let Some(stream_run) = self.stream_run {
            return match self.topic_runs.get(topic) {
                Some(run) => *run,
                None => crate::cluster::stream::first_run(stream_run, topic),
            };
        }
        let mut hash = self.epoch_seed ^ 0xcbf2_9ce4_8422_2325;
        for byte in topic.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash.max(1)
    }

    /// The last sequence number `topic` was given (0: none yet).
    pub(crate) fn last_seq(&self, topic: &str) -> u64 {
        self.topic_seqs.get(topic).copied().unwrap_or(0)
    }

    /// The next sequence number of `topic` (first publish gets 1).
    pub(crate) fn next_seq(&mut self, topic: &str) -> u64 {
        let seq = match self.topic_seqs.get_mut(topic) {
            Some(seq) => seq,
            None => self.topic_seqs.entry(topic.into()).or_default(),
        };
        *seq += 1;
        *seq
    }
}
