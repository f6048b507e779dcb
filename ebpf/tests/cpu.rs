//! CPU probes: run-queue latency, off-CPU and on-CPU time per thread.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{attach_to_self, current_tid, snapshot_until};

const SLEEPS: u32 = 20;
const SLEEP: Duration = Duration::from_millis(2);

#[test]
fn sleeping_thread_shows_offcpu_runqueue_and_oncpu_time_under_its_tid() {
    let Some(probes) = attach_to_self(0) else {
        return;
    };
    let (tid_tx, tid_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("probe-sleeper".into())
        .spawn(move || {
            tid_tx.send(current_tid()).unwrap();
            for _ in 0..SLEEPS {
                std::thread::sleep(SLEEP);
            }
        })
        .unwrap()
        .join()
        .unwrap();
    let tid = tid_rx.recv().unwrap();

    let snap = snapshot_until(&probes, Duration::from_secs(2), |s| {
        s.thread(tid)
            .is_some_and(|t| t.offcpu_us.count() >= u64::from(SLEEPS))
    });
    let t = snap
        .thread(tid)
        .unwrap_or_else(|| panic!("no entry for sleeper tid {tid}:\n{}", snap.render_text()));
    assert_eq!(
        t.comm, "probe-sleeper",
        "comm comes from the kernel for an exited thread"
    );
    assert!(
        t.offcpu_us.count() >= u64::from(SLEEPS),
        "each sleep is a switch out and in: {t:?}"
    );
    assert!(
        t.runqueue_latency_us.count() >= u64::from(SLEEPS),
        "each wakeup is queued: {t:?}"
    );
    assert!(t.oncpu_us.count() > 0, "the thread ran: {t:?}");
    // A 2 ms sleep keeps the thread off the CPU for at least 2000 us, which is
    // bucket 10 (1024..=2047) or above: the median's upper bound is >= 2047.
    assert!(
        t.offcpu_us.percentile(0.5) >= 2047,
        "off-CPU p50 upper bound {} us",
        t.offcpu_us.percentile(0.5)
    );
    // Merged histograms include the thread.
    assert!(snap.offcpu_us.count() >= t.offcpu_us.count());
    assert!(snap.runqueue_latency_us.count() >= t.runqueue_latency_us.count());
}

#[test]
fn threads_of_other_processes_are_not_counted() {
    let Some(probes) = attach_to_self(0) else {
        return;
    };
    let child = std::process::Command::new("sleep")
        .arg("0.05")
        .spawn()
        .expect("spawn sleep");
    let child_pid = child.id();
    let status = { child }.wait().unwrap();
    assert!(status.success());
    let snap = probes.snapshot().unwrap();
    assert!(
        snap.thread(child_pid).is_none(),
        "child process {child_pid} leaked into the snapshot"
    );
    let own = std::fs::read_dir("/proc/self/task").unwrap().count();
    assert!(
        !snap.threads.is_empty() && own > 0,
        "our own threads are seen"
    );
}
