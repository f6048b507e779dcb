//! `events`: Event frames in, as fast as the server takes them.
//!
//! The workers open N sessions (Hello/Welcome) and send Event frames on `--event-topic`:
//! - `--ack`: closed loop. Every Event asks for an Ack (flag bit 0); a session keeps
//!   `--inflight-events` Events awaiting their Ack and sends the next one as each is answered.
//!   Latency is send to Ack. An Error answering an Event (the `drop` policy's "pipeline full")
//!   is a drop the client sees.
//! - without `--ack`: streaming. A session keeps at most `--inflight-events` Events queued in its
//!   write buffer and tops it up whenever the socket takes bytes, so the only other queues are
//!   the kernel's socket buffers; a server that stops reading (the `backpressure` policy) stops
//!   the client through TCP flow control.
//!
//! This module builds the Event frame once (only the header's id changes per event), and runs
//! the parent's sampler thread: with `--admin ADDR` it scrapes `GET /metrics` for the server's
//! `holdfast_events_{accepted,dropped,parked}_total` (summed over shards) before the run, at the
//! window's edges and after the drain; with `--server-pid` it reads each server thread's CPU time
//! at the window's edges. [`EventsSummary`] turns that into events accepted per second and per
//! server CPU-second, with the drop count.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use holdfast_protocol::{encode_frame, payload, FLAG_ACK_REQUESTED, HEADER_BYTES};
use serde::Serialize;

use crate::clock::{mono_ns, sleep_until_ns, NS_PER_MS, NS_PER_S};
use crate::msg::{Counters, Phases};
use crate::procfs;
use crate::report::Percentiles;

/// Longest Event topic the server takes (its `MAX_TOPIC_BYTES`); the topic names the item the
/// trending processor counts.
pub const EVENT_TOPIC_BYTES_MAX: usize = 128;
/// `--inflight-events` at most: with 15,000 sessions per worker and 64-byte frames, 4,096 queued
/// per session is 3.9 GiB of client buffers at worst, so keep it far below that in practice.
pub const INFLIGHT_EVENTS_MAX: u32 = 4_096;
/// One `GET /metrics` (request and reply) that takes longer fails.
const SCRAPE_TIMEOUT_MS: u64 = 2_000;
/// Scrapes tried per sample: a shard busy past the admin's stats timeout (1 s) is missing from
/// one scrape, and its sums would be short.
const SCRAPE_ATTEMPTS_MAX: u32 = 3;
/// The server's counters (prometheus-client appends `_total`), summed over the `shard` label.
const METRIC_ACCEPTED: &str = "holdfast_events_accepted_total";
const METRIC_DROPPED: &str = "holdfast_events_dropped_total";
const METRIC_PARKED: &str = "holdfast_events_parked_total";
/// 1 per shard that answered the scrape; a shard at 0 is missing from the sums.
const METRIC_SHARD_UP: &str = "holdfast_shard_up";

/// The bytes of one Event frame with id 0: topic, `payload_bytes` of pattern, flag bit 0 when
/// `ack`. An error if the topic is not 1..=[`EVENT_TOPIC_BYTES_MAX`] bytes or the frame does not
/// fit `max_frame_bytes`.
pub fn event_frame(
    topic: &str,
    payload_bytes: usize,
    ack: bool,
    max_frame_bytes: u32,
) -> Result<Vec<u8>> {
    anyhow::ensure!(
        (1..=EVENT_TOPIC_BYTES_MAX).contains(&topic.len()),
        "--event-topic must be 1..={EVENT_TOPIC_BYTES_MAX} bytes, not {}",
        topic.len()
    );
    let body = crate::worker::template::pattern(payload_bytes);
    let event = payload::Event {
        topic,
        payload: &body,
    };
    let flags = if ack { FLAG_ACK_REQUESTED } else { 0 };
    let mut out = BytesMut::with_capacity(HEADER_BYTES + topic.len() + payload_bytes + 64);
    encode_frame(&mut out, flags, 0, &event, max_frame_bytes).map_err(|e| {
        anyhow::anyhow!(
            "an Event frame of topic {} bytes and payload {payload_bytes} bytes does not fit max_frame_bytes {max_frame_bytes}: {e}",
            topic.len()
        )
    })?;
    Ok(out.to_vec())
}

/// Offset of the header's `id` (u64 LE) in a frame (docs/PROTOCOL.md, Frames).
const HEADER_ID_OFFSET: usize = 8;

/// Appends `frame` (from [`event_frame`]) to `out` with its header's id set to `id`.
pub fn write_event(frame: &[u8], id: u64, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(frame);
    if let Some(id_bytes) = out.get_mut(start + HEADER_ID_OFFSET..start + HEADER_BYTES) {
        id_bytes.copy_from_slice(&id.to_le_bytes());
    }
}

/// The server's event counters, summed over the shards that answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServerEvents {
    pub accepted: u64,
    pub dropped: u64,
    pub parked: u64,
    /// Shards reported down (`holdfast_shard_up 0`): their counters are missing from the sums.
    pub shards_down: u64,
}

/// Reads [`ServerEvents`] from Prometheus text. An error if the accepted counter is absent (a
/// server without events, or not Holdfast's `/metrics`).
pub fn parse_metrics(text: &str) -> Result<ServerEvents> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))
        .context("/metrics is not Prometheus text")?;
    let mut events = ServerEvents::default();
    let mut seen_accepted = false;
    for sample in &scrape.samples {
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        let field = match sample.metric.as_str() {
            METRIC_ACCEPTED => {
                seen_accepted = true;
                &mut events.accepted
            }
            METRIC_DROPPED => &mut events.dropped,
            METRIC_PARKED => &mut events.parked,
            METRIC_SHARD_UP => {
                if value == 0.0 {
                    events.shards_down += 1;
                }
                continue;
            }
            _ => continue,
        };
        *field += value.max(0.0) as u64;
    }
    anyhow::ensure!(
        seen_accepted || events.shards_down > 0,
        "no {METRIC_ACCEPTED} in /metrics: not a Holdfast server with events"
    );
    Ok(events)
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(SCRAPE_TIMEOUT_MS))
        .build()
}

/// One `GET http://ADMIN/metrics`, parsed.
pub fn scrape(agent: &ureq::Agent, admin: SocketAddr) -> Result<ServerEvents> {
    let url = format!("http://{admin}/metrics");
    let text = agent
        .get(&url)
        .call()
        .with_context(|| format!("GET {url} (holdfast serve --admin-listen ADDR)"))?
        .into_string()
        .with_context(|| format!("read {url}"))?;
    let events = parse_metrics(&text).with_context(|| format!("GET {url}"))?;
    anyhow::ensure!(
        events.shards_down == 0,
        "GET {url}: {} shard(s) did not answer the admin's stats request in time (holdfast_shard_up 0): their counters are missing",
        events.shards_down
    );
    Ok(events)
}

/// Before any session opens: the admin listener answers with Holdfast's event counters, so a
/// wrong `--admin` fails the run at once. Returns the counters before the run.
pub fn preflight(admin: SocketAddr) -> Result<ServerEvents> {
    crate::sockets::check_loopback(admin)?;
    scrape(&agent(), admin)
}

/// What the sampler saw at one moment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    /// CLOCK_MONOTONIC ns, the start of the scrape that succeeded (or of the last attempt).
    pub at_ns: u64,
    pub server: Option<ServerEvents>,
    /// The server process's CPU us (utime + stime), read right before that scrape.
    pub cpu_us: Option<u64>,
    /// CPU us of each server thread name (threads of one name summed).
    pub threads_cpu_us: Option<BTreeMap<String, u64>>,
    /// Why a scrape attempt or a /proc read failed.
    pub error: Option<String>,
}

/// Where the sampler looks.
#[derive(Clone, Copy, Debug)]
pub struct SamplerPlan {
    pub admin: Option<SocketAddr>,
    pub server_pid: Option<u32>,
    pub drain_ms: u64,
}

/// The sampler's samples: at the window's start and end, and after the drain.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Samples {
    pub window_start: Sample,
    pub window_end: Sample,
    pub after_drain: Sample,
}

/// Reads the server's CPU (whole process and per thread) and scrapes its counters right after,
/// so both cover the same span; a failed scrape is retried (CPU read again with it).
fn sample(agent: &ureq::Agent, plan: SamplerPlan) -> Sample {
    let mut errors = Vec::new();
    let mut attempt = 1;
    loop {
        let at_ns = mono_ns();
        let cpu_us = plan.server_pid.and_then(|pid| {
            procfs::cpu_us(pid)
                .map_err(|e| errors.push(format!("{e:#}")))
                .ok()
        });
        let threads_cpu_us = plan.server_pid.and_then(|pid| {
            procfs::thread_cpu_us(pid)
                .map_err(|e| errors.push(format!("{e:#}")))
                .ok()
        });
        let server = match plan.admin.map(|admin| scrape(agent, admin)) {
            None => None,
            Some(Ok(server)) => Some(server),
            Some(Err(e)) => {
                errors.push(format!("scrape attempt {attempt}: {e:#}"));
                if attempt < SCRAPE_ATTEMPTS_MAX {
                    attempt += 1;
                    continue;
                }
                None
            }
        };
        return Sample {
            at_ns,
            server,
            cpu_us,
            threads_cpu_us,
            error: (!errors.is_empty()).then(|| errors.join("; ")),
        };
    }
}

/// Starts the sampler thread: it samples at the window's start, its end, and after the drain.
pub fn spawn_sampler(plan: SamplerPlan, phases: Phases) -> std::thread::JoinHandle<Samples> {
    std::thread::Builder::new()
        .name("events-sampler".into())
        .spawn(move || {
            let agent = agent();
            sleep_until_ns(phases.measure_start_ns);
            let window_start = sample(&agent, plan);
            sleep_until_ns(phases.measure_end_ns);
            let window_end = sample(&agent, plan);
            sleep_until_ns(phases.measure_end_ns + plan.drain_ms * NS_PER_MS);
            let after_drain = sample(&agent, plan);
            Samples {
                window_start,
                window_end,
                after_drain,
            }
        })
        .expect("spawn the events sampler thread")
}

/// The server's event counters over a span: `b - a`.
fn delta(a: &ServerEvents, b: &ServerEvents) -> ServerEvents {
    ServerEvents {
        accepted: b.accepted.saturating_sub(a.accepted),
        dropped: b.dropped.saturating_sub(a.dropped),
        parked: b.parked.saturating_sub(a.parked),
        shards_down: a.shards_down.max(b.shards_down),
    }
}

/// The events figures of a run.
#[derive(Clone, Debug, Serialize)]
pub struct EventsSummary {
    /// "ack" (closed loop) or "stream".
    pub mode: String,
    pub inflight_events_per_session: u32,
    pub topic: String,
    pub frame_bytes: u64,
    /// Event frames the client wrote (stream: queued minus those left unwritten at the end).
    pub sent: u64,
    /// Event frames queued inside the window.
    pub sent_in_window: u64,
    pub sent_in_window_per_s: f64,
    /// ack: Acks received, in all and inside the window.
    pub acked: u64,
    pub acked_in_window: u64,
    /// Events the client saw refused (an Error naming the Event), by error code.
    pub refused_seen_by_client: BTreeMap<String, u64>,
    /// The server's counters over the window (scrape at its start to scrape at its end), and
    /// over the whole run (before any session opened to after the drain).
    pub server_window: Option<ServerEvents>,
    pub server_window_s: Option<f64>,
    pub server_run: Option<ServerEvents>,
    /// Events the client wrote that the server has neither accepted nor dropped after the drain
    /// (only meaningful when this run is the server's only event source).
    pub server_unaccounted: Option<i64>,
    /// Events accepted per second in the window, and where that figure comes from: "server"
    /// (`/metrics`), "acks", or "client writes" (stream without `--admin`).
    pub accepted_per_s: f64,
    pub accepted_in_window: u64,
    pub accepted_source: String,
    /// Drops in the window: the server's count with `--admin`, else the refusals the client saw.
    pub dropped_in_window: Option<u64>,
    pub server_cpu_s: Option<f64>,
    /// Which span `server_cpu_s` covers: the sampler's (the same as the server's counts) or
    /// the window's edges.
    pub server_cpu_source: String,
    pub server_cpu_us_per_event: Option<f64>,
    /// The figure: events accepted per server CPU-second.
    pub events_per_server_cpu_s: Option<f64>,
    /// CPU-seconds of each server thread name over the window (`--server-pid`).
    pub server_threads_cpu_s: Option<BTreeMap<String, f64>>,
    pub client_cpu_s: f64,
    pub events_per_client_cpu_s: f64,
    pub ack_latency: Option<Percentiles>,
    pub samples: Samples,
    pub sample_errors: Vec<String>,
}

/// What [`EventsSummary::new`] takes.
pub struct EventsInputs<'a> {
    pub ack: bool,
    pub inflight_events: u32,
    pub topic: String,
    pub frame_bytes: u64,
    pub counters: &'a Counters,
    pub window_s: f64,
    /// The coordinator's server CPU over the window (`--server-pid`).
    pub server_cpu_us: Option<u64>,
    pub client_cpu_ns: u64,
    pub before_run: Option<ServerEvents>,
    pub samples: Samples,
    pub ack_latency: Option<Percentiles>,
}

impl EventsSummary {
    pub fn new(inputs: EventsInputs<'_>) -> EventsSummary {
        let c = inputs.counters;
        let s = &inputs.samples;
        let sent = if inputs.ack {
            c.requests_sent
        } else {
            c.events_streamed.saturating_sub(c.events_unsent_at_end)
        };
        let per_s = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let server_window = match (&s.window_start.server, &s.window_end.server) {
            (Some(a), Some(b)) => Some(delta(a, b)),
            _ => None,
        };
        let server_window_s = server_window
            .map(|_| s.window_end.at_ns.saturating_sub(s.window_start.at_ns) as f64 / 1e9);
        let server_run = match (&inputs.before_run, &s.after_drain.server) {
            (Some(a), Some(b)) => Some(delta(a, b)),
            _ => None,
        };
        let server_unaccounted =
            server_run.map(|r| sent as i64 - r.accepted as i64 - r.dropped as i64);
        let mut refused = c.events_refused.clone();
        if inputs.ack {
            for (code, n) in &c.replies_error {
                *refused.entry(code.clone()).or_default() += n;
            }
        }
        let (accepted_in_window, accepted_per_s, accepted_source) =
            match (server_window, server_window_s) {
                (Some(w), Some(secs)) => (w.accepted, per_s(w.accepted, secs), "server /metrics"),
                _ if inputs.ack => (
                    c.replies_measured,
                    per_s(c.replies_measured, inputs.window_s),
                    "acks",
                ),
                _ => (
                    c.events_sent_measured,
                    per_s(c.events_sent_measured, inputs.window_s),
                    "client writes (pass --admin for the server's count)",
                ),
            };
        let dropped_in_window = match server_window {
            Some(w) => Some(w.dropped),
            None if inputs.ack => Some(refused.values().sum()),
            None => None,
        };
        // CPU and count over one span: the sampler's (CPU read with each scrape), else the
        // coordinator's window CPU against the window's count.
        let sampler_cpu_us = match (s.window_start.cpu_us, s.window_end.cpu_us) {
            (Some(a), Some(b)) if server_window.is_some() => Some(b.saturating_sub(a)),
            _ => None,
        };
        let (server_cpu_us, server_cpu_source) = match (sampler_cpu_us, inputs.server_cpu_us) {
            (Some(us), _) => (Some(us), "sampler, with the /metrics scrapes"),
            (None, Some(us)) => (Some(us), "window edges"),
            (None, None) => (None, "not measured"),
        };
        let server_cpu_s = server_cpu_us.map(|us| us as f64 / 1e6);
        let server_cpu_us_per_event = server_cpu_us
            .filter(|_| accepted_in_window > 0)
            .map(|us| us as f64 / accepted_in_window as f64);
        let events_per_server_cpu_s = server_cpu_us
            .filter(|us| *us > 0)
            .map(|us| accepted_in_window as f64 * 1e6 / us as f64);
        let server_threads_cpu_s =
            match (&s.window_start.threads_cpu_us, &s.window_end.threads_cpu_us) {
                (Some(a), Some(b)) => Some(
                    b.iter()
                        .map(|(name, end)| {
                            let start = a.get(name).copied().unwrap_or(0);
                            (name.clone(), end.saturating_sub(start) as f64 / 1e6)
                        })
                        .collect(),
                ),
                _ => None,
            };
        let client_cpu_s = inputs.client_cpu_ns as f64 / NS_PER_S as f64;
        let sample_errors = [&s.window_start, &s.window_end, &s.after_drain]
            .iter()
            .filter_map(|x| x.error.clone())
            .collect();
        EventsSummary {
            mode: if inputs.ack { "ack" } else { "stream" }.to_owned(),
            inflight_events_per_session: inputs.inflight_events,
            topic: inputs.topic,
            frame_bytes: inputs.frame_bytes,
            sent,
            sent_in_window: c.events_sent_measured,
            sent_in_window_per_s: per_s(c.events_sent_measured, inputs.window_s),
            acked: if inputs.ack { c.replies_ok } else { 0 },
            acked_in_window: if inputs.ack { c.replies_measured } else { 0 },
            refused_seen_by_client: refused,
            server_window,
            server_window_s,
            server_run,
            server_unaccounted,
            accepted_per_s,
            accepted_in_window,
            accepted_source: accepted_source.to_owned(),
            dropped_in_window,
            server_cpu_s,
            server_cpu_source: server_cpu_source.to_owned(),
            server_cpu_us_per_event,
            events_per_server_cpu_s,
            server_threads_cpu_s,
            client_cpu_s,
            events_per_client_cpu_s: if client_cpu_s > 0.0 {
                c.events_sent_measured as f64 / client_cpu_s
            } else {
                0.0
            },
            ack_latency: inputs.ack_latency,
            samples: inputs.samples,
            sample_errors,
        }
    }

    pub fn print(&self) {
        println!(
            "events: mode {} | {} per session {} | topic {:?} | {}-byte frames",
            self.mode,
            self.inflight_events_per_session,
            if self.mode == "ack" {
                "awaiting Ack"
            } else {
                "queued in the write buffer"
            },
            self.topic,
            self.frame_bytes
        );
        println!(
            "events: sent {} ({} in the window = {:.0}/s) | acked {} ({} in the window) | refused (seen by client) {:?}",
            self.sent,
            self.sent_in_window,
            self.sent_in_window_per_s,
            self.acked,
            self.acked_in_window,
            self.refused_seen_by_client
        );
        match (&self.server_window, self.server_window_s) {
            (Some(w), Some(secs)) => println!(
                "server /metrics, window ({secs:.2} s): accepted {} | dropped {} | parked {}{}",
                w.accepted,
                w.dropped,
                w.parked,
                if w.shards_down > 0 {
                    "  <-- a shard did not answer: counts incomplete"
                } else {
                    ""
                }
            ),
            _ => println!("server /metrics: not scraped (pass --admin ADDR: the drop count is unknown without it)"),
        }
        if let (Some(r), Some(u)) = (&self.server_run, self.server_unaccounted) {
            println!(
                "server /metrics, whole run incl. drain: accepted {} | dropped {} | parked {} | sent by this client and not (yet) accepted or dropped {}",
                r.accepted, r.dropped, r.parked, u
            );
        }
        println!(
            "throughput: {:.0} events accepted/s in the window ({} accepted; source: {}) | dropped in the window: {}",
            self.accepted_per_s,
            self.accepted_in_window,
            self.accepted_source,
            self.dropped_in_window
                .map_or_else(|| "unknown".to_owned(), |d| d.to_string())
        );
        if let Some(h) = &self.ack_latency {
            println!(
                "ack latency (send -> Ack): p50 {} us | p90 {} us | p99 {} us | p99.9 {} us | max {} us ({} samples)",
                h.p50_us, h.p90_us, h.p99_us, h.p999_us, h.max_us, h.count
            );
        }
        match (self.server_cpu_s, self.events_per_server_cpu_s) {
            (Some(cpu), Some(rate)) => println!(
                "server: {cpu:.3} CPU-s in the window ({}) = {:.2} us CPU per accepted event = {rate:.0} events per server CPU-second",
                self.server_cpu_source,
                self.server_cpu_us_per_event.unwrap_or(0.0)
            ),
            _ => println!("server: CPU not measured (pass --server-pid PID)"),
        }
        if let Some(threads) = &self.server_threads_cpu_s {
            let list: Vec<String> = threads
                .iter()
                .filter(|(_, cpu)| **cpu > 0.0)
                .map(|(name, cpu)| format!("{name} {cpu:.2}"))
                .collect();
            println!("server threads, CPU-s in the window: {}", list.join(" | "));
        }
        println!(
            "client: {:.2} CPU-s in the window = {:.0} events sent per client CPU-second",
            self.client_cpu_s, self.events_per_client_cpu_s
        );
        for e in &self.sample_errors {
            println!("sampler: {e}");
        }
    }
}

/// `--inflight-events` and `--event-topic` checks, before any worker starts.
pub fn check_args(inflight_events: u32, topic: &str) -> Result<()> {
    if inflight_events == 0 || inflight_events > INFLIGHT_EVENTS_MAX {
        bail!("--inflight-events must be 1..={INFLIGHT_EVENTS_MAX}, not {inflight_events}");
    }
    if !(1..=EVENT_TOPIC_BYTES_MAX).contains(&topic.len()) {
        bail!(
            "--event-topic must be 1..={EVENT_TOPIC_BYTES_MAX} bytes, not {}",
            topic.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_protocol::{next_frame, Payload, MAX_FRAME_BYTES_DEFAULT};

    #[test]
    fn event_frames_decode_with_their_id_topic_and_ack_flag() {
        for ack in [false, true] {
            let frame = event_frame("item-7", 48, ack, MAX_FRAME_BYTES_DEFAULT).unwrap();
            let mut out = Vec::new();
            write_event(&frame, 41, &mut out);
            write_event(&frame, 42, &mut out);
            let first = next_frame(&out, MAX_FRAME_BYTES_DEFAULT).unwrap().unwrap();
            assert_eq!(first.header.id, 41);
            assert_eq!(first.header.ack_requested(), ack);
            let Payload::Event(event) = first.payload else {
                panic!("not an Event")
            };
            assert_eq!(&*event.topic, "item-7");
            assert_eq!(event.payload.len(), 48);
            let second = next_frame(&out[frame.len()..], MAX_FRAME_BYTES_DEFAULT)
                .unwrap()
                .unwrap();
            assert_eq!(second.header.id, 42);
            assert_eq!(second.bytes.len(), frame.len());
        }
    }

    #[test]
    fn bad_topics_and_oversized_frames_are_errors_not_panics() {
        assert!(event_frame("", 8, true, MAX_FRAME_BYTES_DEFAULT).is_err());
        assert!(event_frame(&"x".repeat(129), 8, true, MAX_FRAME_BYTES_DEFAULT).is_err());
        assert!(event_frame("t", 100_000, true, MAX_FRAME_BYTES_DEFAULT).is_err());
        assert!(check_args(0, "t").is_err());
        assert!(check_args(INFLIGHT_EVENTS_MAX + 1, "t").is_err());
        assert!(check_args(16, "t").is_ok());
    }

    #[test]
    fn metrics_are_summed_over_shards_and_missing_shards_are_flagged() {
        let text = "\
# HELP holdfast_events_accepted_total Event frames taken into the event pipeline.
# TYPE holdfast_events_accepted_total counter
holdfast_events_accepted_total{shard=\"0\"} 100
holdfast_events_accepted_total{shard=\"1\"} 23
holdfast_events_dropped_total{shard=\"0\"} 5
holdfast_events_dropped_total{shard=\"1\"} 0
holdfast_events_parked_total{shard=\"1\"} 7
holdfast_events_accepted_total_other 999
holdfast_shard_up{shard=\"0\"} 1
holdfast_shard_up{shard=\"1\"} 0
";
        let e = parse_metrics(text).unwrap();
        assert_eq!(
            e,
            ServerEvents {
                accepted: 123,
                dropped: 5,
                parked: 7,
                shards_down: 1
            }
        );
        assert!(parse_metrics("holdfast_shard_up 1\n").is_err());
        assert!(parse_metrics("holdfast_events_accepted_total{shard=\"0\"} x\n").is_err());
    }

    fn server(accepted: u64, dropped: u64) -> Option<ServerEvents> {
        Some(ServerEvents {
            accepted,
            dropped,
            ..ServerEvents::default()
        })
    }

    #[test]
    fn the_server_count_and_cpu_give_events_per_server_cpu_second() {
        let counters = Counters {
            events_streamed: 1_100,
            events_unsent_at_end: 100,
            events_sent_measured: 900,
            ..Counters::default()
        };
        let samples = Samples {
            window_start: Sample {
                at_ns: NS_PER_S,
                server: server(50, 0),
                cpu_us: Some(1_000_000),
                ..Sample::default()
            },
            window_end: Sample {
                at_ns: 3 * NS_PER_S,
                server: server(850, 20),
                cpu_us: Some(1_400_000),
                ..Sample::default()
            },
            after_drain: Sample {
                at_ns: 4 * NS_PER_S,
                server: server(970, 30),
                ..Sample::default()
            },
        };
        let s = EventsSummary::new(EventsInputs {
            ack: false,
            inflight_events: 8,
            topic: "t".into(),
            frame_bytes: 64,
            counters: &counters,
            window_s: 2.0,
            // The window edges' CPU is not the span of the counts: the sampler's is used.
            server_cpu_us: Some(999),
            client_cpu_ns: 0,
            before_run: server(0, 0),
            samples,
            ack_latency: None,
        });
        assert_eq!(s.sent, 1_000);
        assert_eq!(s.accepted_in_window, 800);
        assert!((s.accepted_per_s - 400.0).abs() < 1e-9);
        assert_eq!(s.dropped_in_window, Some(20));
        assert!((s.events_per_server_cpu_s.unwrap() - 2_000.0).abs() < 1e-6);
        assert!((s.server_cpu_us_per_event.unwrap() - 500.0).abs() < 1e-9);
        assert_eq!(s.server_unaccounted, Some(0));
    }

    #[test]
    fn without_admin_acks_are_the_count_and_error_replies_the_drops() {
        let mut counters = Counters {
            requests_sent: 500,
            replies_ok: 480,
            replies_measured: 300,
            ..Counters::default()
        };
        counters.replies_error.insert("limit_exceeded".into(), 20);
        let s = EventsSummary::new(EventsInputs {
            ack: true,
            inflight_events: 4,
            topic: "t".into(),
            frame_bytes: 64,
            counters: &counters,
            window_s: 3.0,
            server_cpu_us: None,
            client_cpu_ns: 0,
            before_run: None,
            samples: Samples::default(),
            ack_latency: None,
        });
        assert_eq!(s.accepted_source, "acks");
        assert!((s.accepted_per_s - 100.0).abs() < 1e-9);
        assert_eq!(s.dropped_in_window, Some(20));
        assert_eq!(s.events_per_server_cpu_s, None);
    }
}
