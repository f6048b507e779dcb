//! Text output in the style of bcc's runqlat and tcprtt: log2 buckets,
//! counts and ASCII bars, with a one-line summary above each histogram.

use std::fmt::Write as _;

use crate::hist::Log2Hist;
use crate::snapshot::{RssByMember, Snapshot};

/// Width of the longest bar, as in bcc.
const BAR_WIDTH_MAX: u64 = 40;

impl Snapshot {
    /// Human-readable report: every histogram in full (empty ones as one
    /// line), a per-thread summary table, then memory and TCP counters.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let port = match self.port {
            0 => "any port".to_string(),
            p => format!("port {p}"),
        };
        writeln!(out, "holdfast probes: pid {}, {port}", self.pid).unwrap();

        out.push_str("\n== CPU (all threads) ==\n");
        render_hist(
            &mut out,
            "run-queue latency",
            "usecs",
            &self.runqueue_latency_us,
        );
        render_hist(&mut out, "off-CPU time", "usecs", &self.offcpu_us);
        render_hist(&mut out, "on-CPU time", "usecs", &self.oncpu_us);
        if self.cpu_events_missed > 0 {
            writeln!(
                out,
                "scheduler events not recorded: {} (the histograms undercount)",
                self.cpu_events_missed
            )
            .unwrap();
        }
        self.render_threads(&mut out);

        out.push_str("\n== Memory ==\n");
        writeln!(out, "page faults (user): {}", self.page_faults).unwrap();
        writeln!(out, "rss: {}", rss_line(&self.rss_bytes, format_bytes)).unwrap();
        writeln!(
            out,
            "rss changes: {}",
            rss_line(&self.rss_changes, |n| n.to_string())
        )
        .unwrap();

        out.push_str("\n== TCP ==\n");
        render_hist(&mut out, "srtt", "usecs", &self.tcp_srtt_us);
        render_hist(
            &mut out,
            "data ready -> read",
            "nsecs",
            &self.data_ready_to_read_ns,
        );
        let transitions: Vec<String> = self
            .tcp_state_transitions
            .iter()
            .map(|t| format!("{}->{} {}", t.from, t.to, t.count))
            .collect();
        let transitions = if transitions.is_empty() {
            "none".to_string()
        } else {
            transitions.join(", ")
        };
        writeln!(out, "state transitions: {transitions}").unwrap();
        writeln!(
            out,
            "retransmits: {}, exceed_buf_limit: recv {} send {}",
            self.tcp_retransmits, self.exceed_buf_limit_recv, self.exceed_buf_limit_send
        )
        .unwrap();
        out
    }

    fn render_threads(&self, out: &mut String) {
        out.push_str("per thread (us; p50/p99 are bucket upper bounds):\n");
        writeln!(
            out,
            "{:>8}  {:<16} {:>8} {:>15} {:>15} {:>15} {:>8}",
            "tid", "comm", "switches", "runq p50/p99", "offcpu p50/p99", "oncpu p50/p99", "faults"
        )
        .unwrap();
        for t in &self.threads {
            writeln!(
                out,
                "{:>8}  {:<16} {:>8} {:>15} {:>15} {:>15} {:>8}",
                t.tid,
                t.comm,
                t.oncpu_us.count(),
                p50_p99(&t.runqueue_latency_us),
                p50_p99(&t.offcpu_us),
                p50_p99(&t.oncpu_us),
                t.page_faults
            )
            .unwrap();
        }
    }
}

fn p50_p99(h: &Log2Hist) -> String {
    if h.count() == 0 {
        return "-".into();
    }
    format!("{}/{}", h.percentile(0.5), h.percentile(0.99))
}

/// One histogram: summary line, then bcc's table from bucket 0 to the
/// highest non-empty bucket.
pub(crate) fn render_hist(out: &mut String, title: &str, unit: &str, h: &Log2Hist) {
    let count = h.count();
    let Some(highest) = h.highest_bucket() else {
        writeln!(out, "{title}: no samples").unwrap();
        return;
    };
    writeln!(
        out,
        "{title}: count {count}, p50 <= {} {unit}, p99 <= {} {unit}, max <= {} {unit}",
        h.percentile(0.5),
        h.percentile(0.99),
        Log2Hist::bucket_upper_bound(highest)
    )
    .unwrap();
    writeln!(out, "{unit:>16}{:<10} : count    distribution", "").unwrap();
    let max = h.buckets.iter().copied().max().unwrap_or(0).max(1);
    for (i, n) in h.buckets.iter().enumerate().take(highest + 1) {
        let stars = (n * BAR_WIDTH_MAX / max) as usize;
        writeln!(
            out,
            "{:>12} -> {:<10} : {:<8} |{:<40}|",
            Log2Hist::bucket_lower_bound(i),
            Log2Hist::bucket_upper_bound(i),
            n,
            "*".repeat(stars)
        )
        .unwrap();
    }
}

fn rss_line(v: &RssByMember, fmt: impl Fn(u64) -> String) -> String {
    format!(
        "file {}, anon {}, swap {}, shmem {}",
        fmt(v.file),
        fmt(v.anon),
        fmt(v.swap_entries),
        fmt(v.shmem)
    )
}

fn format_bytes(n: u64) -> String {
    const MIB: u64 = 1 << 20;
    const KIB: u64 = 1 << 10;
    if n >= MIB {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    } else if n >= KIB {
        format!("{:.1} KiB", n as f64 / KIB as f64)
    } else {
        format!("{n} B")
    }
}
