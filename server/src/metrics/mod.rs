//! Per-shard counters. Each shard owns its counters as plain integers; other threads read them
//! only as a copy sent by message ([`crate::mesh::ShardMsg::Stats`]), merged on read.

pub(crate) mod log_limit;

use holdfast_protocol::ErrorCode;
use serde::Serialize;

holdfast_protocol::wire_codes! {
    /// Why a connection was closed (the `reason` label of `holdfast_connections_closed`).
    pub enum CloseReason: u8, from_u8 {
        /// Peer closed cleanly between frames.
        PeerEof = 0 => "peer_eof",
        /// Peer closed with a partial frame buffered.
        PeerEofMidFrame = 1 => "peer_eof_mid_frame",
        /// Connection reset or another socket error.
        SocketError = 2 => "socket_error",
        /// We sent an Error frame (bad input, auth, limits) and closed.
        ProtocolError = 3 => "protocol_error",
        HelloTimeout = 4 => "hello_timeout",
        HeartbeatTimeout = 5 => "heartbeat_timeout",
        SlowConsumer = 6 => "slow_consumer",
        /// Peer sent Goodbye.
        PeerGoodbye = 7 => "peer_goodbye",
        /// Closed by drain (after Goodbye) or by the drain deadline.
        Drain = 8 => "drain",
        /// Over max_connections_per_shard: told Error(server_full) and closed.
        ServerFull = 9 => "server_full",
        /// The transport refused the peer: a WebSocket Upgrade answered with an HTTP error,
        /// or a WebSocket rule broken (closed with its RFC 6455 code).
        TransportError = 10 => "transport_error",
        /// A frame in progress was not completed within frame_timeout_ms.
        FrameTimeout = 11 => "frame_timeout",
    }
}

/// Error codes have numbers 1..=COUNT; index 0 is unused.
const ERROR_SLOTS: usize = ErrorCode::COUNT + 1;

/// Declares [`ShardCounters`] and [`SHARD_COUNTER_METRICS`] from one list, so a counter, its
/// merge and its Prometheus name and help are one line and cannot drift apart.
macro_rules! shard_counters {
    ($( $(#[$meta:meta])* $field:ident => $metric:literal, $help:literal; )+) => {
        #[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
        pub struct ShardCounters {
            /// Connections open at the snapshot (a gauge, not a counter).
            pub open: u64,
            pub closed_by_reason: [u64; CloseReason::COUNT],
            /// Error frames sent, by error code.
            pub errors_sent_by_code: [u64; ERROR_SLOTS],
            $( $(#[$meta])* pub $field: u64, )+
        }

        /// Every plain counter: Prometheus name (before `_total`), help, and its reader.
        pub(crate) const SHARD_COUNTER_METRICS: &[(&str, &str, fn(&ShardCounters) -> u64)] = &[
            $( ($metric, $help, |c| c.$field), )+
        ];

        impl ShardCounters {
            /// Adds another shard's counters into these.
            pub fn merge(&mut self, other: &ShardCounters) {
                self.open += other.open;
                for (mine, theirs) in self.closed_by_reason.iter_mut().zip(other.closed_by_reason) {
                    *mine += theirs;
                }
                for (mine, theirs) in self
                    .errors_sent_by_code
                    .iter_mut()
                    .zip(other.errors_sent_by_code)
                {
                    *mine += theirs;
                }
                $( self.$field += other.$field; )+
            }
        }
    };
}

shard_counters! {
    accepted => "holdfast_connections_accepted", "TCP connections accepted.";
    sessions_opened => "holdfast_sessions_opened", "Sessions that completed Hello/Welcome.";
    frames_in => "holdfast_frames_received", "Frames decoded from clients.";
    frames_out => "holdfast_frames_sent", "Frames queued to clients.";
    bytes_in => "holdfast_received_bytes", "Bytes received from clients.";
    bytes_out => "holdfast_sent_bytes", "Bytes sent to clients.";
    requests => "holdfast_requests", "Request frames handled.";
    slow_consumers => "holdfast_slow_consumers",
        "Connections cut off for not reading (max_outbound_bytes reached).";
    /// Connections over max_connections_per_shard told Error(server_full) and closed.
    refused_server_full => "holdfast_connections_refused_full",
        "Connections over max_connections_per_shard told Error(server_full) and closed.";
    /// Accepts the kernel closed because every slot, refusal slots included, was taken.
    accept_table_full => "holdfast_accept_table_full",
        "Connections closed at accept because every slot, refusal slots included, was taken.";
    /// Connections closed because their incomplete frame would pass the shard's budget.
    partial_frame_budget_refusals => "holdfast_partial_frame_budget_refusals",
        "Connections closed because their incomplete frame would pass max_partial_frame_bytes_per_shard.";
    /// Bytes copied into held input (read while a connection's events were parked): linear in
    /// what was read, never re-copied at each pause.
    held_input_copied_bytes => "holdfast_held_input_copied_bytes",
        "Bytes read while events were parked, copied once into held input.";
    /// Recvs that found the provided-buffer ring empty and were retried.
    recv_no_buffers => "holdfast_recv_no_buffers",
        "Receives that found no provided buffer and were retried.";
    /// `io_uring_enter` calls of the shard loop (submits and task-work runs): with
    /// `ring_completions`, completions per enter.
    ring_enters => "holdfast_ring_enters",
        "io_uring_enter calls made by the shard loop (submitting, or running the kernel's task work).";
    /// Completions the shard loop reaped from its rings.
    ring_completions => "holdfast_ring_completions", "Completions reaped from the shard's rings.";
    /// Times the shard loop found its rings quiet and slept until a completion was signalled.
    ring_sleeps => "holdfast_ring_sleeps",
        "Times the shard loop found its rings quiet and slept until the kernel signalled a completion.";
    /// Waits in the shard's own ring (shard_wait_before_park_us) that a completion ended.
    ring_waits_woken => "holdfast_ring_waits_woken",
        "Waits in the shard's own ring before parking that a completion ended (no park needed).";
    /// Waits in the shard's own ring, or parks, that its doorbell ended (an inbox message).
    ring_doorbell_wakes => "holdfast_ring_doorbell_wakes",
        "Waits in the shard's own ring, or glommio parks, that its doorbell ended (a message put in its inbox).";
    /// Busy connections whose poll was swapped for a multishot recv.
    multishot_recvs_started => "holdfast_multishot_recvs_started",
        "Busy connections whose readiness poll was swapped for a multishot recv.";
    /// Bytes still queued when the drain deadline closed their connection.
    drain_unflushed_bytes => "holdfast_drain_unflushed_bytes",
        "Bytes still queued when the drain deadline closed their connection.";
    heartbeat_pings_sent => "holdfast_heartbeat_pings_sent", "Pings sent to silent sessions.";
    /// Events taken into the pipeline.
    events_accepted => "holdfast_events_accepted", "Event frames taken into the event pipeline.";
    /// Events dropped because the pipeline was full (`drop` policy) or refused.
    events_dropped => "holdfast_events_dropped",
        "Event frames dropped or refused because the pipeline was full.";
    /// Events parked under the `backpressure` policy (each is later accepted or, on close, dropped).
    events_parked => "holdfast_events_parked", "Event frames parked under the backpressure policy.";
    /// Push frames queued to local sessions.
    pushes_delivered => "holdfast_pushes_delivered", "Push frames queued to local sessions.";
    /// WebSocket Upgrades answered with 101.
    ws_upgrades => "holdfast_ws_upgrades",
        "WebSocket handshakes answered with 101 Switching Protocols.";
    /// Push frames replayed from history to resuming sessions.
    resume_replayed_pushes => "holdfast_resume_replayed_pushes",
        "Push frames an owner shard replayed from history to resuming sessions.";
    /// Topic resumes from another epoch answered with the whole current epoch (from seq 1).
    resume_epoch_replays => "holdfast_resume_epoch_replays",
        "Topic resumes naming another epoch answered by replaying the current epoch from seq 1.";
    /// TLS handshakes completed on the TLS listener.
    tls_handshakes => "holdfast_tls_handshakes", "TLS handshakes completed.";
    /// TLS handshakes that failed (bad ClientHello, no common version, suite or ALPN, a bad
    /// record): the peer got a fatal alert and only that connection was closed.
    tls_handshake_failures => "holdfast_tls_handshake_failures",
        "TLS handshakes that failed (only that connection closed).";
    /// Messages to another shard refused because its inbox was full (counted, logged).
    cross_shard_dropped => "holdfast_cross_shard_dropped",
        "Messages to another shard dropped because its inbox was full.";
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
}
