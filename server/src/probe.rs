//! The eBPF probes (`holdfast-ebpf`) as the server uses them: attached to its own process by
//! `holdfast serve --probes`, and to any process by `holdfast probe --pid PID`.
//!
//! Probes are optional everywhere: where eBPF cannot load, `serve` runs without them and says
//! why in one log line; `probe` exits 1 with the reason.

use std::sync::Arc;
use std::time::Duration;

use holdfast_ebpf::{ProbeConfig, ProbeError, Probes};

/// Largest `--interval-s`.
pub const PROBE_INTERVAL_S_MAX: u64 = 3_600;

/// Attaches probes to this process and its listening `port`. `None`, with one warning line
/// naming the cause, when they cannot be attached.
pub fn attach_own(port: u16) -> Option<Arc<Probes>> {
    let pid = std::process::id();
    match Probes::attach(&ProbeConfig { pid, port }) {
        Ok(probes) => {
            tracing::info!(pid, port, "eBPF probes attached");
            Some(Arc::new(probes))
        }
        Err(e) => {
            tracing::warn!(
                code = e.code(),
                "running without probes: {e} (needs root or CAP_BPF + CAP_PERFMON, and a kernel with BTF)"
            );
            None
        }
    }
}

/// `holdfast probe`: attach to a running process and print, every interval, what the probes
/// saw in it (bcc-style histograms with p50/p99 summaries, or one JSON object per line).
#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Process to follow (its pid as the kernel sees it, e.g. `pgrep -x holdfast`).
    #[arg(long)]
    pub pid: u32,
    /// Local TCP port whose sockets to follow (the server's listen port). 0 = every TCP socket
    /// the process sends or receives on.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Seconds between reports.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=PROBE_INTERVAL_S_MAX))]
    pub interval_s: u64,
    /// Reports to print before exiting (0 = until interrupted or the process exits).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// One JSON object per interval instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `holdfast probe` until `count` reports are printed or the process is gone.
pub fn run(args: &ProbeArgs) -> Result<(), ProbeError> {
    let probes = Probes::attach(&ProbeConfig {
        pid: args.pid,
        port: args.port,
    })?;
    let mut before = probes.snapshot()?;
    let mut printed = 0u64;
    while args.count == 0 || printed < args.count {
        std::thread::sleep(Duration::from_secs(args.interval_s));
        let alive = std::path::Path::new(&format!("/proc/{}", args.pid)).exists();
        let now = probes.snapshot()?;
        let delta = now.delta(&before);
        if args.json {
            println!("{}", delta.to_json());
        } else {
            println!(
                "--- interval {} ({} s) ---\n{}",
                printed + 1,
                args.interval_s,
                delta.render_text()
            );
        }
        printed += 1;
        before = now;
        if !alive {
            eprintln!("holdfast probe: process {} has exited", args.pid);
            break;
        }
    }
    Ok(())
}
