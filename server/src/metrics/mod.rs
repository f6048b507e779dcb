//! Per-shard counters. Each shard owns its counters as plain integers; other threads read them
//! only as a copy sent by message ([`crate::mesh::ShardMsg::Stats`]), merged on read.

pub mod log_limit;

use holdfast_protocol::ErrorCode;
use serde::Serialize;

/// Why a connection was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum CloseReason {
    /// Peer closed cleanly between frames.
    PeerEof = 0,
    /// Peer closed with a partial frame buffered.
    PeerEofMidFrame,
    /// Connection reset or another socket error.
    SocketError,
    /// We sent an Error frame (bad input, auth, limits) and closed.
    ProtocolError,
    HelloTimeout,
    HeartbeatTimeout,
    SlowConsumer,
    /// Peer sent Goodbye.
    PeerGoodbye,
    /// Closed by drain (after Goodbye) or by the drain deadline.
    Drain,
}

pub const CLOSE_REASONS: [(CloseReason, &str); 9] = [
    (CloseReason::PeerEof, "peer_eof"),
    (CloseReason::PeerEofMidFrame, "peer_eof_mid_frame"),
    (CloseReason::SocketError, "socket_error"),
    (CloseReason::ProtocolError, "protocol_error"),
    (CloseReason::HelloTimeout, "hello_timeout"),
    (CloseReason::HeartbeatTimeout, "heartbeat_timeout"),
    (CloseReason::SlowConsumer, "slow_consumer"),
    (CloseReason::PeerGoodbye, "peer_goodbye"),
    (CloseReason::Drain, "drain"),
];

/// Error codes have numbers 1..=19; index 0 is unused.
const ERROR_SLOTS: usize = 20;

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ShardCounters {
    pub accepted: u64,
    pub open: u64,
    pub sessions_opened: u64,
    pub closed_by_reason: [u64; 9],
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub requests: u64,
    /// Error frames sent, by error code.
    pub errors_sent_by_code: [u64; ERROR_SLOTS],
    pub slow_consumers: u64,
    /// Accepts refused because the fixed-file table (max_connections_per_shard) was full.
    pub accept_table_full: u64,
    /// Recvs that found the provided-buffer ring empty and were retried.
    pub recv_no_buffers: u64,
    /// Busy connections whose poll was swapped for a multishot recv.
    pub multishot_recvs_started: u64,
    /// Bytes still queued when the drain deadline closed their connection.
    pub drain_unflushed_bytes: u64,
    pub heartbeat_pings_sent: u64,
    /// Events taken into the pipeline.
    pub events_accepted: u64,
    /// Events dropped because the pipeline was full (`drop` policy) or refused.
    pub events_dropped: u64,
    /// Events parked under the `backpressure` policy (each is later accepted or, on close, dropped).
    pub events_parked: u64,
    /// Push frames queued to local sessions.
    pub pushes_delivered: u64,
    /// Messages to another shard refused because its inbox was full (counted, logged).
    pub cross_shard_dropped: u64,
}

impl ShardCounters {
    pub fn closed(&mut self, reason: CloseReason) {
        self.closed_by_reason[reason as usize] += 1;
    }

    pub fn error_sent(&mut self, code: ErrorCode) {
        self.errors_sent_by_code[code as usize] += 1;
    }

    pub fn closed_count(&self, reason: CloseReason) -> u64 {
        self.closed_by_reason[reason as usize]
    }

    pub fn errors_sent(&self, code: ErrorCode) -> u64 {
        self.errors_sent_by_code[code as usize]
    }

    /// Adds another shard's counters into these.
    pub fn merge(&mut self, other: &ShardCounters) {
        self.accepted += other.accepted;
        self.open += other.open;
        self.sessions_opened += other.sessions_opened;
        for (mine, theirs) in self.closed_by_reason.iter_mut().zip(other.closed_by_reason) {
            *mine += theirs;
        }
        self.frames_in += other.frames_in;
        self.frames_out += other.frames_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.requests += other.requests;
        for (mine, theirs) in self
            .errors_sent_by_code
            .iter_mut()
            .zip(other.errors_sent_by_code)
        {
            *mine += theirs;
        }
        self.slow_consumers += other.slow_consumers;
        self.accept_table_full += other.accept_table_full;
        self.recv_no_buffers += other.recv_no_buffers;
        self.multishot_recvs_started += other.multishot_recvs_started;
        self.drain_unflushed_bytes += other.drain_unflushed_bytes;
        self.heartbeat_pings_sent += other.heartbeat_pings_sent;
        self.events_accepted += other.events_accepted;
        self.events_dropped += other.events_dropped;
        self.events_parked += other.events_parked;
        self.pushes_delivered += other.pushes_delivered;
        self.cross_shard_dropped += other.cross_shard_dropped;
    }
}
