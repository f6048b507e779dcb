//! Shared by the probe tests: attach to this test process, or fail saying why.

#![allow(dead_code)] // each test binary uses a different part

use std::time::{Duration, Instant};

use holdfast_ebpf::{availability, ProbeConfig, Probes, Snapshot};

/// Attaches the probes to this test process. A test never passes without running its probes
/// (the project's rule: tests never print SKIP), so when eBPF cannot be used here the test
/// fails with the reason (no BTF, not root, ...), and any other attach failure fails it too.
pub fn attach_to_self(port: u16) -> Probes {
    if let Err(reason) = availability() {
        panic!("eBPF unavailable, so the probes cannot attach: {reason} (run the tests as root on a kernel with BTF)");
    }
    let cfg = ProbeConfig {
        pid: std::process::id(),
        port,
    };
    Probes::attach(&cfg).unwrap_or_else(|e| panic!("attach with eBPF available: {e}"))
}

/// The calling thread's kernel tid (std has no gettid; /proc/thread-self
/// links to `<pid>/task/<tid>`).
pub fn current_tid() -> u32 {
    let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    link.file_name()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("/proc/thread-self ends in the tid")
}

/// Polls snapshots until `done` holds or `timeout` passes; returns the last.
/// Events from softirq and timers can land a little after the syscall that
/// caused them returns.
pub fn snapshot_until(
    probes: &Probes,
    timeout: Duration,
    done: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    let deadline = Instant::now() + timeout;
    loop {
        let snap = probes.snapshot().expect("snapshot");
        if done(&snap) || Instant::now() >= deadline {
            return snap;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
