//! Holdfast's eBPF probes: where latency goes when it is not in our code.
//!
//! Three families, all filtered to one process (and, for sockets, its
//! listening port), all reported as cumulative counters and log2 histograms:
//!
//! - CPU: run-queue latency, off-CPU and on-CPU time per thread
//!   (`sched_wakeup`, `sched_wakeup_new`, `sched_switch`).
//! - Memory: user page faults per thread and RSS by kind
//!   (`exceptions:page_fault_user`, `kmem:rss_stat`).
//! - TCP: smoothed RTT, data-ready to application-read latency, state
//!   transitions, retransmits and socket-memory limit hits (`tcp:*`, `sock:*`).
//!
//! Entry points: [`availability`], [`Probes::attach`], [`Probes::snapshot`],
//! then [`Snapshot::delta`], [`Snapshot::render_text`] and [`Snapshot::to_json`].
//! README.md lists each hook, where it runs and how it is filtered.
//!
//! This crate does not know about the server: it takes a pid and a port.
//! The BPF C sources are in src/bpf/; `build.rs` compiles them and
//! generates libbpf-rs skeletons. The crate has no `unsafe` of its own.

// Our code has no `unsafe`; only the generated skeletons do (libbpf-rs's
// raw object pointers), and they are allowed it explicitly below.
#![deny(unsafe_code)]

mod hist;
mod maps;
mod probes;
mod render;
mod snapshot;

mod probes_skel {
    #![allow(unused_imports, unsafe_code)]
    include!(concat!(env!("OUT_DIR"), "/probes.skel.rs"));
}
mod availability_skel {
    #![allow(unused_imports, unsafe_code)]
    include!(concat!(env!("OUT_DIR"), "/availability.skel.rs"));
}

pub use hist::{Log2Hist, LOG2_BUCKETS};
pub use probes::{availability, Probes};
pub use snapshot::{RssByMember, Snapshot, StateTransition, ThreadStats, TCP_STATE_NAMES};

/// What to probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Process (tgid) whose threads and memory are followed. Must be non-zero
    /// and in the caller's pid namespace as the kernel sees it (the init one).
    pub pid: u32,
    /// Local TCP port of the sockets to follow: the listener and every
    /// connection it accepted. 0 = every TCP socket the process has sent or
    /// received on (a socket is picked up at its first send or receive).
    pub port: u16,
}

/// Why the probes could not be attached or read.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// eBPF cannot be used here (no privileges, no BTF, no tp_btf): run without probes.
    #[error("eBPF unavailable: {0}")]
    Unavailable(String),
    /// The configuration cannot be probed (no such process, pid 0).
    #[error("bad probe configuration: {0}")]
    InvalidConfig(String),
    /// eBPF works, but the probe programs did not load (the kernel may lack
    /// a tracepoint or a BTF type they use).
    #[error("probe programs did not load: {0}")]
    Load(String),
    /// One program loaded but did not attach.
    #[error("probe program {program} did not attach: {reason}")]
    Attach { program: String, reason: String },
    /// A map read failed after attach.
    #[error("reading probe map {map} failed: {reason}")]
    ReadMap { map: &'static str, reason: String },
}

impl ProbeError {
    /// A stable code for logs and exit statuses.
    pub fn code(&self) -> &'static str {
        match self {
            ProbeError::Unavailable(_) => "probe_unavailable",
            ProbeError::InvalidConfig(_) => "probe_invalid_config",
            ProbeError::Load(_) => "probe_load",
            ProbeError::Attach { .. } => "probe_attach",
            ProbeError::ReadMap { .. } => "probe_read_map",
        }
    }
}

// The server builds `Probes` on one thread and reads them from its admin thread.
const _: () = {
    fn send_and_sync<T: Send + Sync>() {}
    let _ = send_and_sync::<Probes>;
};
