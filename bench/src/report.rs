//! The report of one run: a summary table on stdout, and files: `.hgrm` (percentile
//! distribution of the workload's main histogram), `.hlog` (interval log, one histogram per
//! measured second) and `.json` (everything, for machines).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use serde::Serialize;

use crate::cli::RunArgs;
use crate::events::EventsSummary;
use crate::hist::{self, Hist};
use crate::msg::{Counters, Workload};
use crate::procfs::MemoryPerSession;
use crate::push::PushSummary;

/// Server CPU over the measured window.
#[derive(Clone, Debug, Serialize)]
pub struct ServerCpu {
    pub cpu_us: u64,
    pub round_trips: u64,
    pub cpu_us_per_round_trip: f64,
    pub round_trips_per_cpu_s: f64,
}

impl ServerCpu {
    pub fn new(cpu_us: u64, round_trips: u64) -> ServerCpu {
        let cpu_us_per_round_trip = if round_trips == 0 {
            0.0
        } else {
            cpu_us as f64 / round_trips as f64
        };
        let round_trips_per_cpu_s = if cpu_us == 0 {
            0.0
        } else {
            round_trips as f64 * 1e6 / cpu_us as f64
        };
        ServerCpu {
            cpu_us,
            round_trips,
            cpu_us_per_round_trip,
            round_trips_per_cpu_s,
        }
    }
}

/// Percentiles of one histogram, microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub p9999_us: u64,
    pub max_us: u64,
}

impl Percentiles {
    pub fn of(h: &Hist) -> Percentiles {
        Percentiles {
            count: h.len(),
            mean_us: if h.is_empty() { 0.0 } else { h.mean() },
            p50_us: hist::quantile_us(h, 0.5),
            p90_us: hist::quantile_us(h, 0.9),
            p99_us: hist::quantile_us(h, 0.99),
            p999_us: hist::quantile_us(h, 0.999),
            p9999_us: hist::quantile_us(h, 0.9999),
            max_us: if h.is_empty() { 0 } else { h.max() },
        }
    }
}

pub struct RunInputs {
    pub workload: Workload,
    pub args: RunArgs,
    pub workers: u32,
    pub sessions_planned: u64,
    pub setup_ms: u64,
    pub setup_timed_out: bool,
    pub window_s: f64,
    pub counters: Counters,
    pub histograms: BTreeMap<String, Hist>,
    pub client_cpu_ns: u64,
    pub server_cpu: Option<ServerCpu>,
    pub memory: Option<MemoryPerSession>,
    pub push: Option<PushSummary>,
    pub events: Option<EventsSummary>,
    /// (second index from warm-up start, histogram) of each measured second.
    pub interval_ticks: Vec<(u64, Hist)>,
    pub interval_start_s: u64,
    /// Wall-clock time of the start of the measured window (interval log StartTime).
    pub window_start_wall: std::time::SystemTime,
}

#[derive(Serialize)]
pub struct RunReport {
    pub workload: Workload,
    pub label: String,
    pub target: String,
    /// What the latency figures are.
    pub measured: String,
    pub raw: bool,
    pub sessions_planned: u64,
    pub workers: u32,
    pub warmup_s: u64,
    pub window_s: f64,
    pub setup_ms: u64,
    pub setup_timed_out: bool,
    pub counters: Counters,
    pub requests_unaccounted: i64,
    pub errors_total: u64,
    pub replies_per_s: f64,
    pub histograms: BTreeMap<String, Percentiles>,
    pub main_histogram: String,
    pub client_cpu_s: f64,
    /// Replies per client CPU-second: what one client core can drive (the client is not the
    /// bottleneck while this is far above replies_per_s / workers).
    pub replies_per_client_cpu_s: f64,
    pub server_cpu: Option<ServerCpu>,
    pub server_memory: Option<MemoryPerSession>,
    /// push: publisher, deliveries against expected, gaps, duplicates.
    pub push: Option<PushSummary>,
    /// events: sent, acked, accepted per second and per server CPU-second, drops.
    pub events: Option<EventsSummary>,
    pub files: Vec<PathBuf>,
    #[serde(skip)]
    main_hist: Hist,
    #[serde(skip)]
    interval_ticks: Vec<(u64, Hist)>,
    #[serde(skip)]
    interval_start_s: u64,
    #[serde(skip)]
    window_start_wall: std::time::SystemTime,
}

impl RunReport {
    pub fn new(inputs: RunInputs) -> RunReport {
        let RunInputs {
            workload,
            args,
            counters,
            histograms,
            ..
        } = inputs;
        let main_name = workload.main_histogram();
        let main_hist = histograms
            .get(main_name)
            .cloned()
            .unwrap_or_else(hist::new_hist);
        let measured = match workload {
            Workload::Echo => "client-observed round-trip latency from send to byte-checked reply (closed loop)",
            Workload::Rate | Workload::Request => {
                "client-observed latency from each request's intended send time to its checked reply (open loop, coordinated omission corrected)"
            }
            Workload::Connect => "client-observed session setup latency: connect start to Welcome (raw: to TCP connected)",
            Workload::Storm => "client-observed reconnect latency: drop (or Goodbye) to Welcome",
            Workload::Events => "events: latency (with --ack) from an Event's send to its Ack; accepted per second from the server's /metrics (--admin), else from Acks or the client's writes; server CPU set against events accepted",
            Workload::Push => "delivery latency: publish timestamp in the payload (open loop: intended publish time; burst: request start) to the Push frame decoded by a subscriber, every delivery of a publish made in the window; throughput and server CPU count deliveries received in the window",
        };
        let label = args.label.clone().unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!("{}-{t}", workload.name())
        });
        let client_cpu_s = inputs.client_cpu_ns as f64 / 1e9;
        let replies = counters.replies_measured as f64;
        RunReport {
            workload,
            label,
            target: args.target.to_string(),
            measured: format!(
                "{measured}; both: server CPU from /proc/PID/stat when --server-pid is given"
            ),
            raw: args.raw,
            sessions_planned: inputs.sessions_planned,
            workers: inputs.workers,
            warmup_s: if workload.sends_traffic() || workload == Workload::Push {
                args.warmup_s
            } else {
                0
            },
            window_s: inputs.window_s,
            setup_ms: inputs.setup_ms,
            setup_timed_out: inputs.setup_timed_out,
            requests_unaccounted: counters.requests_unaccounted(),
            errors_total: counters.errors_total(),
            replies_per_s: if inputs.window_s > 0.0 {
                replies / inputs.window_s
            } else {
                0.0
            },
            histograms: histograms
                .iter()
                .filter(|(_, h)| !h.is_empty())
                .map(|(k, h)| (k.clone(), Percentiles::of(h)))
                .collect(),
            main_histogram: main_name.to_owned(),
            client_cpu_s,
            replies_per_client_cpu_s: if client_cpu_s > 0.0 {
                replies / client_cpu_s
            } else {
                0.0
            },
            server_cpu: inputs.server_cpu,
            server_memory: inputs.memory,
            push: inputs.push,
            events: inputs.events,
            files: Vec::new(),
            counters,
            main_hist,
            interval_ticks: inputs.interval_ticks,
            interval_start_s: inputs.interval_start_s,
            window_start_wall: inputs.window_start_wall,
        }
    }

    pub fn main_hist(&self) -> &Hist {
        &self.main_hist
    }

    /// Writes `<label>.hgrm`, `<label>.hlog` and `<label>.json` into `dir`.
    pub fn write_files(&mut self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let hgrm = dir.join(format!("{}.hgrm", self.label));
        let mut text = Vec::new();
        hist::write_hgrm(&self.main_hist, &mut text)?;
        std::fs::write(&hgrm, text).with_context(|| format!("write {}", hgrm.display()))?;
        let hlog = dir.join(format!("{}.hlog", self.label));
        std::fs::write(&hlog, self.interval_log()?)
            .with_context(|| format!("write {}", hlog.display()))?;
        let json = dir.join(format!("{}.json", self.label));
        self.files = vec![hgrm, hlog, json.clone()];
        std::fs::write(&json, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("write {}", json.display()))?;
        Ok(())
    }

    /// The interval log: one histogram per measured second, timestamps relative to the start of
    /// the window, values in microseconds (max column in ms).
    pub fn interval_log(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut serializer = V2DeflateSerializer::new();
        let mut writer = IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "holdfast-bench {} {}: {}",
                self.workload.name(),
                self.label,
                self.measured
            ))
            .add_comment("values in microseconds; warm-up seconds excluded")
            .with_start_time(self.window_start_wall)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut out, &mut serializer)?;
        for (index, h) in &self.interval_ticks {
            let start = std::time::Duration::from_secs(index - self.interval_start_s.min(*index));
            writer
                .write_histogram(h, start, std::time::Duration::from_secs(1), None)
                .map_err(|e| anyhow::anyhow!("interval log: {e:?}"))?;
        }
        drop(writer);
        Ok(out)
    }

    /// The human summary.
    pub fn print_table(&self) {
        let c = &self.counters;
        println!(
            "== holdfast-bench {} -> {} ({}) ==",
            self.workload.name(),
            self.target,
            self.label
        );
        println!("measured: {}", self.measured);
        println!(
            "sessions: {} planned, {} opened, {} open at end; workers {}; setup {} ms{}",
            self.sessions_planned,
            c.sessions_opened,
            c.sessions_open,
            self.workers,
            self.setup_ms,
            if self.setup_timed_out {
                " (TIMED OUT)"
            } else {
                ""
            }
        );
        println!(
            "window: {:.1} s after {} s warm-up (excluded)",
            self.window_s, self.warmup_s
        );
        if self.workload.sends_traffic() && (self.events.is_none() || c.requests_sent > 0) {
            println!(
                "requests: sent {} | ok {} | mismatched {} | error replies {} | lost {} | in flight at end {} | unsent {} | unaccounted {}",
                c.requests_sent,
                c.replies_ok,
                c.replies_mismatched,
                c.replies_error.values().sum::<u64>(),
                c.requests_lost,
                c.requests_inflight_at_end,
                c.requests_unsent_at_end,
                self.requests_unaccounted
            );
            if self.events.is_none() {
                println!(
                    "throughput: {:.0} replies/s in the window ({} replies)",
                    self.replies_per_s, c.replies_measured
                );
            }
        }
        println!(
            "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
            "histogram", "count", "p50 us", "p90 us", "p99 us", "p99.9 us", "max us", "mean us"
        );
        for (name, p) in &self.histograms {
            println!(
                "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10.1}",
                name, p.count, p.p50_us, p.p90_us, p.p99_us, p.p999_us, p.max_us, p.mean_us
            );
        }
        println!("errors: {} total; connect failed {:?}; error replies {:?}; unexpected frames {:?}; unsolicited errors {:?}; decode errors {}; closed by server {}; io {:?}",
            self.errors_total, c.connect_failed, c.replies_error, c.frames_unexpected, c.errors_unsolicited, c.decode_errors, c.closed_by_server, c.io_errors);
        println!(
            "heartbeats: pings sent {} / pongs {}; pings received {}; goodbyes {}",
            c.pings_sent, c.pongs_received, c.pings_received, c.goodbyes_received
        );
        if self.workload == Workload::Storm {
            println!(
                "storm: dropped {} | back {} | all back after {:?} ms",
                c.storm_dropped, c.storm_back, c.storm_all_back_ms
            );
        }
        if let Some(push) = &self.push {
            push.print();
            println!(
                "throughput: {:.0} deliveries/s in the window ({} deliveries)",
                self.replies_per_s, c.replies_measured
            );
        }
        let (per, pers) = if self.workload == Workload::Push {
            ("delivery", "deliveries")
        } else {
            ("reply", "replies")
        };
        if let Some(events) = &self.events {
            events.print(); // its own throughput, client and server lines
        } else if self.client_cpu_s > 0.0 && self.workload.measures_throughput() {
            println!(
                "client: {:.2} CPU-s in the window = {:.0} {pers} per client CPU-second ({:.2} us CPU per {per})",
                self.client_cpu_s,
                self.replies_per_client_cpu_s,
                if c.replies_measured > 0 { self.client_cpu_s * 1e6 / c.replies_measured as f64 } else { 0.0 }
            );
        }
        if let Some(s) = self.server_cpu.as_ref().filter(|_| self.events.is_none()) {
            if self.workload == Workload::Push {
                println!(
                    "server: {:.3} CPU-s in the window = {:.2} us CPU per delivery = {:.0} deliveries per server CPU-second",
                    s.cpu_us as f64 / 1e6,
                    s.cpu_us_per_round_trip,
                    s.round_trips_per_cpu_s
                );
            } else if self.workload.sends_traffic() {
                println!(
                    "server: {:.3} CPU-s in the window = {:.2} us CPU per round trip = {:.0} round trips per server CPU-second",
                    s.cpu_us as f64 / 1e6,
                    s.cpu_us_per_round_trip,
                    s.round_trips_per_cpu_s
                );
            } else {
                println!("server: {:.3} CPU-s in the window", s.cpu_us as f64 / 1e6);
            }
        }
        if let Some(m) = &self.server_memory {
            println!(
                "server memory: {} sessions: RSS {:+} bytes = {:.0} B/session; kernel slab (server share) {:?} B/session; io_kiocb {:?} B/session",
                m.sessions, m.rss_delta_bytes, m.rss_bytes_per_session, m.server_slab_bytes_per_session.map(|v| v.round()), m.io_kiocb_bytes_per_session.map(|v| v.round())
            );
            if let (Some(cpu_us), Some(rate)) = (m.setup_server_cpu_us, m.setups_per_server_cpu_s) {
                println!(
                    "server setup CPU: {:.3} CPU-s for {} sessions = {rate:.0} session setups per server CPU-second",
                    cpu_us as f64 / 1e6,
                    m.sessions
                );
            }
            for (name, d) in &m.slab_rows {
                println!(
                    "  slab {:<18} objects {:+} bytes {:+} server bytes {:+}",
                    name, d.objects_delta, d.bytes_delta, d.server_bytes_delta
                );
            }
        }
        for f in &self.files {
            println!("wrote {}", f.display());
        }
    }
}
