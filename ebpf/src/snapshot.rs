//! What the probes have seen: plain data, cumulative since attach.

use serde::Serialize;

use crate::hist::Log2Hist;

/// Everything the probes counted, read from the BPF maps in one pass.
///
/// Counters and histograms are cumulative since [`crate::Probes::attach`];
/// use [`Snapshot::delta`] for an interval. Units are in the field names.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Snapshot {
    pub pid: u32,
    /// Listening port the socket probes follow; 0 = every socket the process used.
    pub port: u16,

    // CPU, merged over `threads`.
    /// Wakeup (or preemption) to running again.
    pub runqueue_latency_us: Log2Hist,
    /// Leaving the CPU to running again, for any reason (includes run-queue wait).
    pub offcpu_us: Log2Hist,
    /// Getting the CPU to leaving it.
    pub oncpu_us: Log2Hist,
    /// Per thread, sorted by tid. Threads beyond the kernel map's bound share one
    /// entry with `tid` 0 and `comm` `[other threads]`.
    pub threads: Vec<ThreadStats>,
    /// Scheduler events of the process's threads the probes could not record:
    /// the kernel would not create the thread's task storage (busy on that
    /// CPU, or no memory). Non-zero means the CPU histograms undercount by
    /// about this many samples.
    pub cpu_events_missed: u64,

    // Memory.
    /// User-mode page faults (exceptions:page_fault_user), all threads.
    pub page_faults: u64,
    /// Resident memory by kind at the last kmem:rss_stat event (a gauge;
    /// from /proc/<pid>/status for a kind with no event since attach).
    pub rss_bytes: RssByMember,
    /// Number of kmem:rss_stat events by kind (a counter).
    pub rss_changes: RssByMember,

    // TCP.
    /// Smoothed RTT of the selected sockets, one sample per read (sock_recv_length).
    pub tcp_srtt_us: Log2Hist,
    /// Data became readable (sk_data_ready) to the application's first successful read.
    pub data_ready_to_read_ns: Log2Hist,
    /// `(from, to)` TCP state changes of the selected sockets, non-zero pairs only.
    pub tcp_state_transitions: Vec<StateTransition>,
    pub tcp_retransmits: u64,
    /// sock_exceed_buf_limit on receive: socket memory (global tcp_mem or the
    /// cgroup's limit) refused to queue incoming data.
    pub exceed_buf_limit_recv: u64,
    /// The same on send.
    pub exceed_buf_limit_send: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ThreadStats {
    pub tid: u32,
    /// Thread name from /proc when the thread is alive, else as the kernel saw it first.
    pub comm: String,
    pub runqueue_latency_us: Log2Hist,
    pub offcpu_us: Log2Hist,
    pub oncpu_us: Log2Hist,
    pub page_faults: u64,
}

/// One value per `enum mm_counter` member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RssByMember {
    pub file: u64,
    pub anon: u64,
    pub swap_entries: u64,
    pub shmem: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StateTransition {
    pub from: &'static str,
    pub to: &'static str,
    pub count: u64,
}

impl Snapshot {
    /// What happened between `earlier` and `self` (two snapshots of the same
    /// `Probes`): counters and histograms subtract; `rss_bytes`, a gauge,
    /// keeps the later value. Threads and transitions that did not move are
    /// left out.
    pub fn delta(&self, earlier: &Snapshot) -> Snapshot {
        let threads = self
            .threads
            .iter()
            .map(|t| match earlier.threads.iter().find(|e| e.tid == t.tid) {
                Some(e) => t.delta(e),
                None => t.clone(),
            })
            .filter(ThreadStats::has_samples)
            .collect();
        let tcp_state_transitions = self
            .tcp_state_transitions
            .iter()
            .map(|t| {
                let before = earlier
                    .tcp_state_transitions
                    .iter()
                    .find(|e| e.from == t.from && e.to == t.to)
                    .map_or(0, |e| e.count);
                StateTransition {
                    count: t.count.saturating_sub(before),
                    ..*t
                }
            })
            .filter(|t| t.count > 0)
            .collect();
        Snapshot {
            pid: self.pid,
            port: self.port,
            runqueue_latency_us: self.runqueue_latency_us.delta(&earlier.runqueue_latency_us),
            offcpu_us: self.offcpu_us.delta(&earlier.offcpu_us),
            oncpu_us: self.oncpu_us.delta(&earlier.oncpu_us),
            threads,
            cpu_events_missed: self
                .cpu_events_missed
                .saturating_sub(earlier.cpu_events_missed),
            page_faults: self.page_faults.saturating_sub(earlier.page_faults),
            rss_bytes: self.rss_bytes,
            rss_changes: self.rss_changes.delta(&earlier.rss_changes),
            tcp_srtt_us: self.tcp_srtt_us.delta(&earlier.tcp_srtt_us),
            data_ready_to_read_ns: self
                .data_ready_to_read_ns
                .delta(&earlier.data_ready_to_read_ns),
            tcp_state_transitions,
            tcp_retransmits: self.tcp_retransmits.saturating_sub(earlier.tcp_retransmits),
            exceed_buf_limit_recv: self
                .exceed_buf_limit_recv
                .saturating_sub(earlier.exceed_buf_limit_recv),
            exceed_buf_limit_send: self
                .exceed_buf_limit_send
                .saturating_sub(earlier.exceed_buf_limit_send),
        }
    }

    /// The snapshot as JSON (the same shape `serde` gives; histograms carry
    /// `count`, `p50`, `p99` next to their 64 `buckets`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a Snapshot has only plain fields and always serializes")
    }

    /// Count of the transition `from -> to` (TCP state names as in
    /// [`TCP_STATE_NAMES`], e.g. `"SYN_RECV"`, `"ESTABLISHED"`).
    pub fn state_transitions(&self, from: &str, to: &str) -> u64 {
        self.tcp_state_transitions
            .iter()
            .filter(|t| t.from == from && t.to == to)
            .map(|t| t.count)
            .sum()
    }

    /// The entry of thread `tid`, if it has one.
    pub fn thread(&self, tid: u32) -> Option<&ThreadStats> {
        self.threads.iter().find(|t| t.tid == tid)
    }
}

impl ThreadStats {
    fn delta(&self, earlier: &ThreadStats) -> ThreadStats {
        ThreadStats {
            tid: self.tid,
            comm: self.comm.clone(),
            runqueue_latency_us: self.runqueue_latency_us.delta(&earlier.runqueue_latency_us),
            offcpu_us: self.offcpu_us.delta(&earlier.offcpu_us),
            oncpu_us: self.oncpu_us.delta(&earlier.oncpu_us),
            page_faults: self.page_faults.saturating_sub(earlier.page_faults),
        }
    }

    pub(crate) fn has_samples(&self) -> bool {
        self.page_faults > 0
            || self.runqueue_latency_us.count() > 0
            || self.offcpu_us.count() > 0
            || self.oncpu_us.count() > 0
    }
}

impl RssByMember {
    fn delta(&self, earlier: &RssByMember) -> RssByMember {
        RssByMember {
            file: self.file.saturating_sub(earlier.file),
            anon: self.anon.saturating_sub(earlier.anon),
            swap_entries: self.swap_entries.saturating_sub(earlier.swap_entries),
            shmem: self.shmem.saturating_sub(earlier.shmem),
        }
    }

    /// Sum over the kinds.
    pub fn total(&self) -> u64 {
        self.file + self.anon + self.swap_entries + self.shmem
    }
}

/// Kernel TCP state names by number (include/net/tcp_states.h); index 0 is unused.
pub const TCP_STATE_NAMES: [&str; 16] = [
    "UNKNOWN(0)",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
    "BOUND_INACTIVE",
    "UNKNOWN(14)",
    "UNKNOWN(15)",
];
