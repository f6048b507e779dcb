//! Command-line surface. Every limit is a flag with its unit in the name.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::msg::StormMode;

/// push: the admin listener when `--admin` is not given (holdfast's default `admin_listen`).
pub const PUSH_ADMIN_DEFAULT: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 9878));

#[derive(Parser, Debug)]
#[command(
    name = "holdfast-bench",
    version,
    about = "Load harness for Holdfast: HDR latency, server CPU and memory per session"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Open N sessions (Hello/Welcome) at a rate, hold them: setup latency, failures, server memory.
    Connect(RunArgs),
    /// Closed loop: K Echo frames in flight per session, replies checked byte-exact.
    Echo(RunArgs),
    /// Open loop: a fixed total rate of Echo frames, latency from each frame's intended send time.
    Rate(RunArgs),
    /// Open loop: a fixed total rate of Request frames to --method, Responses checked.
    Request(RunArgs),
    /// Hold N sessions, drop them all at once (or wait for Goodbye), time until all are back.
    Storm(RunArgs),
    /// Subscribe N sessions to --topic and publish over the admin HTTP listener (--rate-per-s
    /// publishes per second, or --broadcast-burst K): delivery latency, gaps, duplicates.
    Push(RunArgs),
    /// Send Event frames as fast as the server takes them: closed loop with --ack
    /// (--inflight-events awaiting their Ack per session), else streaming: events accepted per
    /// second and per server CPU-second, drops (scraped from --admin /metrics).
    Events(RunArgs),
    /// Draw latency-by-percentile (.hgrm) and latency-over-time (.hlog) charts, SVG and PNG.
    Plot(PlotArgs),
    /// Run the same echo workload against Holdfast and each baseline; print the ratio table.
    Compare(CompareArgs),
    /// Internal: one worker process (started by the parent with its plan as JSON).
    #[command(name = "__worker", hide = true)]
    Worker { plan_json: String },
    /// Internal: one worker process of `storm --resume` (started by the parent with its plan).
    #[command(name = "__resume-worker", hide = true)]
    ResumeWorker { plan_json: String },
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Server address (loopback only).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub target: SocketAddr,
    /// Sessions in total, spread over worker processes.
    #[arg(long, default_value_t = 100)]
    pub sessions: u32,
    /// Worker processes at least (more are added to keep each under --sessions-per-worker).
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Sessions per worker process at most (each session is one fd; RLIMIT_NOFILE is 20,000 here).
    #[arg(long, default_value_t = crate::worker::SESSIONS_PER_WORKER_MAX)]
    pub sessions_per_worker: u32,
    /// Sessions per loopback source address (127.0.0.2, .3, ...), under the ~28k ephemeral ports.
    #[arg(long, default_value_t = crate::sockets::SESSIONS_PER_SOURCE_ADDR_DEFAULT)]
    pub sessions_per_source_addr: u32,
    /// Transport under the frames: plain TCP, TLS (ALPN holdfast/1), WebSocket (binary messages,
    /// subprotocol holdfast.v1) or WebSocket over TLS. Its handshake counts in the setup time.
    #[arg(long, value_enum, default_value_t = crate::transport::TransportKind::Tcp)]
    pub transport: crate::transport::TransportKind,
    /// tls, wss: PEM file of the server's certificate (or its CA) to trust.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// tls, wss: the name the server's certificate must carry (sent as SNI).
    #[arg(long, default_value = "localhost")]
    pub tls_server_name: String,
    /// ws, wss: the path of the HTTP Upgrade (the server's ws_path).
    #[arg(long, default_value = "/ws")]
    pub ws_path: String,
    /// Skip Hello/Welcome and speak only Echo frames (for servers that know no sessions).
    #[arg(long)]
    pub raw: bool,
    /// Auth secret of the server: Hellos then carry a signed token instead of being anonymous.
    #[arg(long, env = "HOLDFAST_BENCH_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    #[arg(long, default_value = "bench-")]
    pub client_id_prefix: String,
    #[arg(long, default_value_t = 3600)]
    pub token_ttl_s: u64,
    /// New sessions per second in total (0: as fast as --connect-concurrency allows).
    #[arg(long, default_value_t = 0)]
    pub connect_rate_per_s: u64,
    /// Connects and handshakes in progress per worker at most.
    #[arg(long, default_value_t = 1_000)]
    pub connect_concurrency: u32,
    /// A connect plus handshake that takes longer fails with cause *_timeout.
    #[arg(long, default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,
    /// Setup (all sessions open or failed) longer than this: go on with the sessions that are open.
    #[arg(long, default_value_t = 300)]
    pub setup_timeout_s: u64,
    /// Requests in flight per session (echo: closed loop window; rate/request: at most).
    #[arg(long, default_value_t = 1)]
    pub inflight: u32,
    /// Payload bytes per Echo frame or Request body (48 gives 64-byte Echo frames); push: bytes
    /// of each published payload (at least 8: the publish timestamp); events: of each Event's payload.
    #[arg(long, default_value_t = 48)]
    pub payload_bytes: u32,
    /// rate/request: frames per second in total, over all sessions; push: publishes per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate_per_s: u64,
    /// request: handler method.
    #[arg(long, default_value = "echo")]
    pub method: String,
    #[arg(long, default_value_t = holdfast_protocol::MAX_FRAME_BYTES_DEFAULT)]
    pub max_frame_bytes: u32,
    /// Client Ping interval on idle sessions (lowered to the server's Welcome heartbeat_ms).
    #[arg(long, default_value_t = 10_000)]
    pub ping_interval_ms: u64,
    /// Warm-up before measuring (traffic runs, samples are not recorded in the report).
    #[arg(long, default_value_t = 2)]
    pub warmup_s: u64,
    /// Measured window (connect: how long sessions are held).
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// After the window, wait at most this long for replies still in flight.
    #[arg(long, default_value_t = 1_000)]
    pub drain_ms: u64,
    /// storm: how sessions go down.
    #[arg(long, value_enum, default_value_t = StormMode::ClientClose)]
    pub storm_mode: StormMode,
    /// storm: how long sessions are held before the drop.
    #[arg(long, default_value_t = 2)]
    pub hold_s: u64,
    /// storm: retry delay after a refused or failed reconnect.
    #[arg(long, default_value_t = 100)]
    pub retry_backoff_ms: u64,
    /// storm --storm-mode goodbye --resume: drain-and-resume. Starts --server-bin with
    /// --server-config, subscribes --sessions holdfast-client sessions (session i to topic
    /// i mod --resume-topics), publishes --rate-per-s round-robin over the topics through
    /// --admin, SIGTERMs the server after --hold-s and restarts it, publishes --duration-s more;
    /// reports published, delivered, duplicates, lost, and the time until every session is back.
    #[arg(long, help_heading = "storm --resume")]
    pub resume: bool,
    /// storm --resume: topics the sessions are spread over.
    #[arg(long, default_value_t = 4, help_heading = "storm --resume")]
    pub resume_topics: u32,
    /// storm --resume: ceiling of each session's reconnect delay (holdfast-client's
    /// reconnect_max_delay_ms; the delay doubles from --retry-backoff-ms with full jitter).
    #[arg(long, default_value_t = holdfast_client::RECONNECT_MAX_DELAY_MS_DEFAULT, help_heading = "storm --resume")]
    pub reconnect_max_delay_ms: u64,
    /// storm --resume: how long to wait, from the SIGTERM, for every session to be back (at
    /// least twice --reconnect-max-delay-ms: a session may wait that long between attempts).
    #[arg(long, default_value_t = 120, help_heading = "storm --resume")]
    pub back_timeout_s: u64,
    /// storm --resume: the holdfast binary to start, SIGTERM and restart.
    #[arg(long, help_heading = "storm --resume")]
    pub server_bin: Option<PathBuf>,
    /// storm --resume: its config file (must listen on --target, admin on --admin).
    #[arg(long, help_heading = "storm --resume")]
    pub server_config: Option<PathBuf>,
    /// The server's admin HTTP listener (loopback only). push: where `POST /publish` goes
    /// (default 127.0.0.1:9878); events: where `GET /metrics` is scraped for the server's
    /// accepted and dropped event counts (default: not scraped).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// push: topic every session subscribes to (and the publisher publishes on).
    #[arg(long, default_value = "bench", help_heading = "push")]
    pub topic: String,
    /// push: instead of publishing on --topic at --rate-per-s, send K broadcasts as fast as one
    /// HTTP client can at the start of the window (latency and deliveries/s of a fan-out).
    #[arg(long, help_heading = "push")]
    pub broadcast_burst: Option<u64>,
    /// push: bearer secret for `POST /publish` (the server's publish_secret).
    #[arg(
        long,
        env = "HOLDFAST_BENCH_PUBLISH_SECRET",
        hide_env_values = true,
        help_heading = "push"
    )]
    pub publish_secret: Option<String>,
    /// push: one publish (HTTP request and reply) that takes longer fails with cause timeout.
    #[arg(long, default_value_t = 5_000, help_heading = "push")]
    pub publish_timeout_ms: u64,
    /// events: ask for an Ack on every Event and keep --inflight-events awaiting their Ack per
    /// session (closed loop; latency = send to Ack). Without it, stream with no Ack.
    #[arg(long, help_heading = "events")]
    pub ack: bool,
    /// events: Events per session awaiting their Ack (--ack), or queued in the session's write
    /// buffer at most (streaming; each write carries up to this many).
    #[arg(long, default_value_t = 16, help_heading = "events")]
    pub inflight_events: u32,
    /// events: the Event frames' topic (the item the server's trending processor counts).
    #[arg(long, default_value = "bench", help_heading = "events")]
    pub event_topic: String,
    /// Server process to measure: CPU per round trip (/proc/PID/stat), memory per session (connect).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Directory for the .hgrm, .hlog and .json files.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// File name stem (default: workload and time).
    #[arg(long)]
    pub label: Option<String>,
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// .hgrm files (percentile distribution), .hlog files (interval logs) and/or rate sweep
    /// .csv files (system,offered_per_s,p99_ms,p999_ms: latency by offered load).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Output path prefix: PREFIX-percentiles.{svg,png}, PREFIX-over-time.{svg,png}.
    #[arg(long, default_value = "target/bench/plot")]
    pub out: PathBuf,
    /// TTF font for the labels (PNG and SVG layout need one).
    #[arg(long)]
    pub font: Option<PathBuf>,
    #[arg(long, default_value_t = 1024)]
    pub width_px: u32,
    #[arg(long, default_value_t = 640)]
    pub height_px: u32,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Holdfast server binary (started as `BIN serve --listen ADDR --shards N`).
    #[arg(long)]
    pub holdfast_bin: Option<PathBuf>,
    /// Directory of the baseline binaries (default: next to this binary).
    #[arg(long)]
    pub baselines_dir: Option<PathBuf>,
    /// Use a server that is already running instead of starting one: NAME=ADDR@PID, e.g.
    /// holdfast=127.0.0.1:7878@4242 (repeatable). It is neither started nor stopped.
    #[arg(long = "attach", value_name = "NAME=ADDR@PID")]
    pub attach: Vec<String>,
    /// Targets to run, in this order within each run.
    #[arg(long, value_delimiter = ',', default_value = "holdfast,glommio,tokio")]
    pub targets: Vec<String>,
    /// Connection counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub connections: Vec<u32>,
    /// Transports to measure. tcp runs --targets; tls runs Holdfast's TLS listener against the
    /// tokio-rustls baseline, ws and wss Holdfast's WebSocket listener (wss: on its TLS listener)
    /// against the tokio-tungstenite baseline, with a self-signed certificate made for the run.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "tcp")]
    pub transports: Vec<crate::transport::TransportKind>,
    /// Repetitions of the whole set; medians and spread are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Cores (shards, executors, runtime threads) each server gets.
    #[arg(long, default_value_t = 1)]
    pub server_cores: u32,
    /// First port; each server start uses the next one.
    #[arg(long, default_value_t = 17_800)]
    pub port_base: u16,
    #[arg(long, default_value_t = 1)]
    pub warmup_s: u64,
    #[arg(long, default_value_t = 5)]
    pub duration_s: u64,
    #[arg(long, default_value_t = 48)]
    pub payload_bytes: u32,
    #[arg(long, default_value_t = 1)]
    pub inflight: u32,
    /// Client worker processes (the client's own CPU is reported too).
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Speak only Echo (no Hello) to every target.
    #[arg(long)]
    pub raw: bool,
    /// A server that is not listening within this time fails the run.
    #[arg(long, default_value_t = 10_000)]
    pub server_start_timeout_ms: u64,
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}
