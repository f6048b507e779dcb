//! End to end for `push`: starts `holdfast serve` with ephemeral session and admin ports, runs
//! `holdfast-bench push` briefly with 20 subscribed sessions on a topic and as a broadcast
//! burst, and checks that every publish reached every subscriber exactly once.
//!
//! This test needs the real server: HOLDFAST_BIN, or `holdfast` built into the same target
//! directory (`cargo test --workspace` builds it). It fails, never skips, when the binary is
//! missing or the server has no `POST /publish`.

use serde_json::Value;

mod common;

use common::{one_second_run, run_bench, start_holdfast, Holdfast as Server};
const SESSIONS: u64 = 20;

/// Runs `holdfast-bench push` and returns its JSON summary; fails with its output if it fails.
fn push(server: &Server, extra: &[&str]) -> Value {
    let sessions = SESSIONS.to_string();
    let mut args = vec![
        "push",
        "--target",
        &server.listen,
        "--admin",
        &server.admin,
        "--sessions",
        &sessions,
        "--payload-bytes",
        "64",
    ];
    args.extend(one_second_run("1000"));
    args.extend(extra);
    run_bench(
        &args,
        &["hgrm", "hlog", "json"],
        "; a server without POST /publish fails here",
    )
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn assert_every_delivery(s: &Value, publishes_at_least: u64) {
    let p = &s["push"];
    assert_eq!(u(&s["counters"]["sessions_opened"]), SESSIONS, "{s:#}");
    assert_eq!(u(&p["subscribers"]), SESSIONS, "{s:#}");
    let publishes = u(&p["publisher"]["publishes_ok"]);
    assert!(
        publishes >= publishes_at_least,
        "{publishes} publishes: {s:#}"
    );
    assert_eq!(
        p["publisher"]["publishes_failed"],
        serde_json::json!({}),
        "{s:#}"
    );
    assert_eq!(u(&p["expected_deliveries"]), publishes * SESSIONS, "{s:#}");
    assert_eq!(u(&p["delivered"]), u(&p["expected_deliveries"]), "{s:#}");
    assert_eq!(u(&p["gaps"]), 0, "{s:#}");
    assert_eq!(u(&p["duplicates"]), 0, "{s:#}");
    assert_eq!(u(&p["payload_mismatched"]), 0, "{s:#}");
    assert_eq!(p["clean"], true, "{s:#}");
    assert_eq!(s["errors_total"], 0, "{s:#}");
    // Every publish was stamped inside the window: every delivery is a latency sample.
    assert_eq!(
        u(&s["histograms"]["latency"]["count"]),
        u(&p["delivered"]),
        "{s:#}"
    );
}

#[test]
fn push_delivers_every_publish_to_every_subscriber_once() {
    let server = start_holdfast("push e2e", 2, &[]);
    // Topic: 200 publishes per second for a second.
    let s = push(&server, &["--topic", "bench-e2e", "--rate-per-s", "200"]);
    assert_every_delivery(&s, 100);
    assert_eq!(s["push"]["stream"], "topic bench-e2e");
    // Broadcast burst: 50 broadcasts back to back.
    let s = push(&server, &["--broadcast-burst", "50"]);
    assert_every_delivery(&s, 50);
    assert_eq!(s["push"]["stream"], "broadcast");
    assert!(s["push"]["burst_deliveries_per_s"].as_f64().unwrap() > 0.0);
}
