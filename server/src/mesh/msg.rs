//! What crosses between threads: the messages a shard's inbox takes, and the report a shard
//! sends back when asked for its metrics.

use hdrhistogram::Histogram;

use super::address::{Publish, Scope};
use crate::conn::ConnId;
use crate::metrics::ShardCounters;

/// Inbox depth per shard: control, publishes and cross-shard deliveries. A sender never blocks
/// on a full inbox: the message is dropped and counted ([`super::Mesh::dropped_count`]).
pub(crate) const SHARD_INBOX_CAPACITY: usize = 16_384;
/// Inbox messages a shard handles per ring turn.
pub(crate) const INBOX_BATCH_MAX: usize = 256;

/// Messages other threads (and other shards) send a shard.
pub enum ShardMsg {
    /// Stop accepting, say Goodbye, flush, close, exit.
    Drain,
    /// Reply with a copy of the shard's counters and histograms.
    Stats(flume::Sender<ShardReport>),
    /// A publish for the target this shard owns (topic sequence, client directory, connection).
    Publish(Publish),
    /// An encoded Push frame for local sessions.
    Deliver {
        scope: Scope,
        frame: bytes::Bytes,
    },
    /// A session with this client id opened on some shard (this shard owns the id).
    ClientRegister {
        client_id: Box<str>,
        conn: ConnId,
    },
    ClientUnregister {
        client_id: Box<str>,
        conn: ConnId,
    },
    /// Cluster mode: a publish from another host (or straight from NATS), for the target this
    /// shard owns; sequenced and delivered here like `Publish`, never forwarded to NATS again.
    ClusterPublish(Publish),
    /// JetStream mode: a message of the stream (any host's publish) for the topic or broadcast
    /// this shard owns, with its number in the topic's one sequence: delivered and held here
    /// under that number.
    StreamPublish {
        target: super::address::Target,
        stamp: super::address::Stamp,
        payload: bytes::Bytes,
    },
    /// A session on the sending shard resumes `topic` (this shard owns it) after `last_seq` of
    /// `epoch`: answer with [`ShardMsg::ResumeReply`] on the same channel as this topic's
    /// Pushes, so the answer sits exactly at the seam between replay and live.
    ResumeRequest {
        conn: ConnId,
        request_id: u64,
        index: usize,
        topic: Box<str>,
        epoch: u64,
        last_seq: u64,
    },
    /// The owner's answer to `ResumeRequest` number `index` of a session's SubscribeResume.
    ResumeReply {
        conn: ConnId,
        request_id: u64,
        index: usize,
        resumed: holdfast_protocol::payload::TopicResumed,
        frames: Vec<bytes::Bytes>,
    },
    /// The event processor took events from this shard's pipeline while it was full: parked
    /// events may move now, without waiting for the next tick (best effort: the tick remains
    /// the fallback).
    EventsTaken,
}

/// A copy of one shard's metrics (the reply to [`ShardMsg::Stats`]).
#[derive(Clone, Debug)]
pub struct ShardReport {
    pub index: usize,
    pub counters: ShardCounters,
    pub reply_latency_us: Histogram<u64>,
    pub draining: bool,
}
