//! What one shard keeps for push and events: its topic index, its slice of the client
//! directory, the client id of each local session that gave one, the sequence numbers of the
//! topics it owns, its end of the event pipeline, and messages for other shards produced while
//! handling frames (sent once the frame batch is done).

use std::collections::HashMap;

use super::directory::ClientDirectory;
use super::topics::TopicIndex;
use crate::events::sink::EventSink;
use crate::mesh::ShardMsg;

pub struct PushState {
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
}

impl PushState {
    pub fn new(events: EventSink, shards: usize, max_topics_per_session: usize) -> PushState {
        PushState {
            topics: TopicIndex::default(),
            directory: ClientDirectory::default(),
            client_ids: HashMap::new(),
            topic_seqs: HashMap::new(),
            events,
            outbox: Vec::new(),
            shards,
            max_topics_per_session,
            cluster: None,
        }
    }

    /// The next sequence number of `topic` (first publish gets 1).
    pub fn next_seq(&mut self, topic: &str) -> u64 {
        let seq = match self.topic_seqs.get_mut(topic) {
            Some(seq) => seq,
            None => self.topic_seqs.entry(topic.into()).or_default(),
        };
        *seq += 1;
        *seq
    }
}
