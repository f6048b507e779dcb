//! The `holdfast` command.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use holdfast_server::config::{Config, LogFormat};
use serde::Serialize;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes (stable): 0 ok, 1 runtime failure, 2 bad config or usage.
const EXIT_RUNTIME_FAILURE: u8 = 1;
const EXIT_BAD_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "holdfast",
    version,
    about = "A thread-per-core io_uring TCP gateway for millions of long-lived connections"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default command).
    Serve(ConfigArgs),
    /// Validate a config file and print the effective config.
    CheckConfig(ConfigArgs),
    /// Size a host for N connections (sysctls, limits, memory table), or check this host
    /// against a config with --check (exit 3 naming each shortfall).
    Tune(holdfast_server::ops::tune::TuneArgs),
    /// Attach the eBPF probes to a running process (any pid) and print what they see every
    /// interval: run-queue, off/on-CPU, page faults, RSS, TCP srtt and read latency.
    Probe(holdfast_server::probe::ProbeArgs),
    /// Publish a message through a running server's admin listener (POST /publish).
    Publish(holdfast_server::admin::publish_cmd::PublishArgs),
}

/// Config sources: file, then HOLDFAST_* env, then these flags.
#[derive(Args, Default, Serialize)]
struct ConfigArgs {
    /// TOML config file.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:7878.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<std::net::SocketAddr>,
    /// Shards (0 = one per CPU).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    shards: Option<usize>,
    /// Connections per shard (0 = RLIMIT_NOFILE).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections_per_shard: Option<u32>,
    /// HMAC secret for Hello tokens (prefer HOLDFAST_AUTH_SECRET or the file).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_secret: Option<String>,
    /// Admin HTTP listener for /metrics, /healthz, /readyz, e.g. 127.0.0.1:9878.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_listen: Option<std::net::SocketAddr>,
    /// Attach the eBPF probes to this server (needs root or CAP_BPF + CAP_PERFMON).
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    probes: bool,
}

fn main() -> ExitCode {
    // First, so the heap's early pages are 4 KiB ones too: `serve` allows huge pages again if
    // the config asks (heap_huge_pages). A failure leaves the kernel's default, nothing worse.
    let _ = holdfast_server::serve::set_transparent_huge_pages(false);
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve(ConfigArgs::default()));
    // serve and check-config log in the configured format, once the config is read; the other
    // commands in text.
    if !matches!(command, Command::Serve(_) | Command::CheckConfig(_)) {
        init_logging(LogFormat::Text);
    }
    match command {
        Command::Serve(args) => {
            let config = match Config::load(args.config.as_deref(), &args) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("holdfast: {e}");
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            init_logging(config.log_format);
            warn_unknown_env();
            match holdfast_server::serve::serve(config) {
                Ok(_) => ExitCode::SUCCESS,
                Err(message) => {
                    tracing::error!("{message}");
                    ExitCode::from(EXIT_RUNTIME_FAILURE)
                }
            }
        }
        Command::Tune(args) => match holdfast_server::ops::tune::run(&args) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("holdfast tune: {e}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        },
        Command::CheckConfig(args) => match Config::load(args.config.as_deref(), &args) {
            Ok(config) => {
                init_logging(config.log_format);
                warn_unknown_env();
                print!("{}", config.to_toml());
                match config.check_ring_table() {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("holdfast: {e}");
                        ExitCode::from(EXIT_BAD_CONFIG)
                    }
                }
            }
            Err(e) => {
                eprintln!("holdfast: {e}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        },
        Command::Publish(args) => match holdfast_server::admin::publish_cmd::run(&args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(EXIT_RUNTIME_FAILURE),
            Err(e) => {
                eprintln!("holdfast: {e}");
                ExitCode::from(EXIT_RUNTIME_FAILURE)
            }
        },
        Command::Probe(args) => match holdfast_server::probe::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("holdfast probe: {e} ({})", e.code());
                ExitCode::from(EXIT_RUNTIME_FAILURE)
            }
        },
    }
}

/// Log lines go to stderr, filtered by HOLDFAST_LOG (default info). Text has ANSI colour only
/// when stderr is a terminal: a file or journald gets plain text. A line that cannot be written
/// (stderr's reader has gone) is dropped: the subscriber's default reports that with
/// `eprintln!`, which panics on the same closed pipe and took the signal thread, and with it the
/// drain, down.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOLDFAST_LOG")
        .unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).with_ansi(false).init(),
    }
}

/// One warning naming every `HOLDFAST_*` environment variable that is not a config key (they
/// are ignored, not fatal: deploy tools set their own).
fn warn_unknown_env() {
    let vars = std::env::vars_os().map(|(name, value)| {
        (
            name.to_string_lossy().into_owned(),
            value.to_string_lossy().into_owned(),
        )
    });
    let unknown = holdfast_server::config::unknown_env_vars(vars);
    if !unknown.is_empty() {
        tracing::warn!(
            "ignoring environment variables that are not config keys: {} (key KEY is set as {}KEY)",
            unknown.join(", "),
            holdfast_server::config::ENV_PREFIX
        );
    }
}
