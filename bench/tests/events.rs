//! End to end for `events`: starts `holdfast serve` (1 shard, ephemeral session and admin
//! ports), runs `holdfast-bench events` with a few sessions, closed loop with Acks and then
//! streaming, and checks that every Event the client sent is acked or refused, and counted by
//! the server's `/metrics` as accepted or dropped, with events per server CPU-second reported.
//!
//! This test needs the real server: HOLDFAST_BIN, or `holdfast` built into the same target
//! directory (`cargo test --workspace` builds it). It fails, never skips, without it.

use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{run_bench, start_holdfast, Holdfast};

const SESSIONS: u64 = 4;
/// How long the server may take to count the last streamed events (they sit in socket buffers
/// when the client stops).
const SERVER_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Runs `holdfast-bench events` against `server` for `duration_s` and returns its summary.
fn events(server: &Holdfast, duration_s: &str, extra: &[&str]) -> Value {
    let sessions = SESSIONS.to_string();
    let pid = server.child.id().to_string();
    let mut args = vec![
        "events",
        "--target",
        &server.listen,
        "--admin",
        &server.admin,
        "--server-pid",
        &pid,
        "--sessions",
        &sessions,
        "--warmup-s",
        "0",
        "--duration-s",
        duration_s,
        "--setup-timeout-s",
        "20",
    ];
    args.extend(extra);
    run_bench(
        &args,
        &["hgrm", "hlog", "json"],
        "; a server without events fails here",
    )
}

/// What every run shows: sessions open, no errors besides refusals, the server's counts taken
/// by the sampler and set against its CPU.
fn assert_measured(s: &Value) -> &Value {
    let e = &s["events"];
    assert_eq!(u(&s["counters"]["sessions_opened"]), SESSIONS, "{s:#}");
    assert_eq!(e["accepted_source"], "server /metrics", "{s:#}");
    assert_eq!(e["sample_errors"], serde_json::json!([]), "{s:#}");
    assert!(u(&e["sent"]) > 1_000, "{s:#}");
    assert!(u(&e["server_window"]["accepted"]) > 0, "{s:#}");
    assert!(e["accepted_per_s"].as_f64().unwrap() > 0.0, "{s:#}");
    assert!(
        e["events_per_server_cpu_s"].as_f64().unwrap() > 0.0,
        "{s:#}"
    );
    assert!(e["server_threads_cpu_s"].as_object().is_some(), "{s:#}");
    e
}

#[test]
fn every_event_sent_is_acked_or_refused_and_counted_by_the_server() {
    let server = start_holdfast("events e2e", 1, &[]);

    // Closed loop: 8 Events awaiting their Ack per session, for 2 seconds.
    let s = events(
        &server,
        "2",
        &["--ack", "--inflight-events", "8", "--drain-ms", "500"],
    );
    let e = assert_measured(&s);
    let c = &s["counters"];
    assert_eq!(e["mode"], "ack");
    assert_eq!(s["requests_unaccounted"], 0, "{s:#}");
    assert_eq!(u(&c["requests_lost"]), 0, "{s:#}");
    assert_eq!(u(&c["requests_inflight_at_end"]), 0, "{s:#}");
    let (sent, acked) = (u(&e["sent"]), u(&e["acked"]));
    let refused: u64 = e["refused_seen_by_client"]
        .as_object()
        .unwrap()
        .values()
        .map(u)
        .sum();
    assert!(acked > 1_000, "only {acked} Acks: {s:#}");
    assert_eq!(sent, acked + refused, "{s:#}");
    // An Ack means accepted, an Error dropped: the server counted exactly what the client saw.
    assert_eq!(u(&e["server_run"]["accepted"]), acked, "{s:#}");
    assert_eq!(u(&e["server_run"]["dropped"]), refused, "{s:#}");
    assert_eq!(e["server_unaccounted"], 0, "{s:#}");
    assert_eq!(
        u(&e["ack_latency"]["count"]),
        u(&e["acked_in_window"]),
        "{s:#}"
    );
    assert!(u(&e["ack_latency"]["p50_us"]) > 0, "{s:#}");

    // Streaming, no Acks: every Event written is, once the server has read its socket buffers,
    // accepted or dropped.
    let before = holdfast_bench::events::preflight(server.admin.parse().unwrap()).unwrap();
    let s = events(&server, "1", &["--inflight-events", "16"]);
    let e = assert_measured(&s);
    assert_eq!(e["mode"], "stream");
    assert_eq!(u(&e["acked"]), 0);
    assert_eq!(u(&s["counters"]["requests_sent"]), 0, "{s:#}");
    let sent = u(&e["sent"]);
    let started = Instant::now();
    let counted = loop {
        let now = holdfast_bench::events::preflight(server.admin.parse().unwrap()).unwrap();
        let counted = (now.accepted + now.dropped) - (before.accepted + before.dropped);
        if counted >= sent || started.elapsed() > SERVER_CATCH_UP_TIMEOUT {
            break counted;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        counted, sent,
        "server counted {counted} of {sent} streamed events: {s:#}"
    );
}
