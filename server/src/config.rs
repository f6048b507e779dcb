//! Configuration: embedded defaults, overridden by a TOML file (`--config`), then by
//! `HOLDFAST_*` environment variables, then by CLI flags (figment merges them in that order).
//! Every limit is a key whose name carries its unit.
//!
//! An unknown key in the file is an error (a typo must not silently run the default); an
//! unknown `HOLDFAST_*` environment variable is not (a deploy tool's `HOLDFAST_VERSION` must
//! not stop the server): it is left out and [`unknown_env_vars`] names it for one warning.

use std::net::SocketAddr;
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use holdfast_protocol::header::MAX_FRAME_BYTES_CEILING;
use serde::{Deserialize, Serialize};

use crate::conn::id::{MAX_SHARDS, MAX_SLOTS_PER_SHARD};

/// Prefix of the environment variables that set config keys (`HOLDFAST_SHARDS=2`).
pub const ENV_PREFIX: &str = "HOLDFAST_";
/// `HOLDFAST_*` variables holdfast reads that are not config keys: `HOLDFAST_LOG` (the log
/// filter).
const ENV_NOT_KEYS: &[&str] = &["log"];

/// Smallest `max_frame_bytes` allowed: every frame the server writes itself (Welcome, Error with
/// a reason of at most MAX_ERROR_REASON_BYTES, Goodbye, Pong, Ack) must fit.
pub const MIN_MAX_FRAME_BYTES: u32 = 512;

/// How hosts share pushes (`cluster_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterMode {
    /// Core NATS: each host numbers a topic on its own; across hosts at most once.
    #[default]
    Core,
    /// One JetStream stream: one sequence per topic on every host; resume on any host.
    #[serde(rename = "jetstream")]
    JetStream,
}

/// Largest `jetstream_publish_timeout_ms`: within the admin's wait for the owning shard's
/// answer (`admin::publish::ADMIN_PUBLISH_TIMEOUT_MS`, which asserts it), so a refused publish
/// is answered 503, not timed out.
pub const JETSTREAM_PUBLISH_TIMEOUT_MAX_MS: u64 = 4_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address every shard listens on (SO_REUSEPORT, one listener per shard).
    pub listen: SocketAddr,
    /// Shards (pinned executors); 0 = one per available CPU.
    pub shards: usize,
    /// Sessions one shard holds (its rings' fixed-file tables have up to 64 refusal slots more,
    /// SERVER_FULL_REFUSAL_SLOTS). 0 = RLIMIT_NOFILE less those slots (one ring), at most
    /// 16,777,215. Past one ring's table (`ring_table_slots`) the shard owns several rings.
    pub max_connections_per_shard: u32,
    /// The most fixed-file entries one io_uring ring of a shard registers; the kernel caps it
    /// further at IORING_MAX_FIXED_FILES and RLIMIT_NOFILE. A shard owns as many rings as its
    /// slots need (at most MAX_RINGS_PER_SHARD). Lower it only to test or to spread rings.
    pub ring_max_fixed_files: u32,
    pub listen_backlog: u32,
    /// SO_SNDBUF of every accepted connection (the kernel doubles it for bookkeeping): the most
    /// kernel memory a client that never reads can pin beyond `max_outbound_bytes`. 0 = the
    /// kernel's autotuning (up to net.ipv4.tcp_wmem's maximum, 4 MB by default).
    pub socket_send_buffer_bytes: u32,
    pub max_frame_bytes: u32,
    /// Bytes queued for one connection (sent and unsent) before it is cut off as a slow consumer.
    pub max_outbound_bytes: u32,
    /// Bytes of incomplete frames all of one shard's connections may hold together (each holds
    /// at most max_frame_bytes - 1); the connection that would pass it gets Error
    /// limit_exceeded and is closed, so many half-sent frames cannot exhaust memory.
    pub max_partial_frame_bytes_per_shard: u64,
    /// The most a frame may take from its first byte to its last; a connection past it gets
    /// Error limit_exceeded and is closed (a trickle of bytes is not progress).
    pub frame_timeout_ms: u64,
    /// Requests answered but not yet flushed to the socket, per session.
    pub max_inflight_requests: u32,
    pub hello_timeout_ms: u64,
    /// The server pings a session silent for this long; offered in Welcome.
    pub heartbeat_interval_ms: u64,
    /// Lowest heartbeat interval a client may ask for in Hello.
    pub heartbeat_min_interval_ms: u64,
    /// A session silent this long is closed.
    pub heartbeat_timeout_ms: u64,
    /// How long a closing connection may take to read our last bytes before it is closed hard.
    pub close_linger_ms: u64,
    pub drain_timeout_ms: u64,
    /// Goodbye's reconnect hint: base plus a uniform random spread.
    pub reconnect_after_ms: u32,
    pub reconnect_jitter_ms: u32,
    /// Resolution of each shard's timer wheel.
    pub timer_tick_ms: u64,
    /// HMAC secret for Hello tokens; unset = auth off (anonymous Hello accepted).
    pub auth_secret: Option<String>,
    /// Submission queue entries of a shard, split between its rings (power of two, 64 to
    /// 32,768): one ring gets them all; each of several gets its share
    /// ([`Config::ring_entries_for_rings`]), so a ring set does not multiply the shard's
    /// ring memory (29 rings of 4,096 SQEs and 32,768 CQEs mapped 46 MB per process).
    pub ring_sq_entries: u32,
    /// Completion queue entries of a shard, split between its rings like `ring_sq_entries`
    /// (at least twice it, at most 65,536). A ring whose queue fills keeps the rest in the
    /// kernel (IORING_FEAT_NODROP) until the shard reaps and enters it again.
    pub ring_cq_entries: u32,
    /// Provided receive buffers per shard (power of two, <= 32,768).
    pub recv_buffers_per_shard: u16,
    pub recv_buffer_bytes: u32,
    /// Busy connections read through a multishot recv (one ring operation per arrival
    /// instead of poll + recv) up to this many per shard, at most half of
    /// recv_buffers_per_shard (each may hold a provided buffer at any moment; one-shot recvs
    /// get the rest). Each costs ~600 bytes more kernel memory than a poll; a connection
    /// silent for heartbeat_interval_ms goes back to a poll. 0 = poll + recv only.
    pub multishot_recv_max_per_shard: u32,
    /// io_memory glommio registers on each of its rings per executor (it is locked memory).
    pub glommio_io_memory_bytes: usize,
    /// A shard whose rings went quiet first waits this long in its own ring for the next
    /// completion (one io_uring_enter) before it parks its executor (glommio's sleep and
    /// wake-up: ~9 syscalls and a membarrier). Messages from other threads (inbox) and timers
    /// wait up to this long meanwhile. Capped at half of timer_tick_ms. 0 = park at once.
    pub shard_wait_before_park_us: u64,
    /// Let the kernel back the heap with 2 MiB transparent huge pages where the allocator
    /// asks for them (mimalloc advises its 1 GiB arenas MADV_HUGEPAGE). Off by default: the
    /// process turns them off (prctl PR_SET_THP_DISABLE, `serve::set_transparent_huge_pages`),
    /// because a huge page
    /// is resident once any byte of it is touched and stays so until all of it is free, and
    /// khugepaged collapses partly used ranges again; with them the heap's growth per idle
    /// session was ~2x and what a burst touched stayed (docs/CAPACITY.md, "Memory per idle
    /// session, broken down").
    pub heap_huge_pages: bool,
    /// Admin HTTP listener (`/metrics`, `/healthz`, `/readyz`); keep it on loopback or a
    /// private network: it has no authentication.
    pub admin_listen: SocketAddr,
    pub admin_enabled: bool,
    /// Admin connections served at once (idle keep-alive ones included); one more is answered
    /// 503 and closed at once, so a flood of idle connections cannot hold the listener. Each
    /// open connection costs a descriptor and ~9 KiB (hyper's read buffer and task).
    pub admin_max_connections: u32,
    /// Time a client has to send a whole request head, counted from the moment the admin
    /// listener starts waiting for it: a connection that sends no complete head in this time
    /// (slowloris, or an idle keep-alive connection) is closed.
    pub admin_header_timeout_ms: u64,
    /// Time a client has to send a request body once its head is in; later is 408 and close.
    pub admin_body_timeout_ms: u64,
    /// Largest request body (`POST /publish` JSON) accepted; larger is 413 and close.
    pub admin_max_body_bytes: u32,
    /// Keep admin connections open between requests (HTTP/1.1 keep-alive); false = one request
    /// per connection.
    pub admin_keep_alive: bool,
    /// Attach the eBPF probes to this process at start (`serve --probes`); without eBPF the
    /// server runs without them and logs why.
    pub probes: bool,
    /// Topics one session may subscribe to.
    pub max_topics_per_session: usize,
    /// History (resume after a reconnect, docs/PROTOCOL.md "Resume"): the last pushes kept per
    /// topic (and for broadcasts) by the topic's owner shard. Any of the four at 0 turns it off.
    pub history_max_messages: usize,
    /// Bytes of history per topic (frames plus bookkeeping).
    pub history_max_bytes: usize,
    /// Oldest push kept in history.
    pub history_max_age_ms: u64,
    /// Bytes of history across every topic of one shard; over it the shard's oldest goes first.
    pub history_max_bytes_per_shard: usize,
    /// Pushes to a client id with no session, kept for its next session (auth on only: with
    /// auth off any client could claim the id). 0 (either key) turns the inbox off.
    pub client_inbox_max_messages: usize,
    pub client_inbox_max_age_ms: u64,
    /// Events queued per shard between the shards and the processor.
    pub event_pipeline_capacity: usize,
    /// Events parked per shard under the `backpressure` policy (each paused connection parks
    /// the one event that found the pipeline full); beyond this, events are refused.
    pub event_parked_max: usize,
    /// `drop` (drop the newest, count it, tell the client) or `backpressure` (stop reading).
    pub event_overflow_policy: crate::events::OverflowPolicy,
    /// The trending processor's output topic, window and cadence.
    pub trending_topic: String,
    pub trending_window_s: u64,
    pub trending_interval_ms: u64,
    pub trending_top_k: usize,
    /// Bearer secret for `POST /publish`; unset = publishing needs no credential.
    pub publish_secret: Option<String>,
    /// With auth on, sessions whose verified client id starts with this may publish.
    pub publisher_client_id_prefix: String,
    /// Cluster mode: the NATS server, an IP literal (`nats://127.0.0.1:4222`); unset = this
    /// host runs alone.
    pub nats_url: Option<String>,
    /// This host's id on NATS (the origin of what it publishes); unset = random per process.
    pub cluster_host_id: Option<String>,
    /// `core` (core NATS: each host numbers a topic on its own; across hosts at most once) or
    /// `jetstream` (one JetStream stream: a topic's sequence is one sequence on every host, and
    /// a client resumes on any host; docs/ARCHITECTURE.md, "Cluster sequence").
    pub cluster_mode: ClusterMode,
    /// JetStream mode: the stream's name (created if missing, checked if present).
    pub jetstream_stream: String,
    /// JetStream mode: the stream's limits (oldest messages go first past any of them).
    pub jetstream_max_age_ms: u64,
    pub jetstream_max_messages: i64,
    pub jetstream_max_bytes: i64,
    /// JetStream mode: how long one publish may take, retries after lost races for the topic's
    /// next number and NATS outages included, before it is refused (503 to `POST /publish`).
    pub jetstream_publish_timeout_ms: u64,
    /// WebSocket listener (one per shard, SO_REUSEPORT, beside `listen`): HTTP/1.1 Upgrade on
    /// `ws_path`, subprotocol `holdfast.v1`, each binary message carrying Holdfast frames.
    /// Unset = no WebSocket listener.
    pub ws_listen: Option<SocketAddr>,
    /// The request path of the WebSocket Upgrade (a query string is ignored).
    pub ws_path: String,
    /// `Origin` values a browser's Upgrade may carry (exact, ASCII case-insensitive; Chromium
    /// sends `file://` for a page opened from a file). Empty = any origin. A request without `Origin` (not a
    /// browser) is always allowed.
    pub ws_allowed_origins: Vec<String>,
    /// TLS listener (one per shard, SO_REUSEPORT, beside `listen`): TLS 1.3 and 1.2, ALPN
    /// `holdfast/1`, Holdfast frames inside. Needs `tls_cert_file` and `tls_key_file`.
    /// Unset = no TLS listener.
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain (leaf first) of the TLS listener; re-read on SIGHUP (new
    /// handshakes use it, live sessions keep theirs).
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the TLS listener; re-read on SIGHUP.
    pub tls_key_file: Option<std::path::PathBuf>,
    /// Log lines on stderr: `text` (human; ANSI colour only when stderr is a terminal) or
    /// `json` (one JSON object per line, for log shippers). `HOLDFAST_LOG` sets the filter.
    pub log_format: LogFormat,
}

/// How `serve` writes its log lines (`log_format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Config {
    /// Where the trending processor publishes unless configured otherwise.
    pub const DEFAULT_TRENDING_TOPIC: &'static str = "trending";
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            shards: 0,
            max_connections_per_shard: 0,
            ring_max_fixed_files: IORING_MAX_FIXED_FILES,
            listen_backlog: 4096,
            socket_send_buffer_bytes: 131_072,
            max_frame_bytes: holdfast_protocol::MAX_FRAME_BYTES_DEFAULT,
            max_outbound_bytes: 256 * 1024,
            max_partial_frame_bytes_per_shard: 64 * 1024 * 1024,
            frame_timeout_ms: 10_000,
            max_inflight_requests: 64,
            hello_timeout_ms: 5_000,
            heartbeat_interval_ms: 15_000,
            heartbeat_min_interval_ms: 1_000,
            heartbeat_timeout_ms: 45_000,
            close_linger_ms: 2_000,
            drain_timeout_ms: 10_000,
            reconnect_after_ms: 1_000,
            reconnect_jitter_ms: 4_000,
            timer_tick_ms: 50,
            auth_secret: None,
            ring_sq_entries: 4_096,
            ring_cq_entries: 32_768,
            recv_buffers_per_shard: 256,
            recv_buffer_bytes: 16 * 1024,
            multishot_recv_max_per_shard: 128,
            glommio_io_memory_bytes: 1024 * 1024,
            shard_wait_before_park_us: 500,
            heap_huge_pages: false,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9878)),
            admin_enabled: true,
            admin_max_connections: 4_096,
            admin_header_timeout_ms: 5_000,
            admin_body_timeout_ms: 10_000,
            // Fits a max_frame_bytes payload (64 KiB by default) base64-encoded in its JSON.
            admin_max_body_bytes: 256 * 1024,
            admin_keep_alive: true,
            probes: false,
            max_topics_per_session: 32,
            history_max_messages: 64,
            history_max_bytes: 256 * 1024,
            history_max_age_ms: 300_000,
            history_max_bytes_per_shard: 64 * 1024 * 1024,
            client_inbox_max_messages: 16,
            client_inbox_max_age_ms: 60_000,
            event_pipeline_capacity: 4_096,
            event_parked_max: 65_536,
            event_overflow_policy: crate::events::OverflowPolicy::Drop,
            trending_topic: Config::DEFAULT_TRENDING_TOPIC.to_owned(),
            trending_window_s: 60,
            trending_interval_ms: 1_000,
            trending_top_k: 10,
            publish_secret: None,
            publisher_client_id_prefix: "publisher:".to_owned(),
            nats_url: None,
            cluster_host_id: None,
            cluster_mode: ClusterMode::Core,
            jetstream_stream: "HOLDFAST".to_owned(),
            jetstream_max_age_ms: 3_600_000,
            jetstream_max_messages: 10_000_000,
            jetstream_max_bytes: 1 << 30,
            jetstream_publish_timeout_ms: 2_000,
            ws_listen: None,
            ws_path: "/ws".to_owned(),
            ws_allowed_origins: Vec::new(),
            tls_listen: None,
            tls_cert_file: None,
            tls_key_file: None,
            log_format: LogFormat::Text,
        }
    }
}

/// A config that cannot run, with the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("config key {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// The most entries one io_uring fixed-file table may have (IORING_MAX_FIXED_FILES in
/// io_uring/rsrc.c); RLIMIT_NOFILE caps it further.
pub const IORING_MAX_FIXED_FILES: u32 = 1 << 20;

/// Smallest `ring_max_fixed_files`: a ring's table must hold more than the accepts that may
/// land while the shard moves its accepts to another ring (ACCEPT_RING_HEADROOM_SLOTS).
pub const MIN_RING_FIXED_FILES: u32 = 256;

/// Fewest provided receive buffers one ring of a shard of several rings gets.
pub const MIN_RECV_BUFFERS_PER_RING: u16 = 16;

/// Fewest submission queue entries one ring of a shard of several rings gets (its share of
/// `ring_sq_entries`); its completion queue gets at least twice as many.
pub const MIN_RING_SQ_ENTRIES: u32 = 64;

/// Bounds of a non-zero `socket_send_buffer_bytes`.
pub const MIN_SOCKET_SEND_BUFFER_BYTES: u32 = 4_096;
pub const MAX_SOCKET_SEND_BUFFER_BYTES: u32 = 64 * 1024 * 1024;

/// Connection slots per shard beyond `max_connections_per_shard`, in which a connection over
/// the cap is accepted just long enough to get Error(server_full) with a reconnect hint.
pub const SERVER_FULL_REFUSAL_SLOTS: u32 = 64;

/// RLIMIT_NOFILE (soft), capped at the most slots a connection id can name: the largest
/// fixed-file table a ring may register.
fn nofile_limit() -> u32 {
    let (soft, _hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
    u32::try_from(soft)
        .unwrap_or(u32::MAX)
        .min(crate::conn::id::MAX_SLOTS_PER_SHARD - 1)
}

impl Config {
    /// Shards to run: the configured count, or one per available CPU.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        }
    }

    /// Connections per shard: the configured value, or RLIMIT_NOFILE less the refusal slots
    /// (a ring's fixed-file table may not exceed RLIMIT_NOFILE).
    pub fn capacity_per_shard(&self) -> u32 {
        match self.max_connections_per_shard {
            0 => nofile_limit()
                .saturating_sub(SERVER_FULL_REFUSAL_SLOTS)
                .max(1),
            n => n,
        }
    }

    /// Entries of one ring's fixed-file table: the smallest of the kernel's cap
    /// (IORING_MAX_FIXED_FILES), RLIMIT_NOFILE (io_uring/rsrc.c checks both at registration)
    /// and `ring_max_fixed_files`.
    pub fn ring_table_slots(&self) -> u32 {
        IORING_MAX_FIXED_FILES
            .min(nofile_limit())
            .min(self.ring_max_fixed_files)
            .max(1)
    }

    /// Connection slots of one shard: sessions plus refusal slots.
    pub fn ring_slots_per_shard(&self) -> u32 {
        self.capacity_per_shard() + self.refusal_slots_per_shard()
    }

    /// Rings each shard owns: as many tables of `ring_table_slots` as its slots need.
    pub fn rings_per_shard(&self) -> u64 {
        crate::ring::set::rings_needed(
            u64::from(self.ring_slots_per_shard()),
            u64::from(self.ring_table_slots()),
        )
    }

    /// Whether each shard's rings can be built on this host: its slots (sessions plus refusal
    /// slots) split into tables of at most `ring_table_slots` entries (the kernel's
    /// IORING_MAX_FIXED_FILES and RLIMIT_NOFILE, io_uring/rsrc.c) must need no more than
    /// MAX_RINGS_PER_SHARD rings. The error names the limit and the fix.
    pub fn check_ring_table(&self) -> Result<(), String> {
        use crate::ring::set::MAX_RINGS_PER_SHARD;
        let sessions = self.capacity_per_shard();
        let rings = self.rings_per_shard();
        if rings <= u64::from(MAX_RINGS_PER_SHARD) {
            return Ok(());
        }
        let table = self.ring_table_slots();
        let nofile = nofile_limit();
        let slots = u64::from(self.ring_slots_per_shard());
        let bound =
            if table == nofile && nofile < IORING_MAX_FIXED_FILES.min(self.ring_max_fixed_files) {
                format!(
                "RLIMIT_NOFILE = {nofile} caps each io_uring fixed-file table: raise LimitNOFILE= \
                 in holdfast.service (or ulimit -n) to at least {}",
                slots
                    .div_ceil(u64::from(MAX_RINGS_PER_SHARD))
                    .min(u64::from(IORING_MAX_FIXED_FILES))
            )
            } else if table == self.ring_max_fixed_files && table < IORING_MAX_FIXED_FILES {
                format!("ring_max_fixed_files = {table} caps each ring's table: raise it")
            } else {
                format!(
                    "the kernel caps one io_uring fixed-file table at {IORING_MAX_FIXED_FILES} \
                 (IORING_MAX_FIXED_FILES): run more shards (shards = N, one per core)"
                )
            };
        Err(format!(
            "max_connections_per_shard = {sessions} needs {rings} io_uring rings per shard of at \
             most {table} fixed files each, above MAX_RINGS_PER_SHARD = {MAX_RINGS_PER_SHARD}: \
             {bound}, or lower max_connections_per_shard"
        ))
    }

    /// Provided receive buffers of each of a shard's rings. One ring: recv_buffers_per_shard.
    /// Several: the shard's buffers split between them (a power of two, at least
    /// MIN_RECV_BUFFERS_PER_RING), so a shard of many rings does not multiply its buffer
    /// memory. Each ring keeps at most this many recvs in flight (shard/state.rs,
    /// `RecvBudget`), so no ring's buffers run dry.
    pub fn recv_buffers_per_ring(&self) -> u16 {
        self.recv_buffers_for_rings(self.rings_per_shard())
    }

    /// Each ring's share of recv_buffers_per_shard in a shard of `rings` rings (see
    /// [`Config::recv_buffers_per_ring`]; `holdfast tune` asks for a planned ring count).
    pub fn recv_buffers_for_rings(&self, rings: u64) -> u16 {
        if rings <= 1 {
            return self.recv_buffers_per_shard;
        }
        let share = (u64::from(self.recv_buffers_per_shard) / rings).max(1);
        let floor_pow2 = 1u64 << (63 - share.leading_zeros());
        floor_pow2
            .max(u64::from(MIN_RECV_BUFFERS_PER_RING))
            .min(u64::from(self.recv_buffers_per_shard)) as u16
    }

    /// Each ring's (submission, completion) queue entries in a shard of `rings` rings: one
    /// ring, ring_sq_entries and ring_cq_entries; several, each its share of them, rounded
    /// down to a power of two (the kernel rounds up), at least MIN_RING_SQ_ENTRIES and twice
    /// that. A shard's completions at once then stay near ring_cq_entries however many rings
    /// it owns (a reap takes at most what the queues hold), and so does its ring memory.
    pub fn ring_entries_for_rings(&self, rings: u64) -> (u32, u32) {
        if rings <= 1 {
            return (self.ring_sq_entries, self.ring_cq_entries);
        }
        let share = |entries: u32, min: u32| -> u32 {
            let share = (u64::from(entries) / rings).max(1);
            let floor_pow2 = 1u64 << (63 - share.leading_zeros());
            (floor_pow2 as u32).clamp(min, entries.max(min))
        };
        let sq = share(self.ring_sq_entries, MIN_RING_SQ_ENTRIES);
        let cq = share(self.ring_cq_entries, 2 * sq);
        (sq, cq)
    }

    /// Slots beyond `capacity_per_shard` in which connections over the cap are told
    /// Error(server_full): [`SERVER_FULL_REFUSAL_SLOTS`]; or, when the sessions fit one ring's
    /// table, fewer if that table has no more room (then the kernel closes over-cap
    /// connections at accept instead), so the refusal slots never cost a second ring.
    pub fn refusal_slots_per_shard(&self) -> u32 {
        let table = self.ring_table_slots();
        let capacity = self.capacity_per_shard();
        if capacity <= table {
            (table - capacity).min(SERVER_FULL_REFUSAL_SLOTS)
        } else {
            SERVER_FULL_REFUSAL_SLOTS
        }
    }
}

impl Config {
    /// Defaults, then `file` (if any), then HOLDFAST_* env, then `overrides` (CLI flags).
    pub fn load(file: Option<&Path>, overrides: &impl Serialize) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(invalid(
                    "--config",
                    format!("file {} does not exist", path.display()),
                ));
            }
            figment = figment.merge(Toml::file(path));
        }
        let keys = config_keys();
        let config: Config = figment
            .merge(
                Env::prefixed(ENV_PREFIX).filter(move |key| keys.iter().any(|k| key == k.as_str())),
            )
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every key against its bounds and against the others.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.shards > MAX_SHARDS {
            return Err(invalid("shards", format!("at most {MAX_SHARDS}")));
        }
        if !(MIN_RING_FIXED_FILES..=IORING_MAX_FIXED_FILES).contains(&self.ring_max_fixed_files) {
            return Err(invalid(
                "ring_max_fixed_files",
                format!("between {MIN_RING_FIXED_FILES} and {IORING_MAX_FIXED_FILES}"),
            ));
        }
        if self.max_connections_per_shard > MAX_SLOTS_PER_SHARD - SERVER_FULL_REFUSAL_SLOTS {
            return Err(invalid(
                "max_connections_per_shard",
                format!(
                    "at most {} (a shard's slots, refusal slots included, are named by 24 bits)",
                    MAX_SLOTS_PER_SHARD - SERVER_FULL_REFUSAL_SLOTS
                ),
            ));
        }
        if self.socket_send_buffer_bytes != 0
            && !(MIN_SOCKET_SEND_BUFFER_BYTES..=MAX_SOCKET_SEND_BUFFER_BYTES)
                .contains(&self.socket_send_buffer_bytes)
        {
            return Err(invalid(
                "socket_send_buffer_bytes",
                format!(
                    "0 (kernel autotuning) or {MIN_SOCKET_SEND_BUFFER_BYTES} ..= \
                     {MAX_SOCKET_SEND_BUFFER_BYTES}"
                ),
            ));
        }
        if self.max_partial_frame_bytes_per_shard < u64::from(self.max_frame_bytes) {
            return Err(invalid(
                "max_partial_frame_bytes_per_shard",
                "at least max_frame_bytes (one connection's largest incomplete frame)",
            ));
        }
        if !(MIN_MAX_FRAME_BYTES..=MAX_FRAME_BYTES_CEILING).contains(&self.max_frame_bytes) {
            return Err(invalid(
                "max_frame_bytes",
                format!("between {MIN_MAX_FRAME_BYTES} and {MAX_FRAME_BYTES_CEILING}"),
            ));
        }
        if self.max_outbound_bytes < 2 * self.max_frame_bytes {
            return Err(invalid(
                "max_outbound_bytes",
                "at least twice max_frame_bytes",
            ));
        }
        if self.max_inflight_requests == 0 || self.max_inflight_requests > u32::from(u16::MAX) {
            return Err(invalid("max_inflight_requests", "between 1 and 65535"));
        }
        if self.timer_tick_ms == 0 || self.timer_tick_ms > 1_000 {
            return Err(invalid("timer_tick_ms", "between 1 and 1000"));
        }
        for (key, value) in [
            ("hello_timeout_ms", self.hello_timeout_ms),
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("heartbeat_timeout_ms", self.heartbeat_timeout_ms),
            ("close_linger_ms", self.close_linger_ms),
            ("drain_timeout_ms", self.drain_timeout_ms),
            ("frame_timeout_ms", self.frame_timeout_ms),
        ] {
            if value < self.timer_tick_ms || value > 24 * 3600 * 1000 {
                return Err(invalid(key, "between timer_tick_ms and one day"));
            }
        }
        if self.heartbeat_min_interval_ms > self.heartbeat_interval_ms {
            return Err(invalid(
                "heartbeat_min_interval_ms",
                "at most heartbeat_interval_ms",
            ));
        }
        if self.heartbeat_timeout_ms <= self.heartbeat_interval_ms {
            return Err(invalid(
                "heartbeat_timeout_ms",
                "above heartbeat_interval_ms",
            ));
        }
        if !self.recv_buffers_per_shard.is_power_of_two() || self.recv_buffers_per_shard > 32_768 {
            return Err(invalid(
                "recv_buffers_per_shard",
                "a power of two up to 32768",
            ));
        }
        if self.multishot_recv_max_per_shard > u32::from(self.recv_buffers_per_shard) / 2 {
            return Err(invalid(
                "multishot_recv_max_per_shard",
                "at most half of recv_buffers_per_shard (each may hold a buffer at any time)",
            ));
        }
        if !(1024..=1024 * 1024).contains(&self.recv_buffer_bytes) {
            return Err(invalid("recv_buffer_bytes", "between 1024 and 1048576"));
        }
        if !self.ring_sq_entries.is_power_of_two() || !(64..=32_768).contains(&self.ring_sq_entries)
        {
            return Err(invalid(
                "ring_sq_entries",
                "a power of two between 64 and 32768",
            ));
        }
        if self.ring_cq_entries < 2 * self.ring_sq_entries || self.ring_cq_entries > 65_536 {
            return Err(invalid(
                "ring_cq_entries",
                "between 2 x ring_sq_entries and 65536",
            ));
        }
        if matches!(&self.auth_secret, Some(secret) if secret.len() < 16) {
            return Err(invalid("auth_secret", "at least 16 bytes"));
        }
        if self.admin_enabled
            && self.admin_listen.port() != 0
            && self.admin_listen.port() == self.listen.port()
        {
            return Err(invalid(
                "admin_listen",
                "a port other than listen's (or admin_enabled = false)",
            ));
        }
        if let Some(ws) = self.ws_listen {
            if ws.port() != 0 && [self.listen.port(), self.admin_listen.port()].contains(&ws.port())
            {
                return Err(invalid(
                    "ws_listen",
                    "a port other than listen's and admin_listen's",
                ));
            }
        }
        if let Some(tls) = self.tls_listen {
            let others = [
                Some(self.listen.port()),
                Some(self.admin_listen.port()),
                self.ws_listen.map(|ws| ws.port()),
            ];
            if tls.port() != 0 && others.contains(&Some(tls.port())) {
                return Err(invalid(
                    "tls_listen",
                    "a port other than listen's, admin_listen's and ws_listen's",
                ));
            }
            if self.tls_cert_file.is_none() {
                return Err(invalid(
                    "tls_cert_file",
                    "set (a PEM file) when tls_listen is",
                ));
            }
            if self.tls_key_file.is_none() {
                return Err(invalid(
                    "tls_key_file",
                    "set (a PEM file) when tls_listen is",
                ));
            }
        }
        if !self.ws_path.starts_with('/') || self.ws_path.contains(['?', '#', ' ']) {
            return Err(invalid("ws_path", "a path starting with / (no query)"));
        }
        if !(1..=65_536).contains(&self.admin_max_connections) {
            return Err(invalid("admin_max_connections", "between 1 and 65536"));
        }
        for (key, value) in [
            ("admin_header_timeout_ms", self.admin_header_timeout_ms),
            ("admin_body_timeout_ms", self.admin_body_timeout_ms),
        ] {
            if !(100..=600_000).contains(&value) {
                return Err(invalid(key, "between 100 and 600000"));
            }
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.admin_max_body_bytes) {
            return Err(invalid("admin_max_body_bytes", "between 1024 and 67108864"));
        }
        if !(1..=1024).contains(&self.max_topics_per_session) {
            return Err(invalid("max_topics_per_session", "between 1 and 1024"));
        }
        if self.history_max_messages > 1_048_576 || self.client_inbox_max_messages > 65_536 {
            return Err(invalid(
                "history_max_messages",
                "at most 1048576 (client_inbox_max_messages: at most 65536)",
            ));
        }
        if (self.history_max_bytes_per_shard > 0
            && self.history_max_bytes > self.history_max_bytes_per_shard)
            || self.history_max_bytes_per_shard > 1 << 40
        {
            return Err(invalid(
                "history_max_bytes",
                "at most history_max_bytes_per_shard (at most 2^40)",
            ));
        }
        if self.history_max_age_ms > 86_400_000 || self.client_inbox_max_age_ms > 86_400_000 {
            return Err(invalid("history_max_age_ms", "at most 86400000 (one day)"));
        }
        if !(1..=1_048_576).contains(&self.event_pipeline_capacity) {
            return Err(invalid("event_pipeline_capacity", "between 1 and 1048576"));
        }
        if !(1..=1_048_576).contains(&self.event_parked_max) {
            return Err(invalid("event_parked_max", "between 1 and 1048576"));
        }
        if !crate::mesh::valid_topic(&self.trending_topic) {
            return Err(invalid("trending_topic", "1..=128 bytes, not \"*\""));
        }
        if !(1..=3_600).contains(&self.trending_window_s) {
            return Err(invalid("trending_window_s", "between 1 and 3600"));
        }
        if !(10..=3_600_000).contains(&self.trending_interval_ms) {
            return Err(invalid("trending_interval_ms", "between 10 and 3600000"));
        }
        if !(1..=1_000).contains(&self.trending_top_k) {
            return Err(invalid("trending_top_k", "between 1 and 1000"));
        }
        if matches!(&self.publish_secret, Some(secret) if secret.len() < 16) {
            return Err(invalid("publish_secret", "at least 16 bytes"));
        }
        if let Some(url) = &self.nats_url {
            let addr = url.strip_prefix("nats://").unwrap_or(url);
            if addr.parse::<SocketAddr>().is_err() {
                return Err(invalid(
                    "nats_url",
                    "nats://IP:PORT with an IP literal, e.g. nats://127.0.0.1:4222",
                ));
            }
        }
        if matches!(&self.cluster_host_id, Some(id) if id.is_empty() || id.len() > 64) {
            return Err(invalid("cluster_host_id", "1..=64 bytes"));
        }
        if self.cluster_mode == ClusterMode::JetStream && self.nats_url.is_none() {
            return Err(invalid("cluster_mode", "\"jetstream\" needs nats_url"));
        }
        let stream_name_ok = !self.jetstream_stream.is_empty()
            && self.jetstream_stream.len() <= 64
            && self
                .jetstream_stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !stream_name_ok {
            return Err(invalid("jetstream_stream", "1..=64 of A-Z a-z 0-9 _ -"));
        }
        if !(1_000..=30 * 86_400_000).contains(&self.jetstream_max_age_ms) {
            return Err(invalid(
                "jetstream_max_age_ms",
                "between 1000 and 2592000000 (30 days)",
            ));
        }
        if !(1..=1_000_000_000).contains(&self.jetstream_max_messages) {
            return Err(invalid(
                "jetstream_max_messages",
                "between 1 and 1000000000",
            ));
        }
        if !(1 << 20..=1 << 40).contains(&self.jetstream_max_bytes) {
            return Err(invalid("jetstream_max_bytes", "between 1 MiB and 1 TiB"));
        }
        if !(100..=JETSTREAM_PUBLISH_TIMEOUT_MAX_MS).contains(&self.jetstream_publish_timeout_ms) {
            return Err(invalid(
                "jetstream_publish_timeout_ms",
                "between 100 and 4000 (the admin waits 5000 for an answer)",
            ));
        }
        Ok(())
    }

    /// The effective config as TOML (what `holdfast check-config` prints). The auth secret is
    /// shown only as set or unset.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        if shown.auth_secret.is_some() {
            shown.auth_secret = Some("<set>".to_owned());
        }
        if shown.publish_secret.is_some() {
            shown.publish_secret = Some("<set>".to_owned());
        }
        toml::to_string(&shown).expect("config serializes")
    }

    pub fn heartbeat_ticks(&self, ms: u64) -> u32 {
        ms.div_ceil(self.timer_tick_ms).max(1) as u32
    }
}

/// Every config key (the fields of [`Config`]).
pub fn config_keys() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
        _ => unreachable!("Config serializes to a JSON object"),
    }
}

/// The `HOLDFAST_*` variables in `vars` that name no config key (and are not `HOLDFAST_LOG`),
/// sorted: what `serve` leaves out and warns about once.
pub fn unknown_env_vars(vars: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let keys = config_keys();
    let mut unknown: Vec<String> = vars
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| {
            let Some(key) = name
                .get(..ENV_PREFIX.len())
                .filter(|prefix| prefix.eq_ignore_ascii_case(ENV_PREFIX))
                .and_then(|_| name.get(ENV_PREFIX.len()..))
            else {
                return false;
            };
            let known = |k: &str| k.eq_ignore_ascii_case(key);
            !keys.iter().any(|k| known(k)) && !ENV_NOT_KEYS.iter().any(|k| known(k))
        })
        .collect();
    unknown.sort();
    unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard of several rings splits its receive buffers between them instead of giving
    /// each ring the whole count; one ring keeps them all.
    #[test]
    fn several_rings_share_the_shards_receive_buffers() {
        let one = Config {
            max_connections_per_shard: 100,
            ..Config::default()
        };
        assert_eq!(one.rings_per_shard(), 1);
        assert_eq!(one.recv_buffers_per_ring(), one.recv_buffers_per_shard);
        let many = Config {
            max_connections_per_shard: 3_000,
            ring_max_fixed_files: 1_000,
            recv_buffers_per_shard: 256,
            multishot_recv_max_per_shard: 64,
            ..Config::default()
        };
        assert_eq!(many.rings_per_shard(), 4);
        assert_eq!(many.recv_buffers_per_ring(), 64);
        let thin = Config {
            max_connections_per_shard: 60_000,
            ring_max_fixed_files: 1_000,
            recv_buffers_per_shard: 256,
            ..Config::default()
        };
        assert_eq!(thin.rings_per_shard(), 61);
        assert_eq!(thin.recv_buffers_per_ring(), MIN_RECV_BUFFERS_PER_RING);
        thin.check_ring_table().unwrap();
        let past = Config {
            max_connections_per_shard: 65_000,
            ..thin
        };
        let err = past.check_ring_table().unwrap_err();
        assert!(err.contains("MAX_RINGS_PER_SHARD"), "{err}");
        assert!(err.contains("ring_max_fixed_files"), "{err}");
    }

    /// A shard of several rings splits its SQ and CQ entries between them (29 rings of the
    /// full 4,096 / 32,768 each mapped 46 MB per process at the 1M shape); one ring keeps
    /// them all; no ring gets fewer than the minimum, nor a CQ under twice its SQ.
    #[test]
    fn several_rings_share_the_shards_queue_entries() {
        let config = Config {
            ring_sq_entries: 4_096,
            ring_cq_entries: 32_768,
            ..Config::default()
        };
        assert_eq!(config.ring_entries_for_rings(1), (4_096, 32_768));
        assert_eq!(config.ring_entries_for_rings(2), (2_048, 16_384));
        // 29 rings (1M sessions on 2 shards with RLIMIT_NOFILE 20,000): 141 and 1,129 each,
        // rounded down to powers of two, so the shard's rings hold no more than one did.
        let (sq, cq) = config.ring_entries_for_rings(29);
        assert_eq!((sq, cq), (128, 1_024));
        assert!(29 * u64::from(cq) <= 32_768 && 29 * u64::from(sq) <= 4_096);
        assert_eq!(
            config.ring_entries_for_rings(64),
            (MIN_RING_SQ_ENTRIES, 512)
        );
        let small = Config {
            ring_sq_entries: 64,
            ring_cq_entries: 128,
            ..Config::default()
        };
        assert_eq!(
            small.ring_entries_for_rings(64),
            (MIN_RING_SQ_ENTRIES, 2 * MIN_RING_SQ_ENTRIES)
        );
        // An odd CQ budget still gives powers of two at least twice the SQ.
        let odd = Config {
            ring_sq_entries: 256,
            ring_cq_entries: 3_000,
            ..Config::default()
        };
        assert_eq!(odd.ring_entries_for_rings(3), (64, 512));
    }

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn websocket_keys_load_from_toml_and_a_clashing_port_or_bad_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ws.toml");
        std::fs::write(
            &path,
            "ws_listen = \"127.0.0.1:7879\"\nws_path = \"/holdfast\"\n\
             ws_allowed_origins = [\"file://\", \"https://app.example\"]\n",
        )
        .unwrap();
        let config = Config::load(Some(&path), &serde_json::json!({})).unwrap();
        assert_eq!(
            config.ws_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 7879)))
        );
        assert_eq!(config.ws_path, "/holdfast");
        assert_eq!(
            config.ws_allowed_origins,
            ["file://", "https://app.example"]
        );
        config.validate().unwrap();
        let clash = Config {
            ws_listen: Some(Config::default().listen),
            ..Config::default()
        };
        let err = clash.validate().unwrap_err().to_string();
        assert!(err.contains("ws_listen"), "{err}");
        let bad_path = Config {
            ws_path: "ws?x=1".to_owned(),
            ..Config::default()
        };
        let err = bad_path.validate().unwrap_err().to_string();
        assert!(err.contains("ws_path"), "{err}");
    }

    #[test]
    fn unknown_holdfast_env_vars_are_named_and_keys_log_and_other_vars_are_not() {
        let vars = [
            ("HOLDFAST_VERSION", "1"),
            ("HOLDFAST_SHARDS", "2"),
            ("HOLDFAST_LOG", "debug"),
            ("HOLDFAST_ADMIN_MAX_CONNECTIONS", "10"),
            ("HOLDFAST_BIN", "/x"),
            ("PATH", "/bin"),
            ("HOLDFAST", "x"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(unknown_env_vars(vars), ["HOLDFAST_BIN", "HOLDFAST_VERSION"]);
        assert!(config_keys().iter().any(|k| k == "admin_max_connections"));
        assert!(
            config_keys().iter().any(|k| k == "nats_url"),
            "None keys count too"
        );
    }

    #[test]
    fn outbound_below_two_frames_is_refused_with_its_key() {
        let config = Config {
            max_outbound_bytes: 1000,
            ..Config::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("max_outbound_bytes"), "{err}");
    }

    #[test]
    fn nats_url_must_be_an_ip_literal() {
        let config = Config {
            nats_url: Some("nats://127.0.0.1:4222".to_owned()),
            ..Config::default()
        };
        config.validate().unwrap();
        let named = Config {
            nats_url: Some("nats://localhost:4222".to_owned()),
            ..Config::default()
        };
        let err = named.validate().unwrap_err().to_string();
        assert!(err.contains("nats_url"), "{err}");
    }

    #[test]
    fn jetstream_mode_needs_nats_and_sane_stream_settings_each_refused_by_its_key() {
        let jetstream = Config {
            nats_url: Some("nats://127.0.0.1:4222".to_owned()),
            cluster_mode: ClusterMode::JetStream,
            ..Config::default()
        };
        jetstream.validate().unwrap();
        let cases = [
            (
                "cluster_mode",
                Config {
                    nats_url: None,
                    ..jetstream.clone()
                },
            ),
            (
                "jetstream_stream",
                Config {
                    jetstream_stream: "a.b".into(),
                    ..jetstream.clone()
                },
            ),
            (
                "jetstream_stream",
                Config {
                    jetstream_stream: String::new(),
                    ..jetstream.clone()
                },
            ),
            (
                "jetstream_max_age_ms",
                Config {
                    jetstream_max_age_ms: 10,
                    ..jetstream.clone()
                },
            ),
            (
                "jetstream_max_messages",
                Config {
                    jetstream_max_messages: 0,
                    ..jetstream.clone()
                },
            ),
            (
                "jetstream_max_bytes",
                Config {
                    jetstream_max_bytes: 1024,
                    ..jetstream.clone()
                },
            ),
            (
                "jetstream_publish_timeout_ms",
                Config {
                    jetstream_publish_timeout_ms: JETSTREAM_PUBLISH_TIMEOUT_MAX_MS + 1,
                    ..jetstream.clone()
                },
            ),
        ];
        for (key, config) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        let parsed: Config =
            toml::from_str("nats_url = \"nats://127.0.0.1:4222\"\ncluster_mode = \"jetstream\"\n")
                .unwrap();
        assert_eq!(parsed.cluster_mode, ClusterMode::JetStream);
    }

    #[test]
    fn admin_on_the_listen_port_is_refused_with_its_key() {
        let config = Config {
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            ..Config::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("admin_listen"), "{err}");
        let off = Config {
            admin_enabled: false,
            ..config
        };
        off.validate().unwrap();
    }
}
