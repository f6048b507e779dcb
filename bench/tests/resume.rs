//! `storm --storm-mode goodbye --resume` split over worker processes: a drain and restart of a
//! real `holdfast serve`, sessions held by two workers, every accepted push counted.

// Only the binaries' paths are used here.
#[allow(dead_code)]
mod common;

use std::process::{Command, Stdio};

use common::{require_holdfast_bin, BENCH};
use serde_json::Value;

/// A port free right now on 127.0.0.1 (the server is restarted on the same addresses, so it
/// cannot take port 0).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn resume_storm_over_two_workers_loses_nothing_and_the_workers_add_up() {
    let bin = require_holdfast_bin("resume e2e");
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{listen}\"\nadmin_listen = \"{admin}\"\nshards = 2\n\
             reconnect_after_ms = 100\nreconnect_jitter_ms = 200\nhistory_max_messages = 4096\n"
        ),
    )
    .unwrap();
    let (sessions, topics) = (100u64, 3u64);
    let output = Command::new(BENCH)
        .args(["storm", "--storm-mode", "goodbye", "--resume"])
        .args([
            "--sessions",
            "100",
            "--workers",
            "2",
            "--resume-topics",
            "3",
        ])
        .args(["--rate-per-s", "20", "--hold-s", "1", "--duration-s", "1"])
        .args(["--drain-ms", "500", "--reconnect-max-delay-ms", "1000"])
        .args(["--back-timeout-s", "10"])
        .args(["--target", &listen, "--admin", &admin])
        .arg("--server-bin")
        .arg(&bin)
        .arg("--server-config")
        .arg(&config)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{:?}\n{stdout}", output.status);
    let report: Value = serde_json::from_str(&stdout).unwrap();

    assert_eq!(u(&report, "workers"), 2);
    assert_eq!(u(&report, "lost"), 0, "{report:#}");
    assert_eq!(u(&report, "unexpected"), 0);
    assert_eq!(
        u(&report, "duplicated_same_seq"),
        0,
        "the server never sends one push twice to a session: {report:#}"
    );
    assert!(u(&report, "duplicated_same_seq") <= u(&report, "duplicated"));
    assert_eq!(u(&report, "sessions_resumed"), sessions);
    assert!(report["all_sessions_back_ms"].is_u64(), "{report:#}");
    // Publishes spanned the restart: some before the SIGTERM, some after.
    let published = u(&report, "published_accepted");
    assert!(published >= 20, "{published} publishes");
    // Payloads are dealt round-robin over the topics, sessions likewise: every one of the 100
    // sessions expects each payload of its topic once.
    let per_topic = |t: u64| published / topics + u64::from(t < published % topics);
    let sessions_of = |t: u64| sessions / topics + u64::from(t < sessions % topics);
    let expected: u64 = (0..topics).map(|t| per_topic(t) * sessions_of(t)).sum();
    assert_eq!(u(&report, "expected_deliveries"), expected);
    assert_eq!(u(&report, "delivered"), expected);

    let workers = report["per_worker"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    for key in [
        "sessions",
        "expected_deliveries",
        "delivered",
        "duplicated",
        "lost",
        "sessions_resumed",
    ] {
        let sum: u64 = workers.iter().map(|w| u(w, key)).sum();
        let total = if key == "sessions" {
            sessions
        } else {
            u(&report, key)
        };
        assert_eq!(sum, total, "per-worker {key} against the total");
    }
    assert!(workers.iter().all(|w| u(w, "sessions") == 50));
}
