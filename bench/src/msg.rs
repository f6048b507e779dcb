//! What crosses the process boundary between the parent and its workers: the plan a worker
//! runs (JSON line on its stdin), commands (JSON lines on stdin) and reports (JSON lines on its
//! stdout; histograms V2-deflate serialized inside them).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Open sessions at a rate and hold them: setup latency, failures, server memory per session.
    Connect,
    /// Closed loop: K Echo frames in flight per session, every reply checked byte-exact.
    Echo,
    /// Open loop at a fixed total rate of Echo frames, latency from intended send time.
    Rate,
    /// Open loop at a fixed total rate of Request frames to a named method.
    Request,
    /// Hold sessions, drop them all at once (or wait for the server's Goodbye), time the return.
    Storm,
    /// Subscribe N sessions to a topic; a publisher (the parent, over the server's admin HTTP
    /// `POST /publish`) publishes at a rate or in a broadcast burst; delivery latency from the
    /// timestamp in each payload, gaps and duplicates from the Push frames' sequence numbers.
    Push,
    /// Event frames as fast as the server takes them: closed loop with Acks (`--ack`) or
    /// streaming; events accepted per second and per server CPU-second, drops.
    Events,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Connect => "connect",
            Workload::Echo => "echo",
            Workload::Rate => "rate",
            Workload::Request => "request",
            Workload::Storm => "storm",
            Workload::Push => "push",
            Workload::Events => "events",
        }
    }

    /// Whether the workload sends frames during the measured window.
    pub fn sends_traffic(self) -> bool {
        matches!(
            self,
            Workload::Echo | Workload::Rate | Workload::Request | Workload::Events
        )
    }

    /// Whether the report gives per-reply (or per-delivery) throughput and CPU figures.
    pub fn measures_throughput(self) -> bool {
        self.sends_traffic() || self == Workload::Push
    }

    /// The histogram that the report, the `.hgrm` file and the interval log carry.
    pub fn main_histogram(self) -> &'static str {
        match self {
            Workload::Connect => HIST_SETUP,
            Workload::Storm => HIST_RECONNECT,
            _ => HIST_LATENCY,
        }
    }
}

/// Histogram names (keys of [`Final::histograms`]).
pub const HIST_LATENCY: &str = "latency";
pub const HIST_CONNECT: &str = "connect";
pub const HIST_HANDSHAKE: &str = "handshake";
pub const HIST_SETUP: &str = "setup";
pub const HIST_RECONNECT: &str = "reconnect";
pub const HIST_SEND_LAG: &str = "send_lag";

/// How `storm` takes sessions down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StormMode {
    /// The client closes every socket at once (FIN) and reconnects at once.
    ClientClose,
    /// The client resets every socket at once (SO_LINGER 0: RST) and reconnects at once.
    ClientReset,
    /// Wait for the server's Goodbye (drain it yourself, e.g. SIGTERM under a supervisor that
    /// restarts it); reconnect after each Goodbye's reconnect_after_ms hint, retrying refused
    /// connects every `retry_backoff_ms`.
    Goodbye,
}

/// Hello credentials when the server has an auth secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuthPlan {
    pub secret: Vec<u8>,
    pub client_id_prefix: String,
    pub token_ttl_s: u64,
}

/// Everything one worker process needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerPlan {
    pub worker_index: u32,
    pub workload: Workload,
    pub target: SocketAddr,
    pub sessions: u32,
    /// Index of this worker's first session among all workers (chooses source addresses).
    pub first_session_index: u64,
    /// Sessions per loopback source address (each gives ~28k ports towards one target).
    pub sessions_per_source_addr: u32,
    /// Skip Hello/Welcome: speak only Echo.
    pub raw: bool,
    pub auth: Option<AuthPlan>,
    /// This worker's share of the connect rate; 0 = as fast as `connect_concurrency_max` allows.
    pub connect_rate_per_s: u64,
    pub connect_concurrency_max: u32,
    pub handshake_timeout_ms: u64,
    pub inflight_per_session: u32,
    pub payload_bytes: u32,
    /// This worker's share of the open-loop rate (rate, request).
    pub rate_per_s: u64,
    pub method: String,
    pub max_frame_bytes: u32,
    /// Client Ping interval on idle sessions; lowered to the Welcome's heartbeat_ms.
    pub ping_interval_ms: u64,
    pub drain_ms: u64,
    pub storm_mode: StormMode,
    pub retry_backoff_ms: u64,
    /// push: the topic each session subscribes to.
    pub push_topic: String,
    /// push: the topic the counted Push frames carry (the subscribed topic, or "*" for broadcast).
    pub push_stream: String,
    /// events: the Event frames' topic, and whether each asks for an Ack (closed loop).
    pub event_topic: String,
    pub event_ack: bool,
    /// tcp, tls, ws or wss, and what TLS and WebSocket need.
    pub transport: crate::transport::TransportPlan,
}

/// The measured window, in CLOCK_MONOTONIC ns, the same for every worker.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Phases {
    /// Traffic starts (warm-up begins); interval ticks count from here.
    pub warmup_start_ns: u64,
    /// Samples from here on are measured.
    pub measure_start_ns: u64,
    /// No new requests from here on; measured samples end here.
    pub measure_end_ns: u64,
    /// `storm`: when every session is dropped (client modes).
    pub drop_at_ns: Option<u64>,
}

/// Parent to worker, after the plan.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    Go(Phases),
    /// Stop at once and send the Final report (used on Ctrl-C or a setup timeout).
    Stop,
}

/// Cumulative counters of one worker. Every frame received ends up in exactly one of the
/// `frames_*` / `replies_*` counts; every request sent is replied, errored, or still in flight.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Counters {
    pub connect_attempts: u64,
    /// TCP connects that completed.
    pub connected: u64,
    /// Sessions opened (Welcome received; in raw mode, TCP connected).
    pub sessions_opened: u64,
    pub sessions_open: u64,
    pub connect_failed: BTreeMap<String, u64>,
    /// Requests (Echo or Request frames) sent.
    pub requests_sent: u64,
    /// Replies that matched their request (byte-exact for Echo and method "echo").
    pub replies_ok: u64,
    /// Replies with the right id whose bytes differ from what was expected.
    pub replies_mismatched: u64,
    /// Error frames answering a request, by error code name.
    pub replies_error: BTreeMap<String, u64>,
    /// Replies received inside the measured window (the throughput numerator).
    pub replies_measured: u64,
    /// Requests lost because their connection closed before the reply.
    pub requests_lost: u64,
    /// Requests still in flight when the worker stopped (after the drain).
    pub requests_inflight_at_end: u64,
    /// Open-loop requests that fell due but were never sent (session closed or run ended).
    pub requests_unsent_at_end: u64,
    /// Frames that were valid but not expected (unknown id, wrong kind), by kind.
    pub frames_unexpected: BTreeMap<String, u64>,
    /// Error frames not tied to a request (e.g. before a close), by code name.
    pub errors_unsolicited: BTreeMap<String, u64>,
    /// Byte streams that failed to decode (the session was closed).
    pub decode_errors: u64,
    pub pings_received: u64,
    pub pings_sent: u64,
    pub pongs_received: u64,
    pub goodbyes_received: u64,
    /// Connections the server closed (EOF or reset) while the client wanted them.
    pub closed_by_server: u64,
    pub io_errors: BTreeMap<String, u64>,
    /// Samples above the 60 s histogram ceiling (recorded as 60 s).
    pub samples_clamped: u64,
    /// `storm`: sessions dropped, back, and the time until the last one was back.
    pub storm_dropped: u64,
    pub storm_back: u64,
    pub storm_all_back_ms: Option<u64>,
    /// push: Subscribes sent, Acked, and answered by an Error.
    pub push_subscribes_sent: u64,
    pub push_subscribed: u64,
    pub push_subscribe_failed: u64,
    /// push: Push frames of the run's stream received (every one, in the window or not).
    pub push_delivered: u64,
    /// push: deliveries whose payload is not what the publisher sent (length or pattern).
    pub push_payload_mismatched: u64,
    /// push: sequence numbers skipped between two deliveries of one session.
    pub push_gaps_between: u64,
    /// push: deliveries whose seq is not above the session's previous one (duplicate or reordered).
    pub push_duplicates: u64,
    /// push, at the end: subscribed sessions that received at least one Push of the stream, and
    /// the sums of their first and last seq (the parent turns these into gaps at the start and
    /// the end against the seqs the publisher got back).
    pub push_sessions_receiving: u64,
    pub push_first_seq_sum: u64,
    pub push_last_seq_sum: u64,
    /// push, at the end: subscribed sessions that received nothing.
    pub push_sessions_silent: u64,
    /// push: CLOCK_MONOTONIC ns of the last delivery.
    pub push_last_delivery_ns: Option<u64>,
    /// events, stream mode (no Ack): Event frames queued for writing. With `--ack` Events are
    /// requests (`requests_sent`, Acks in `replies_ok`) and this stays 0.
    pub events_streamed: u64,
    /// events, stream mode: queued Event frames still unwritten when the worker stopped.
    pub events_unsent_at_end: u64,
    /// events: Event frames queued inside the measured window (both modes).
    pub events_sent_measured: u64,
    /// events: Error frames naming an Event that awaits no Ack (stream mode: the server
    /// refused it), by code name. Not in `errors_total`: a refusal is a measured outcome.
    pub events_refused: BTreeMap<String, u64>,
}

impl Counters {
    pub fn add(&mut self, other: &Counters) {
        fn add_map(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
            for (k, v) in from {
                *into.entry(k.clone()).or_default() += v;
            }
        }
        self.connect_attempts += other.connect_attempts;
        self.connected += other.connected;
        self.sessions_opened += other.sessions_opened;
        self.sessions_open += other.sessions_open;
        add_map(&mut self.connect_failed, &other.connect_failed);
        self.requests_sent += other.requests_sent;
        self.replies_ok += other.replies_ok;
        self.replies_mismatched += other.replies_mismatched;
        add_map(&mut self.replies_error, &other.replies_error);
        self.replies_measured += other.replies_measured;
        self.requests_lost += other.requests_lost;
        self.requests_inflight_at_end += other.requests_inflight_at_end;
        self.requests_unsent_at_end += other.requests_unsent_at_end;
        add_map(&mut self.frames_unexpected, &other.frames_unexpected);
        add_map(&mut self.errors_unsolicited, &other.errors_unsolicited);
        self.decode_errors += other.decode_errors;
        self.pings_received += other.pings_received;
        self.pings_sent += other.pings_sent;
        self.pongs_received += other.pongs_received;
        self.goodbyes_received += other.goodbyes_received;
        self.closed_by_server += other.closed_by_server;
        add_map(&mut self.io_errors, &other.io_errors);
        self.samples_clamped += other.samples_clamped;
        self.storm_dropped += other.storm_dropped;
        self.storm_back += other.storm_back;
        self.storm_all_back_ms = match (self.storm_all_back_ms, other.storm_all_back_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.push_subscribes_sent += other.push_subscribes_sent;
        self.push_subscribed += other.push_subscribed;
        self.push_subscribe_failed += other.push_subscribe_failed;
        self.push_delivered += other.push_delivered;
        self.push_payload_mismatched += other.push_payload_mismatched;
        self.push_gaps_between += other.push_gaps_between;
        self.push_duplicates += other.push_duplicates;
        self.push_sessions_receiving += other.push_sessions_receiving;
        self.push_first_seq_sum += other.push_first_seq_sum;
        self.push_last_seq_sum += other.push_last_seq_sum;
        self.push_sessions_silent += other.push_sessions_silent;
        self.push_last_delivery_ns = self.push_last_delivery_ns.max(other.push_last_delivery_ns);
        self.events_streamed += other.events_streamed;
        self.events_unsent_at_end += other.events_unsent_at_end;
        self.events_sent_measured += other.events_sent_measured;
        add_map(&mut self.events_refused, &other.events_refused);
    }

    /// Errors of every kind: failed connects, mismatches, error replies, unexpected frames,
    /// decode errors, server closes and I/O errors.
    pub fn errors_total(&self) -> u64 {
        let sum = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
        sum(&self.connect_failed)
            + self.replies_mismatched
            + sum(&self.replies_error)
            + self.push_subscribe_failed
            + self.push_payload_mismatched
            + sum(&self.frames_unexpected)
            + sum(&self.errors_unsolicited)
            + self.decode_errors
            + self.closed_by_server
            + sum(&self.io_errors)
    }

    /// Requests not accounted for: sent minus (ok + mismatched + error replies + lost + in
    /// flight at end). Zero when the counts add up.
    pub fn requests_unaccounted(&self) -> i64 {
        let answered = self.replies_ok
            + self.replies_mismatched
            + self.replies_error.values().sum::<u64>()
            + self.requests_lost
            + self.requests_inflight_at_end;
        self.requests_sent as i64 - answered as i64
    }
}

/// Worker to parent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Report {
    /// During setup, every `PROGRESS_INTERVAL_MS`.
    Progress { worker: u32, counters: Counters },
    /// Setup done: every session is open or has failed.
    Ready { worker: u32, counters: Counters },
    /// One second of the run: `index` counts from `warmup_start_ns`.
    Tick {
        worker: u32,
        index: u64,
        counters: Counters,
        histogram: Vec<u8>,
    },
    /// The end: counters, full histograms of the measured window, and the worker's CPU time.
    Final(Box<Final>),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Final {
    pub worker: u32,
    pub counters: Counters,
    /// name -> V2 deflate serialized histogram (microseconds).
    pub histograms: BTreeMap<String, Vec<u8>>,
    /// This process's CPU time (user + system) inside the measured window.
    pub cpu_ns_measured: u64,
}
