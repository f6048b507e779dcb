//! End to end for `push`: starts `holdfast serve` with ephemeral session and admin ports, runs
//! `holdfast-bench push` briefly with 20 subscribed sessions on a topic and as a broadcast
//! burst, and checks that every publish reached every subscriber exactly once.
//!
//! This test needs the real server: HOLDFAST_BIN, or `holdfast` built into the same target
//! directory (`cargo test --workspace` builds it). It fails, never skips, when the binary is
//! missing or the server has no `POST /publish`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

mod common;

use common::{run_bench, BENCH};
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(15);
const SESSIONS: u64 = 20;

struct Server {
    child: Child,
    listen: String,
    admin: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn holdfast_bin() -> PathBuf {
    common::holdfast_bin().unwrap_or_else(|| {
        panic!(
            "push e2e needs the holdfast binary: cargo build -p holdfast-server (or set \
             HOLDFAST_BIN); looked beside {BENCH}"
        )
    })
}

/// Starts `holdfast serve` on port 0 for sessions and admin; reads both real addresses from the
/// start-up lines `holdfast listening on ADDR shards=N` and `holdfast admin on ADDR`.
fn start_holdfast() -> Server {
    let bin = holdfast_bin();
    let mut child = Command::new(&bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--shards",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keeps reading after the test has its two lines, so the server never writes to a
        // closed pipe.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = tx.send(line);
        }
    });
    let (mut listen, mut admin) = (None, None);
    while listen.is_none() || admin.is_none() {
        let line = rx.recv_timeout(SERVER_START_TIMEOUT).unwrap_or_else(|_| {
            panic!(
                "{} printed no `holdfast listening on` and `holdfast admin on` lines within {:?} \
                 (listen {listen:?}, admin {admin:?})",
                bin.display(),
                SERVER_START_TIMEOUT
            )
        });
        if let Some(rest) = line.strip_prefix("holdfast listening on ") {
            listen = rest.split_whitespace().next().map(str::to_owned);
        } else if let Some(rest) = line.strip_prefix("holdfast admin on ") {
            admin = rest.split_whitespace().next().map(str::to_owned);
        }
    }
    Server {
        child,
        listen: listen.unwrap(),
        admin: admin.unwrap(),
    }
}

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
        "--warmup-s",
        "0",
        "--duration-s",
        "1",
        "--drain-ms",
        "1000",
        "--setup-timeout-s",
        "20",
    ];
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
    let server = start_holdfast();
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
