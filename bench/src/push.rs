//! `push`: the publisher and the delivery accounting of the parent.
//!
//! The workers open N sessions and Subscribe each to `--topic` (setup ends with the Acks). The
//! publisher runs in the parent on its own thread: a blocking HTTP client (ureq) that sends
//! `POST /publish` to the server's admin listener, open loop at `--rate-per-s` on the topic
//! (each payload stamped with its *intended* publish time, so a publisher or server that falls
//! behind shows up as latency, not as a lower rate), or `--broadcast-burst K` broadcasts back to
//! back at the window's start (stamped with the time each request starts). A payload is the
//! CLOCK_MONOTONIC timestamp (u64 LE, 8 bytes) followed by a fixed pattern the workers check.
//!
//! Accounting: expected deliveries = publishes answered 202 x sessions subscribed. Workers count
//! deliveries, sequence gaps between two deliveries of one session and duplicates, and at the end
//! the sums of every subscribed session's first and last seq; with the first and last seq the
//! publisher got back, that gives the seqs each session missed at the start and at the end too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Result};
use base64::Engine;
use serde::Serialize;

use crate::clock::{mono_ns, sleep_until_ns, NS_PER_MS, NS_PER_S, NS_PER_US};
use crate::hist::{self, Hist};
use crate::msg::{Counters, Phases};
use crate::report::Percentiles;
use crate::schedule::RateSchedule;
use crate::worker::template::{push_payload, PUSH_TIMESTAMP_BYTES};

/// The topic of broadcast Push frames.
pub const BROADCAST_TOPIC: &str = "*";
/// A last delivery this close to the end of the drain means deliveries were still arriving.
const STILL_ARRIVING_MS: f64 = 250.0;
/// Longest server error text kept in a failure cause.
const ERROR_TEXT_MAX_CHARS: usize = 120;
/// Broadcast burst with --server-pid: the server's CPU is sampled this often around the burst.
pub const BURST_CPU_SAMPLE_INTERVAL_MS: u64 = 1;
/// ... for this long from the window's start (a 30k burst takes a few hundred ms).
pub const BURST_CPU_SAMPLING_MS: u64 = 5_000;

/// (CLOCK_MONOTONIC ns, server CPU ns) samples.
pub type CpuSamples = Vec<(u64, u64)>;

/// Broadcast burst: samples the server's CPU (all threads, ns) every
/// `BURST_CPU_SAMPLE_INTERVAL_MS` from just before the window's start, so the CPU of the
/// broadcast itself can be told from the rest of the window (idle sessions' heartbeats).
pub fn spawn_cpu_sampler(pid: u32, phases: Phases) -> std::thread::JoinHandle<CpuSamples> {
    std::thread::Builder::new()
        .name("burst-cpu".into())
        .spawn(move || {
            let start_ns = phases.measure_start_ns.saturating_sub(5 * NS_PER_MS);
            let stop_ns = phases.measure_start_ns + BURST_CPU_SAMPLING_MS * NS_PER_MS;
            let mut samples = Vec::with_capacity((BURST_CPU_SAMPLING_MS + 5) as usize);
            let mut due_ns = start_ns;
            while due_ns < stop_ns {
                sleep_until_ns(due_ns);
                if let Ok(cpu_ns) = crate::procfs::threads_cpu_ns(pid) {
                    samples.push((mono_ns(), cpu_ns));
                }
                due_ns += BURST_CPU_SAMPLE_INTERVAL_MS * NS_PER_MS;
            }
            samples
        })
        .expect("spawn the burst CPU sampler thread")
}

/// The server's CPU over the burst: from the last sample at or before `from_ns` to the first
/// at or after `to_ns`. Returns (CPU ns, span ns of the two samples).
pub fn cpu_between(samples: &[(u64, u64)], from_ns: u64, to_ns: u64) -> Option<(u64, u64)> {
    let before = samples.iter().rev().find(|(t, _)| *t <= from_ns)?;
    let after = samples.iter().find(|(t, _)| *t >= to_ns)?;
    Some((after.1.saturating_sub(before.1), after.0 - before.0))
}

/// What the publisher does.
#[derive(Clone, Debug)]
pub struct PublishPlan {
    pub admin: SocketAddr,
    pub topic: String,
    /// Some(K): K broadcasts at the window's start; None: topic publishes at `rate_per_s`.
    pub broadcast_burst: Option<u64>,
    pub rate_per_s: u64,
    pub payload_bytes: usize,
    pub secret: Option<String>,
    pub timeout_ms: u64,
}

/// What the publisher did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PublisherResult {
    /// Publishes attempted (HTTP requests sent).
    pub publishes_sent: u64,
    /// Publishes answered 202 with a seq.
    pub publishes_ok: u64,
    /// Failed publishes by cause (`http_STATUS: error text`, `transport: ...`, `bad_reply`).
    pub publishes_failed: BTreeMap<String, u64>,
    /// Open loop: publishes that fell due before the window's end but were never sent.
    pub publishes_unsent_at_end: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The seqs answered are first..=last without holes (no one else published on the stream).
    pub seqs_contiguous: bool,
    /// CLOCK_MONOTONIC ns when the first publish started.
    pub first_publish_ns: Option<u64>,
    /// The publisher's HTTP request time (request start to reply), and open loop: its lag
    /// behind the intended publish times.
    pub http: Option<Percentiles>,
    pub lag: Option<Percentiles>,
}

struct Publisher {
    agent: ureq::Agent,
    url: String,
    plan: PublishPlan,
    result: PublisherResult,
    http_hist: Hist,
    lag_hist: Hist,
    seqs: Vec<u64>,
}

fn body_json(plan: &PublishPlan, payload: &[u8]) -> String {
    let payload_base64 = base64::engine::general_purpose::STANDARD.encode(payload);
    let body = match plan.broadcast_burst {
        Some(_) => serde_json::json!({"target": "broadcast", "payload_base64": payload_base64}),
        None => serde_json::json!({
            "target": "topic",
            "topic": plan.topic,
            "payload_base64": payload_base64,
        }),
    };
    body.to_string()
}

fn agent(timeout_ms: u64) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(timeout_ms))
        .max_idle_connections_per_host(4)
        .build()
}

fn truncate(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(ERROR_TEXT_MAX_CHARS) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

/// Sends one request; Ok(seq) on 202 `{"seq": N}`, Err(cause) otherwise.
fn post(
    agent: &ureq::Agent,
    url: &str,
    secret: Option<&str>,
    body: &str,
) -> std::result::Result<Option<u64>, String> {
    let mut request = agent.post(url).set("Content-Type", "application/json");
    if let Some(secret) = secret {
        request = request.set("Authorization", &format!("Bearer {secret}"));
    }
    match request.send_string(body) {
        Ok(response) => {
            let status = response.status();
            let text = response.into_string().unwrap_or_default();
            if status != 202 {
                return Err(format!("http_{status}: {}", truncate(&text)));
            }
            let seq = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["seq"].as_u64());
            Ok(seq)
        }
        Err(ureq::Error::Status(status, response)) => {
            let text = response.into_string().unwrap_or_default();
            let error = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            Err(format!("http_{status}: {}", truncate(&error)))
        }
        Err(ureq::Error::Transport(t)) => Err(format!("transport: {}", truncate(&t.to_string()))),
    }
}

/// Before any session opens: makes sure `admin` answers `POST /publish` at all, so a server
/// without push support fails the run at once with a clear message. Sends a publish with an
/// unknown target, which a server with /publish refuses with 400 and publishes nothing.
pub fn preflight(plan: &PublishPlan) -> Result<()> {
    crate::sockets::check_loopback(plan.admin)?;
    anyhow::ensure!(
        plan.payload_bytes >= PUSH_TIMESTAMP_BYTES,
        "push needs --payload-bytes of at least {PUSH_TIMESTAMP_BYTES} (the publish timestamp)"
    );
    let url = format!("http://{}/publish", plan.admin);
    let body = r#"{"target":"holdfast-bench-preflight","payload_base64":""}"#;
    match post(&agent(plan.timeout_ms), &url, plan.secret.as_deref(), body) {
        Err(cause)
            if ["http_404", "http_405", "http_501"]
                .iter()
                .any(|s| cause.starts_with(s)) =>
        {
            bail!(
                "the server's admin listener at {} has no POST /publish ({cause}): this server does not support push",
                plan.admin
            )
        }
        Err(cause) if cause.starts_with("http_401") || cause.starts_with("http_403") => bail!(
            "POST /publish at {} refused the credentials ({cause}): pass --publish-secret (or HOLDFAST_BENCH_PUBLISH_SECRET)",
            plan.admin
        ),
        Err(cause) if cause.starts_with("transport") => bail!(
            "cannot reach the admin listener at {} ({cause}): pass --admin ADDR (holdfast serve --admin-listen ADDR)",
            plan.admin
        ),
        // 400 (unknown target) is the expected answer; anything else is the server's business.
        _ => Ok(()),
    }
}

impl Publisher {
    fn new(plan: PublishPlan) -> Publisher {
        Publisher {
            agent: agent(plan.timeout_ms),
            url: format!("http://{}/publish", plan.admin),
            plan,
            result: PublisherResult::default(),
            http_hist: hist::new_hist(),
            lag_hist: hist::new_hist(),
            seqs: Vec::new(),
        }
    }

    fn publish(&mut self, timestamp_ns: u64) {
        let body = body_json(
            &self.plan,
            &push_payload(self.plan.payload_bytes, timestamp_ns),
        );
        let started = mono_ns();
        self.result.first_publish_ns.get_or_insert(started);
        self.result.publishes_sent += 1;
        let outcome = post(&self.agent, &self.url, self.plan.secret.as_deref(), &body);
        hist::record_clamped(&mut self.http_hist, (mono_ns() - started) / NS_PER_US);
        let cause = match outcome {
            Ok(Some(seq)) => {
                self.result.publishes_ok += 1;
                self.seqs.push(seq);
                return;
            }
            Ok(None) => "bad_reply: 202 without a seq".to_owned(),
            Err(cause) => cause,
        };
        *self.result.publishes_failed.entry(cause).or_default() += 1;
    }

    fn run(mut self, phases: Phases) -> PublisherResult {
        match self.plan.broadcast_burst {
            Some(k) => {
                sleep_until_ns(phases.measure_start_ns);
                for _ in 0..k {
                    self.publish(mono_ns());
                }
            }
            None => {
                let schedule = RateSchedule::new(phases.warmup_start_ns, self.plan.rate_per_s);
                let mut i = 0;
                loop {
                    let intended = schedule.intended_ns(i);
                    if intended >= phases.measure_end_ns {
                        break;
                    }
                    sleep_until_ns(intended);
                    let now = mono_ns();
                    if now >= phases.measure_end_ns {
                        self.result.publishes_unsent_at_end = schedule
                            .due_count(phases.measure_end_ns.saturating_sub(1))
                            .saturating_sub(i);
                        break;
                    }
                    hist::record_clamped(&mut self.lag_hist, (now - intended) / NS_PER_US);
                    self.publish(intended);
                    i += 1;
                }
            }
        }
        self.seqs.sort_unstable();
        self.result.first_seq = self.seqs.first().copied();
        self.result.last_seq = self.seqs.last().copied();
        self.result.seqs_contiguous = self.seqs.windows(2).all(|w| w[1] == w[0] + 1);
        let of = |h: &Hist| (!h.is_empty()).then(|| Percentiles::of(h));
        self.result.http = of(&self.http_hist);
        self.result.lag = of(&self.lag_hist);
        self.result
    }
}

/// Starts the publisher thread; it publishes over the run's phases and returns what it did.
pub fn spawn_publisher(
    plan: PublishPlan,
    phases: Phases,
) -> std::thread::JoinHandle<PublisherResult> {
    std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || Publisher::new(plan).run(phases))
        .expect("spawn the publisher thread")
}

/// The push figures of a run.
#[derive(Clone, Debug, Serialize)]
pub struct PushSummary {
    /// "topic NAME" or "broadcast".
    pub stream: String,
    pub publisher: PublisherResult,
    pub subscribers: u64,
    pub expected_deliveries: u64,
    pub delivered: u64,
    /// delivered / expected.
    pub delivered_ratio: f64,
    /// Seqs missed by subscribed sessions: between deliveries, at the start, at the end, and
    /// every seq of sessions that received nothing.
    pub gaps: u64,
    pub gaps_between: u64,
    pub gaps_at_start: u64,
    pub gaps_at_end: u64,
    pub gaps_silent_sessions: u64,
    pub duplicates: u64,
    pub payload_mismatched: u64,
    /// Broadcast burst: from the first publish to the last delivery, and deliveries per second
    /// over that span.
    pub burst_span_ms: Option<f64>,
    pub burst_deliveries_per_s: Option<f64>,
    /// From the last delivery to the end of the drain (when the workers stopped counting).
    pub last_delivery_before_stop_ms: Option<f64>,
    /// Deliveries were missing and still arriving when the run stopped: raise --drain-ms.
    pub still_arriving_at_stop: bool,
    /// Broadcast burst with --server-pid: the server's CPU from the first publish to the last
    /// delivery (1 ms samples), the span of those samples, and deliveries per server CPU-second
    /// over the burst alone.
    pub burst_server_cpu_ms: Option<f64>,
    pub burst_cpu_span_ms: Option<f64>,
    pub burst_deliveries_per_server_cpu_s: Option<f64>,
    /// Every count adds up: publishes all answered, delivered == expected, no gaps, duplicates
    /// or wrong payloads, seqs contiguous.
    pub clean: bool,
}

impl PushSummary {
    /// `stop_ns`: when the workers stopped counting (the window's end plus the drain).
    pub fn new(
        stream: String,
        publisher: PublisherResult,
        c: &Counters,
        stop_ns: u64,
    ) -> PushSummary {
        let publishes = publisher.publishes_ok;
        let subscribers = c.push_subscribed;
        let expected = publishes * subscribers;
        let (mut at_start, mut at_end) = (0, 0);
        if let (Some(first), Some(last)) = (publisher.first_seq, publisher.last_seq) {
            let n = u128::from(c.push_sessions_receiving);
            at_start =
                u128::from(c.push_first_seq_sum).saturating_sub(n * u128::from(first)) as u64;
            at_end = (n * u128::from(last)).saturating_sub(u128::from(c.push_last_seq_sum)) as u64;
        }
        let silent = c.push_sessions_silent * publishes;
        let gaps = c.push_gaps_between + at_start + at_end + silent;
        let burst_span_ns = match (publisher.first_publish_ns, c.push_last_delivery_ns) {
            (Some(first), Some(last)) if last > first => Some(last - first),
            _ => None,
        };
        let is_burst = stream == "broadcast";
        let burst_span_ms = burst_span_ns
            .filter(|_| is_burst)
            .map(|ns| ns as f64 / NS_PER_MS as f64);
        let burst_deliveries_per_s = burst_span_ns
            .filter(|_| is_burst)
            .map(|ns| c.push_delivered as f64 * NS_PER_S as f64 / ns as f64);
        let last_delivery_before_stop_ms = c
            .push_last_delivery_ns
            .map(|last| stop_ns.saturating_sub(last) as f64 / NS_PER_MS as f64);
        let still_arriving_at_stop = c.push_delivered < expected
            && last_delivery_before_stop_ms.is_some_and(|ms| ms < STILL_ARRIVING_MS);
        let clean = publishes > 0
            && publisher.publishes_failed.is_empty()
            && publisher.seqs_contiguous
            && c.push_delivered == expected
            && gaps == 0
            && c.push_duplicates == 0
            && c.push_payload_mismatched == 0;
        PushSummary {
            stream,
            subscribers,
            expected_deliveries: expected,
            delivered: c.push_delivered,
            delivered_ratio: if expected == 0 {
                0.0
            } else {
                c.push_delivered as f64 / expected as f64
            },
            gaps,
            gaps_between: c.push_gaps_between,
            gaps_at_start: at_start,
            gaps_at_end: at_end,
            gaps_silent_sessions: silent,
            duplicates: c.push_duplicates,
            payload_mismatched: c.push_payload_mismatched,
            burst_span_ms,
            burst_deliveries_per_s,
            last_delivery_before_stop_ms,
            still_arriving_at_stop,
            burst_server_cpu_ms: None,
            burst_cpu_span_ms: None,
            burst_deliveries_per_server_cpu_s: None,
            clean,
            publisher,
        }
    }

    /// Charges the server's CPU over the burst (first publish to last delivery) to its
    /// deliveries; `c` is the run's counters.
    pub fn charge_burst_cpu(&mut self, samples: &[(u64, u64)], c: &Counters) {
        let (Some(first), Some(last)) = (self.publisher.first_publish_ns, c.push_last_delivery_ns)
        else {
            return;
        };
        let Some((cpu_ns, span_ns)) = cpu_between(samples, first, last) else {
            return;
        };
        self.burst_server_cpu_ms = Some(cpu_ns as f64 / NS_PER_MS as f64);
        self.burst_cpu_span_ms = Some(span_ns as f64 / NS_PER_MS as f64);
        self.burst_deliveries_per_server_cpu_s =
            (cpu_ns > 0).then(|| self.delivered as f64 * NS_PER_S as f64 / cpu_ns as f64);
    }

    pub fn print(&self) {
        let p = &self.publisher;
        println!(
            "push: {} | publishes sent {} | ok {} | failed {:?} | unsent {} | seqs {:?}..{:?}{}",
            self.stream,
            p.publishes_sent,
            p.publishes_ok,
            p.publishes_failed,
            p.publishes_unsent_at_end,
            p.first_seq,
            p.last_seq,
            if p.seqs_contiguous {
                ""
            } else {
                " (NOT contiguous: someone else publishes on this stream)"
            }
        );
        println!(
            "deliveries: {} of {} expected ({} publishes x {} subscribers) = {:.4} | gaps {} (between {}, at start {}, at end {}, silent sessions {}) | duplicates {} | payload mismatched {}{}",
            self.delivered,
            self.expected_deliveries,
            p.publishes_ok,
            self.subscribers,
            self.delivered_ratio,
            self.gaps,
            self.gaps_between,
            self.gaps_at_start,
            self.gaps_at_end,
            self.gaps_silent_sessions,
            self.duplicates,
            self.payload_mismatched,
            if self.clean { "" } else { "  <-- DOES NOT ADD UP" }
        );
        if self.still_arriving_at_stop {
            println!(
                "deliveries were still arriving when the run stopped (last one {:.0} ms before): the missing ones may be late, not lost; raise --drain-ms",
                self.last_delivery_before_stop_ms.unwrap_or(0.0)
            );
        }
        if let (Some(span), Some(rate)) = (self.burst_span_ms, self.burst_deliveries_per_s) {
            println!("burst: first publish to last delivery {span:.1} ms = {rate:.0} deliveries/s");
        }
        if let (Some(cpu), Some(span), Some(per_cpu_s)) = (
            self.burst_server_cpu_ms,
            self.burst_cpu_span_ms,
            self.burst_deliveries_per_server_cpu_s,
        ) {
            println!(
                "burst server CPU: {cpu:.1} ms over the {span:.1} ms from the first publish to the last delivery (1 ms samples) = {per_cpu_s:.0} deliveries per server CPU-second"
            );
        }
        for (name, h) in [("http", &p.http), ("lag", &p.lag)] {
            if let Some(h) = h {
                println!(
                    "publisher {name}: p50 {} us, p99 {} us, max {} us ({} samples)",
                    h.p50_us, h.p99_us, h.max_us, h.count
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(first: u64, last: u64) -> PublisherResult {
        PublisherResult {
            publishes_sent: last - first + 1,
            publishes_ok: last - first + 1,
            first_seq: Some(first),
            last_seq: Some(last),
            seqs_contiguous: true,
            ..PublisherResult::default()
        }
    }

    #[test]
    fn every_delivery_present_adds_up() {
        // 3 sessions, seqs 11..=20 each.
        let c = Counters {
            push_subscribed: 3,
            push_delivered: 30,
            push_sessions_receiving: 3,
            push_first_seq_sum: 33,
            push_last_seq_sum: 60,
            ..Counters::default()
        };
        let s = PushSummary::new("topic t".into(), publisher(11, 20), &c, 0);
        assert_eq!(s.expected_deliveries, 30);
        assert_eq!(s.gaps, 0);
        assert!(s.clean);
    }

    #[test]
    fn missed_starts_ends_and_silent_sessions_are_gaps() {
        // 4 sessions, seqs 1..=10: one starts at 3, one stops at 8, one gets nothing,
        // one skips 2 in the middle.
        let c = Counters {
            push_subscribed: 4,
            push_delivered: 8 + 8 + 8,
            push_gaps_between: 2,
            push_sessions_receiving: 3,
            push_first_seq_sum: 3 + 1 + 1,
            push_last_seq_sum: 10 + 8 + 10,
            push_sessions_silent: 1,
            ..Counters::default()
        };
        let s = PushSummary::new("topic t".into(), publisher(1, 10), &c, 0);
        assert_eq!(s.gaps_at_start, 2);
        assert_eq!(s.gaps_at_end, 2);
        assert_eq!(s.gaps_silent_sessions, 10);
        assert_eq!(s.gaps, 16);
        assert_eq!(s.expected_deliveries - s.delivered, 16);
        assert!(!s.clean);
    }

    #[test]
    fn duplicates_or_failed_publishes_are_not_clean() {
        let c = Counters {
            push_subscribed: 1,
            push_delivered: 2,
            push_duplicates: 1,
            push_sessions_receiving: 1,
            push_first_seq_sum: 1,
            push_last_seq_sum: 1,
            ..Counters::default()
        };
        assert!(!PushSummary::new("broadcast".into(), publisher(1, 1), &c, 0).clean);
        let mut p = publisher(1, 1);
        p.publishes_failed.insert("http_400: bad".into(), 1);
        let c = Counters {
            push_subscribed: 1,
            push_delivered: 1,
            push_sessions_receiving: 1,
            push_first_seq_sum: 1,
            push_last_seq_sum: 1,
            ..Counters::default()
        };
        assert!(!PushSummary::new("topic t".into(), p, &c, 0).clean);
    }

    #[test]
    fn burst_cpu_is_taken_between_the_samples_around_the_burst() {
        let samples = vec![
            (0, 100),
            (1_000, 150),
            (2_000, 400),
            (3_000, 900),
            (4_000, 950),
        ];
        // Burst from 1,500 to 2,500 ns: samples at 1,000 and 3,000.
        assert_eq!(cpu_between(&samples, 1_500, 2_500), Some((750, 2_000)));
        assert_eq!(cpu_between(&samples, 1_000, 3_000), Some((750, 2_000)));
        // Nothing after the end: no figure rather than a short one.
        assert_eq!(cpu_between(&samples, 1_000, 5_000), None);
        let c = Counters {
            push_delivered: 30,
            push_last_delivery_ns: Some(2_500),
            ..Counters::default()
        };
        let mut p = publisher(1, 1);
        p.first_publish_ns = Some(1_500);
        let mut s = PushSummary::new("broadcast".into(), p, &c, 0);
        s.charge_burst_cpu(&samples, &c);
        assert_eq!(s.burst_server_cpu_ms, Some(750.0 / 1e6));
        // 30 deliveries over 750 ns of CPU.
        assert_eq!(
            s.burst_deliveries_per_server_cpu_s.map(f64::round),
            Some(4e7)
        );
    }

    #[test]
    fn publish_bodies_carry_target_and_base64_payload() {
        let mut plan = PublishPlan {
            admin: "127.0.0.1:1".parse().unwrap(),
            topic: "news".into(),
            broadcast_burst: None,
            rate_per_s: 1,
            payload_bytes: 16,
            secret: None,
            timeout_ms: 100,
        };
        let v: serde_json::Value = serde_json::from_str(&body_json(&plan, &[1, 2, 3])).unwrap();
        assert_eq!(v["target"], "topic");
        assert_eq!(v["topic"], "news");
        assert_eq!(v["payload_base64"], "AQID");
        plan.broadcast_burst = Some(1);
        let v: serde_json::Value = serde_json::from_str(&body_json(&plan, &[])).unwrap();
        assert_eq!(v["target"], "broadcast");
        assert!(v.get("topic").is_none());
    }
}
