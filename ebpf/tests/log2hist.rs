//! Log2Hist arithmetic and the text/JSON renderings (no eBPF needed).

use holdfast_ebpf::{Log2Hist, Snapshot, StateTransition, ThreadStats};

fn hist(values: &[u64]) -> Log2Hist {
    let mut h = Log2Hist::default();
    for v in values {
        h.record(*v);
    }
    h
}

#[test]
fn buckets_are_powers_of_two_with_zero_and_one_in_bucket_zero() {
    assert_eq!(Log2Hist::bucket_of(0), 0);
    assert_eq!(Log2Hist::bucket_of(1), 0);
    assert_eq!(Log2Hist::bucket_of(2), 1);
    assert_eq!(Log2Hist::bucket_of(3), 1);
    assert_eq!(Log2Hist::bucket_of(1023), 9);
    assert_eq!(Log2Hist::bucket_of(1024), 10);
    assert_eq!(Log2Hist::bucket_of(u64::MAX), 63);
    for i in 0..64 {
        assert_eq!(Log2Hist::bucket_of(Log2Hist::bucket_lower_bound(i)), i);
        assert_eq!(Log2Hist::bucket_of(Log2Hist::bucket_upper_bound(i)), i);
    }
    assert_eq!(Log2Hist::bucket_upper_bound(0), 1);
    assert_eq!(Log2Hist::bucket_upper_bound(3), 15);
    assert_eq!(Log2Hist::bucket_upper_bound(63), u64::MAX);
}

#[test]
fn percentile_is_the_upper_bound_of_the_bucket_holding_that_rank() {
    // 90 samples in 8..=15, 9 in 1024..=2047, 1 in 65536..=131071.
    let mut values = vec![10u64; 90];
    values.extend([1500u64; 9]);
    values.push(100_000);
    let h = hist(&values);
    assert_eq!(h.count(), 100);
    assert_eq!(h.percentile(0.0), 15, "smallest sample");
    assert_eq!(h.percentile(0.5), 15);
    assert_eq!(h.percentile(0.90), 15, "rank 90 is the last small one");
    assert_eq!(h.percentile(0.91), 2047);
    assert_eq!(h.percentile(0.99), 2047);
    assert_eq!(h.percentile(1.0), 131_071);
    assert_eq!(Log2Hist::default().percentile(0.99), 0, "empty");
}

#[test]
#[should_panic(expected = "not in 0.0..=1.0")]
fn percentile_takes_a_fraction_not_a_percent() {
    hist(&[1]).percentile(99.0);
}

#[test]
fn delta_subtracts_bucket_by_bucket() {
    let earlier = hist(&[10, 10, 1500]);
    let later = hist(&[10, 10, 1500, 10, 3]);
    let d = later.delta(&earlier);
    assert_eq!(d.count(), 2);
    assert_eq!(d.buckets[3], 1);
    assert_eq!(d.buckets[1], 1);
}

fn sample_snapshot() -> Snapshot {
    Snapshot {
        pid: 4242,
        port: 9000,
        runqueue_latency_us: hist(&[0, 1, 2, 3, 3, 5, 9, 9, 9, 9]),
        threads: vec![ThreadStats {
            tid: 4243,
            comm: "shard-0".into(),
            runqueue_latency_us: hist(&[0, 1, 2, 3, 3, 5, 9, 9, 9, 9]),
            oncpu_us: hist(&[40, 50]),
            page_faults: 7,
            ..ThreadStats::default()
        }],
        page_faults: 7,
        tcp_state_transitions: vec![StateTransition {
            from: "SYN_RECV",
            to: "ESTABLISHED",
            count: 3,
        }],
        ..Snapshot::default()
    }
}

#[test]
fn render_text_draws_bcc_style_buckets_bars_and_a_summary_line() {
    let text = sample_snapshot().render_text();
    let expected = "\
run-queue latency: count 10, p50 <= 3 usecs, p99 <= 15 usecs, max <= 15 usecs
           usecs           : count    distribution
           0 -> 1          : 2        |********************                    |
           2 -> 3          : 3        |******************************          |
           4 -> 7          : 1        |**********                              |
           8 -> 15         : 4        |****************************************|
";
    assert!(text.contains(expected), "got:\n{text}");
    assert!(text.starts_with("holdfast probes: pid 4242, port 9000\n"));
    assert!(text.contains("off-CPU time: no samples\n"));
    assert!(text.contains("    4243  shard-0                 2            3/15               -           63/63        7\n"), "got:\n{text}");
    assert!(text.contains("state transitions: SYN_RECV->ESTABLISHED 3\n"));
    assert!(text.contains("page faults (user): 7\n"));
}

#[test]
fn json_carries_buckets_and_derived_summaries_under_unit_named_keys() {
    let json = sample_snapshot().to_json();
    let runq = &json["runqueue_latency_us"];
    assert_eq!(runq["count"], 10);
    assert_eq!(runq["p50"], 3);
    assert_eq!(runq["p99"], 15);
    assert_eq!(runq["buckets"].as_array().unwrap().len(), 64);
    assert_eq!(runq["buckets"][3], 4);
    assert_eq!(json["threads"][0]["comm"], "shard-0");
    assert_eq!(json["tcp_state_transitions"][0]["to"], "ESTABLISHED");
    assert!(json["data_ready_to_read_ns"].is_object());
    assert!(json["rss_bytes"]["anon"].is_u64());
}

#[test]
fn snapshot_delta_keeps_gauges_and_drops_threads_that_did_not_run() {
    let earlier = sample_snapshot();
    let mut later = sample_snapshot();
    later.page_faults += 5;
    later.threads[0].page_faults += 5;
    later.rss_bytes.anon = 1 << 20;
    later.tcp_state_transitions[0].count += 1;
    later.threads.push(ThreadStats {
        tid: 4250,
        comm: "idle".into(),
        ..ThreadStats::default()
    });
    let d = later.delta(&earlier);
    assert_eq!(d.page_faults, 5);
    assert_eq!(
        d.threads.len(),
        1,
        "the idle thread has no samples: {:?}",
        d.threads
    );
    assert_eq!(d.threads[0].page_faults, 5);
    assert_eq!(d.threads[0].runqueue_latency_us.count(), 0);
    assert_eq!(d.rss_bytes.anon, 1 << 20, "a gauge keeps its later value");
    assert_eq!(d.state_transitions("SYN_RECV", "ESTABLISHED"), 1);
}
