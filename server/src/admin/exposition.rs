//! `/metrics`: shard reports and probe snapshots as Prometheus text (format 0.0.4), encoded by
//! the `prometheus-client` crate.
//!
//! Every scrape builds a fresh registry around one [`Collector`] that owns the copies just
//! collected, so nothing here is shared with a shard or kept between scrapes. Names follow the
//! Prometheus conventions: base units (seconds, bytes) in the name, `_total` on counters (the
//! crate appends it), one `shard` label on every per-shard series. Sum over `shard` for the
//! server-wide figure.
//!
//! Histograms are converted, not re-recorded: HDR histograms (the reply latency, in us) fold
//! into [`REPLY_LATENCY_BUCKETS_US`]; the probes' log2 histograms keep their own bucket bounds,
//! the first [`LOG2_US_BUCKETS_EXPOSED`] (or [`LOG2_NS_BUCKETS_EXPOSED`]) of them, the rest in
//! `+Inf`.

use std::fmt;

use hdrhistogram::Histogram;
use holdfast_ebpf::{Log2Hist, Snapshot, LOG2_BUCKETS};
use holdfast_protocol::ErrorCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::stats::ShardPoll;
use crate::mesh::ShardReport;
use crate::metrics::{CloseReason, SHARD_COUNTER_METRICS};

/// `Content-Type` of what [`render`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Bucket upper bounds of `holdfast_reply_latency_seconds`, in us (exposed in seconds): 50 us to
/// 10 s, about three per decade.
pub const REPLY_LATENCY_BUCKETS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Log2 buckets exposed for a histogram in us: bucket 26 ends at 2^27 - 1 us (134 s); anything
/// above is counted in `+Inf` only.
pub const LOG2_US_BUCKETS_EXPOSED: usize = 27;
/// Log2 buckets exposed for a histogram in ns: bucket 36 ends at 2^37 - 1 ns (137 s).
pub const LOG2_NS_BUCKETS_EXPOSED: usize = 37;

const US_PER_S: f64 = 1e6;
const NS_PER_S: f64 = 1e9;

/// A histogram ready for the encoder: per-bucket (not cumulative) counts under each upper bound
/// in seconds; samples above the last bound are in `count` only (the `+Inf` bucket).
#[derive(Debug, Clone, PartialEq)]
pub struct PromHistogram {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    /// Sum of the samples in seconds. Estimated: HDR values are known to their precision (3
    /// significant digits), log2 samples only to their bucket (its midpoint is used).
    pub sum_s: f64,
}

/// Folds an HDR histogram of microseconds into Prometheus buckets with bounds `bounds_us`
/// (ascending). A sample counts under the first bound at or above the lowest value of its HDR
/// bucket, so a bound that is a multiple of the HDR resolution at that magnitude is exact.
pub fn from_hdr_us(hist: &Histogram<u64>, bounds_us: &[u64]) -> PromHistogram {
    debug_assert!(bounds_us.windows(2).all(|w| w[0] < w[1]), "bounds ascend");
    let mut counts = vec![0u64; bounds_us.len()];
    let mut sum_us = 0f64;
    for step in hist.iter_recorded() {
        let value = step.value_iterated_to();
        let n = step.count_at_value();
        let index = bounds_us.partition_point(|bound| *bound < hist.lowest_equivalent(value));
        if let Some(count) = counts.get_mut(index) {
            *count += n;
        }
        sum_us += hist.median_equivalent(value) as f64 * n as f64;
    }
    PromHistogram {
        buckets: bounds_us
            .iter()
            .map(|us| *us as f64 / US_PER_S)
            .zip(counts)
            .collect(),
        count: hist.len(),
        sum_s: sum_us / US_PER_S,
    }
}

/// Converts a log2 histogram kept in a unit of `units_per_s` per second (1e6 for `_us`, 1e9 for
/// `_ns`): bucket `i` becomes `le = bucket_upper_bound(i) / units_per_s` for the first `exposed`
/// buckets.
pub fn from_log2(hist: &Log2Hist, units_per_s: f64, exposed: usize) -> PromHistogram {
    assert!(
        exposed < LOG2_BUCKETS,
        "the last log2 bucket has no finite bound"
    );
    let buckets = (0..exposed)
        .map(|i| {
            (
                Log2Hist::bucket_upper_bound(i) as f64 / units_per_s,
                hist.buckets[i],
            )
        })
        .collect();
    let sum_units: f64 = hist
        .buckets
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let lower = Log2Hist::bucket_lower_bound(i) as f64;
            let mid = if i == LOG2_BUCKETS - 1 {
                lower
            } else {
                (lower + Log2Hist::bucket_upper_bound(i) as f64) / 2.0
            };
            mid * *n as f64
        })
        .sum();
    PromHistogram {
        buckets,
        count: hist.count(),
        sum_s: sum_units / units_per_s,
    }
}

/// What one scrape shows: the shards' answers and, when probes are attached and readable,
/// their cumulative snapshot.
#[derive(Debug)]
pub struct Scrape {
    pub poll: ShardPoll,
    /// `None` when probes are off; `Some(None)` when attached but the read failed.
    pub probes: Option<Option<Snapshot>>,
}

/// The Prometheus text for one scrape.
pub fn render(scrape: Scrape) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .expect("writing to a String does not fail");
    out
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.encode_shard_health(&mut encoder)?;
        let reports: Vec<(String, &ShardReport)> = self
            .poll
            .reports
            .iter()
            .flatten()
            .map(|r| (r.index.to_string(), r))
            .collect();
        encode_shard_counters(&mut encoder, &reports)?;
        encode_reply_latency(&mut encoder, &reports)?;
        let attached = matches!(self.probes, Some(Some(_)));
        gauge(
            &mut encoder,
            "holdfast_probes_attached",
            "1 when the eBPF probes are attached and were read for this scrape (serve --probes).",
            [(vec![], u64::from(attached))],
        )?;
        if let Some(Some(snapshot)) = &self.probes {
            encode_probes(&mut encoder, snapshot)?;
        }
        encode_cluster(&mut encoder)?;
        Ok(())
    }
}

impl Scrape {
    fn encode_shard_health(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let indexes: Vec<String> = (0..self.poll.reports.len())
            .map(|i| i.to_string())
            .collect();
        let up = self.poll.reports.iter().zip(&indexes).map(|(r, i)| {
            let labels: Labels = vec![("shard", i.as_str())];
            (labels, u64::from(r.is_some()))
        });
        gauge(
            encoder,
            "holdfast_shard_up",
            "1 when the shard answered the admin thread's stats request within 1 s (ADMIN_STATS_TIMEOUT_MS).",
            up,
        )?;
        let draining = self.poll.reports.iter().zip(&indexes).filter_map(|(r, i)| {
            let labels: Labels = vec![("shard", i.as_str())];
            r.as_ref().map(|r| (labels, u64::from(r.draining)))
        });
        gauge(
            encoder,
            "holdfast_shard_draining",
            "1 while the shard drains (no longer accepting).",
            draining,
        )
    }
}

fn encode_shard_counters(
    encoder: &mut DescriptorEncoder,
    reports: &[(String, &ShardReport)],
) -> fmt::Result {
    gauge(
        encoder,
        "holdfast_connections_open",
        "Connections the shard holds now.",
        reports
            .iter()
            .map(|(shard, r)| (vec![("shard", shard.as_str())], r.counters.open)),
    )?;
    for (name, help, read) in SHARD_COUNTER_METRICS {
        counter(
            encoder,
            name,
            help,
            reports
                .iter()
                .map(|(shard, r)| (vec![("shard", shard.as_str())], read(&r.counters))),
        )?;
    }
    counter(
        encoder,
        "holdfast_connections_closed",
        "Connections closed, by reason.",
        reports.iter().flat_map(|(shard, r)| {
            CloseReason::ALL.iter().map(|reason| {
                (
                    vec![("shard", shard.as_str()), ("reason", reason.name())],
                    r.counters.closed_count(*reason),
                )
            })
        }),
    )?;
    counter(
        encoder,
        "holdfast_errors_sent",
        "Error frames sent, by protocol error code name.",
        reports.iter().flat_map(|(shard, r)| {
            ErrorCode::ALL.iter().map(|code| {
                (
                    vec![("shard", shard.as_str()), ("code", code.name())],
                    r.counters.errors_sent(*code),
                )
            })
        }),
    )
}

fn encode_reply_latency(
    encoder: &mut DescriptorEncoder,
    reports: &[(String, &ShardReport)],
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(
        "holdfast_reply_latency_seconds",
        "From receiving the bytes that caused a reply to the kernel taking the reply.",
        None,
        MetricType::Histogram,
    )?;
    for (shard, report) in reports {
        let hist = from_hdr_us(&report.reply_latency_us, &REPLY_LATENCY_BUCKETS_US);
        let labels: Labels = vec![("shard", shard.as_str())];
        metric
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(hist.sum_s, hist.count, &hist.buckets, None)?;
    }
    Ok(())
}

fn encode_probes(encoder: &mut DescriptorEncoder, s: &Snapshot) -> fmt::Result {
    let us = |h: &Log2Hist| from_log2(h, US_PER_S, LOG2_US_BUCKETS_EXPOSED);
    for (name, help, hist) in [
        (
            "holdfast_runqueue_latency_seconds",
            "Time the server's threads waited for a CPU after a wakeup or preemption (eBPF, sched_wakeup -> sched_switch; _sum estimated from bucket midpoints).",
            us(&s.runqueue_latency_us),
        ),
        (
            "holdfast_offcpu_seconds",
            "Time the server's threads spent off CPU per switch-out, run-queue wait included (eBPF; _sum estimated).",
            us(&s.offcpu_us),
        ),
        (
            "holdfast_oncpu_seconds",
            "Time the server's threads ran per switch-in (eBPF; _sum estimated).",
            us(&s.oncpu_us),
        ),
        (
            "holdfast_tcp_srtt_seconds",
            "Smoothed RTT of the listener's connections, one sample per read of a connection (eBPF sock:sock_recv_length; _sum estimated).",
            us(&s.tcp_srtt_us),
        ),
        (
            "holdfast_data_ready_to_read_seconds",
            "From data becoming readable on a socket to the server's first successful read of it (eBPF sock:sk_data_ready -> sock_recv_length; _sum estimated).",
            from_log2(&s.data_ready_to_read_ns, NS_PER_S, LOG2_NS_BUCKETS_EXPOSED),
        ),
    ] {
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
        metric.encode_histogram::<NoLabelSet>(hist.sum_s, hist.count, &hist.buckets, None)?;
    }
    counter(
        encoder,
        "holdfast_sched_events_missed",
        "Scheduler events of the server's threads the CPU probes could not record (the kernel refused to create a thread's task storage); the CPU histograms undercount by this much (eBPF).",
        [(vec![], s.cpu_events_missed)],
    )?;
    counter(
        encoder,
        "holdfast_page_faults",
        "User-mode page faults of the server's threads since the probes attached (eBPF).",
        [(vec![], s.page_faults)],
    )?;
    let kinds = |v: holdfast_ebpf::RssByMember| {
        [
            (vec![("kind", "file")], v.file),
            (vec![("kind", "anon")], v.anon),
            (vec![("kind", "swap_entries")], v.swap_entries),
            (vec![("kind", "shmem")], v.shmem),
        ]
    };
    gauge(
        encoder,
        "holdfast_rss_bytes",
        "Resident memory by kind at the last kmem:rss_stat event (eBPF; the kernel's approximate counter).",
        kinds(s.rss_bytes),
    )?;
    counter(
        encoder,
        "holdfast_rss_changes",
        "kmem:rss_stat events by kind since the probes attached (eBPF).",
        kinds(s.rss_changes),
    )?;
    counter(
        encoder,
        "holdfast_tcp_retransmits",
        "Segments retransmitted on the listener's connections (eBPF tcp:tcp_retransmit_skb).",
        [(vec![], s.tcp_retransmits)],
    )?;
    counter(
        encoder,
        "holdfast_tcp_exceed_buf_limit",
        "Times socket memory accounting refused memory to the listener's connections, by direction (eBPF sock:sock_exceed_buf_limit).",
        [
            (vec![("direction", "recv")], s.exceed_buf_limit_recv),
            (vec![("direction", "send")], s.exceed_buf_limit_send),
        ],
    )?;
    counter(
        encoder,
        "holdfast_tcp_state_transitions",
        "TCP state changes of the listener's sockets, by from and to state (eBPF sock:inet_sock_set_state).",
        s.tcp_state_transitions
            .iter()
            .map(|t| (vec![("from", t.from), ("to", t.to)], t.count)),
    )
}

/// Cluster mode's counters (process-wide, kept by the bridge); absent when standalone.
fn encode_cluster(encoder: &mut DescriptorEncoder) -> fmt::Result {
    use std::sync::atomic::Ordering::Relaxed;
    if !crate::cluster::ENABLED.load(Relaxed) {
        return Ok(());
    }
    for (name, help, value) in [
        (
            "holdfast_cluster_publish_failed",
            "Local publishes that did not reach NATS (disconnected, send error, bridge queue full).",
            &crate::cluster::PUBLISH_FAILED,
        ),
        (
            "holdfast_cluster_published",
            "Local publishes handed to NATS.",
            &crate::cluster::PUBLISHED,
        ),
        (
            "holdfast_cluster_received",
            "Messages from other hosts (or straight from NATS) handed to a local shard.",
            &crate::cluster::RECEIVED,
        ),
        (
            "holdfast_cluster_receive_dropped",
            "Messages from NATS dropped because the owner shard's inbox was full.",
            &crate::cluster::RECEIVE_DROPPED,
        ),
        (
            "holdfast_cluster_stream_races_lost",
            "JetStream mode: publishes that lost the race for their topic's next number (each retried).",
            &crate::cluster::JS_PUBLISH_RACES_LOST,
        ),
        (
            "holdfast_cluster_stream_unstamped",
            "JetStream mode: stream messages without a Holdfast stamp (published straight on NATS), not delivered.",
            &crate::cluster::JS_UNSTAMPED,
        ),
        (
            "holdfast_cluster_stream_gaps",
            "JetStream mode: messages whose numbers did not follow the last one this host read; the topic's history here starts again.",
            &crate::cluster::JS_GAPS,
        ),
    ] {
        counter(encoder, name, help, [(vec![], value.load(Relaxed))])?;
    }
    Ok(())
}

fn counter<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels<'a>, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels<'a>, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        // Gauges are i64 in the crate; no value here comes near 2^63.
        let value = i64::try_from(value).unwrap_or(i64::MAX);
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::stats::ShardPoll;
    use crate::metrics::CloseReason;
    use crate::metrics::ShardCounters;
    use prometheus_parse::{Scrape as Parsed, Value};

    fn hdr() -> Histogram<u64> {
        Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
    }

    fn parse(text: &str) -> Parsed {
        Parsed::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
    }

    fn report(index: usize) -> ShardReport {
        let mut counters = ShardCounters {
            accepted: 3,
            open: 2,
            frames_in: 40 + index as u64,
            ..ShardCounters::default()
        };
        counters.closed(CloseReason::PeerEof);
        counters.error_sent(ErrorCode::BadVersion);
        let mut reply_latency_us = hdr();
        reply_latency_us.record(80).unwrap();
        ShardReport {
            index,
            counters,
            reply_latency_us,
            draining: false,
        }
    }

    #[test]
    fn hdr_samples_fall_under_the_first_bound_at_or_above_them() {
        let mut h = hdr();
        h.record(50).unwrap(); // exactly on the 50 us bound
        h.record(51).unwrap(); // next bucket: le 100 us
        h.record_n(2_500, 3).unwrap(); // on 2.5 ms, where HDR resolution is 2 us
        h.record(20_000_000).unwrap(); // 20 s: above the last bound, +Inf only
        let p = from_hdr_us(&h, &REPLY_LATENCY_BUCKETS_US);
        assert_eq!(p.count, 6);
        assert_eq!(p.buckets[0], (0.000_05, 1));
        assert_eq!(p.buckets[1], (0.000_1, 1));
        assert_eq!(p.buckets[5], (0.002_5, 3));
        assert_eq!(p.buckets.iter().map(|b| b.1).sum::<u64>(), 5);
        let exact_sum_s = (50 + 51 + 3 * 2_500 + 20_000_000) as f64 / 1e6;
        assert!(
            (p.sum_s - exact_sum_s).abs() / exact_sum_s < 0.001,
            "{}",
            p.sum_s
        );
    }

    #[test]
    fn log2_buckets_keep_their_bounds_in_seconds_and_overflow_to_inf() {
        let mut h = Log2Hist::default();
        h.record(0); // bucket 0: le 1 us
        h.record(12); // bucket 3: 8..=15 us
        h.record(1 << 40); // beyond the exposed buckets
        let p = from_log2(&h, US_PER_S, LOG2_US_BUCKETS_EXPOSED);
        assert_eq!(p.buckets.len(), LOG2_US_BUCKETS_EXPOSED);
        assert_eq!(p.buckets[0], (0.000_001, 1));
        assert_eq!(p.buckets[3], (0.000_015, 1));
        assert_eq!(p.buckets.last().unwrap().0, ((1u64 << 27) - 1) as f64 / 1e6);
        assert_eq!(p.count, 3);
        assert_eq!(p.buckets.iter().map(|b| b.1).sum::<u64>(), 2);
        // Midpoints: 0.5 us, 11.5 us, 1.5 * 2^40 us.
        let expected = (0.5 + 11.5 + 1.5 * (1u64 << 40) as f64) / 1e6;
        assert!((p.sum_s - expected).abs() < 1e-6 * expected);
        let ns = from_log2(&h, NS_PER_S, LOG2_NS_BUCKETS_EXPOSED);
        assert_eq!(ns.buckets[3], (0.000_000_015, 1));
    }

    #[test]
    fn metrics_parse_back_with_types_shard_labels_and_values() {
        let poll = ShardPoll {
            reports: vec![Some(report(0)), None, Some(report(2))],
            timeout_ms: 1_000,
        };
        let text = render(Scrape { poll, probes: None });
        let parsed = parse(&text);
        let find = |metric: &str, shard: &str| {
            parsed
                .samples
                .iter()
                .find(|s| s.metric == metric && s.labels.get("shard") == Some(shard))
                .unwrap_or_else(|| panic!("{metric}{{shard={shard}}} missing in\n{text}"))
        };
        assert_eq!(
            find("holdfast_frames_received_total", "2").value,
            Value::Counter(42.0)
        );
        assert_eq!(
            find("holdfast_connections_open", "0").value,
            Value::Gauge(2.0)
        );
        assert_eq!(find("holdfast_shard_up", "1").value, Value::Gauge(0.0));
        assert_eq!(find("holdfast_shard_up", "2").value, Value::Gauge(1.0));
        assert!(
            !text.contains("holdfast_frames_received_total{shard=\"1\"}"),
            "a silent shard has no counters"
        );
        let closed = parsed
            .samples
            .iter()
            .find(|s| {
                s.metric == "holdfast_connections_closed_total"
                    && s.labels.get("reason") == Some("peer_eof")
            })
            .unwrap();
        assert_eq!(closed.value, Value::Counter(1.0));
        let errors = parsed
            .samples
            .iter()
            .find(|s| {
                s.metric == "holdfast_errors_sent_total"
                    && s.labels.get("code") == Some("bad_version")
            })
            .unwrap();
        assert_eq!(errors.value, Value::Counter(1.0));
        match &find("holdfast_reply_latency_seconds", "0").value {
            Value::Histogram(buckets) => {
                let le_100us = buckets.iter().find(|b| b.less_than == 0.000_1).unwrap();
                assert_eq!(le_100us.count, 1.0);
            }
            other => panic!("reply latency is {other:?}"),
        }
        assert!(text.contains("holdfast_probes_attached 0"), "{text}");
        assert!(!text.contains("holdfast_runqueue_latency_seconds"));
    }

    #[test]
    fn probe_snapshot_becomes_histograms_and_counters_with_units_in_names() {
        let mut snapshot = Snapshot::default();
        snapshot.runqueue_latency_us.record(3);
        snapshot.data_ready_to_read_ns.record(5_000);
        snapshot.page_faults = 7;
        snapshot.cpu_events_missed = 3;
        snapshot.rss_bytes.anon = 4096;
        snapshot
            .tcp_state_transitions
            .push(holdfast_ebpf::StateTransition {
                from: "SYN_RECV",
                to: "ESTABLISHED",
                count: 2,
            });
        let text = render(Scrape {
            poll: ShardPoll {
                reports: vec![],
                timeout_ms: 1_000,
            },
            probes: Some(Some(snapshot)),
        });
        let parsed = parse(&text);
        let value = |metric: &str| {
            parsed
                .samples
                .iter()
                .find(|s| s.metric == metric)
                .unwrap_or_else(|| panic!("{metric} missing in\n{text}"))
                .value
                .clone()
        };
        for histogram in [
            "holdfast_runqueue_latency_seconds",
            "holdfast_offcpu_seconds",
            "holdfast_oncpu_seconds",
            "holdfast_tcp_srtt_seconds",
            "holdfast_data_ready_to_read_seconds",
        ] {
            assert!(
                matches!(value(histogram), Value::Histogram(_)),
                "{histogram}"
            );
        }
        assert_eq!(value("holdfast_page_faults_total"), Value::Counter(7.0));
        assert_eq!(
            value("holdfast_sched_events_missed_total"),
            Value::Counter(3.0)
        );
        assert_eq!(value("holdfast_probes_attached"), Value::Gauge(1.0));
        assert!(
            text.contains("holdfast_rss_bytes{kind=\"anon\"} 4096"),
            "{text}"
        );
        assert!(text.contains(
            "holdfast_tcp_state_transitions_total{from=\"SYN_RECV\",to=\"ESTABLISHED\"} 2"
        ));
        assert!(text.contains("# TYPE holdfast_tcp_retransmits_total counter"));
    }
}
