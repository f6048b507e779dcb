//! Configuration: embedded defaults, overridden by a TOML file (`--config`), then by
//! `HOLDFAST_*` environment variables, then by CLI flags (figment merges them in that order).
//! Every limit is a key whose name carries its unit.

use std::net::SocketAddr;
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use holdfast_protocol::header::MAX_FRAME_BYTES_CEILING;
use serde::{Deserialize, Serialize};

use crate::conn::id::{MAX_SHARDS, MAX_SLOTS_PER_SHARD};

/// Smallest `max_frame_bytes` allowed: every frame the server writes itself (Welcome, Error with
/// a reason of at most MAX_ERROR_REASON_BYTES, Goodbye, Pong, Ack) must fit.
pub const MIN_MAX_FRAME_BYTES: u32 = 512;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address every shard listens on (SO_REUSEPORT, one listener per shard).
    pub listen: SocketAddr,
    /// Shards (pinned executors); 0 = one per available CPU.
    pub shards: usize,
    /// Connections one shard holds; also its ring's fixed-file table size. 0 = RLIMIT_NOFILE
    /// (the kernel caps a ring's table there), at most 16,777,215.
    pub max_connections_per_shard: u32,
    pub listen_backlog: u32,
    pub max_frame_bytes: u32,
    /// Bytes queued for one connection (sent and unsent) before it is cut off as a slow consumer.
    pub max_outbound_bytes: u32,
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
    pub ring_sq_entries: u32,
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
    /// Admin HTTP listener (`/metrics`, `/healthz`, `/readyz`); keep it on loopback or a
    /// private network: it has no authentication.
    pub admin_listen: SocketAddr,
    pub admin_enabled: bool,
    /// Attach the eBPF probes to this process at start (`serve --probes`); without eBPF the
    /// server runs without them and logs why.
    pub probes: bool,
    /// Topics one session may subscribe to.
    pub max_topics_per_session: usize,
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
            listen_backlog: 4096,
            max_frame_bytes: holdfast_protocol::MAX_FRAME_BYTES_DEFAULT,
            max_outbound_bytes: 256 * 1024,
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
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9878)),
            admin_enabled: true,
            probes: false,
            max_topics_per_session: 32,
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
            ws_listen: None,
            ws_path: "/ws".to_owned(),
            ws_allowed_origins: Vec::new(),
            tls_listen: None,
            tls_cert_file: None,
            tls_key_file: None,
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

    /// Slots beyond `capacity_per_shard` in which connections over the cap are told
    /// Error(server_full): [`SERVER_FULL_REFUSAL_SLOTS`], or fewer if RLIMIT_NOFILE leaves no
    /// room (then the kernel closes over-cap connections at accept instead).
    pub fn refusal_slots_per_shard(&self) -> u32 {
        nofile_limit()
            .saturating_sub(self.capacity_per_shard())
            .min(SERVER_FULL_REFUSAL_SLOTS)
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
        let config: Config = figment
            .merge(Env::prefixed("HOLDFAST_").ignore(&["log"]))
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
        if self.max_connections_per_shard >= MAX_SLOTS_PER_SHARD {
            return Err(invalid(
                "max_connections_per_shard",
                format!("below {MAX_SLOTS_PER_SHARD}"),
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
        if !(1..=1024).contains(&self.max_topics_per_session) {
            return Err(invalid("max_topics_per_session", "between 1 and 1024"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
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
