//! End to end: each workload runs for about a second with tens of sessions against a baseline
//! server that the test starts on loopback, and against `holdfast serve` (set HOLDFAST_BIN, or
//! it is looked for next to holdfast-bench; without it the test fails, never skips). The JSON summary must
//! show counts that add up.

use std::process::{Command, Stdio};

use serde_json::Value;

mod common;

use common::{
    free_fixed_ports, one_second_run, require_holdfast_bin, run_bench, start_baseline,
    start_listening, Listening as Server, BENCH,
};

/// Runs `holdfast-bench <workload> <args>` and returns its JSON summary.
fn bench(workload: &str, server: &Server, extra: &[&str]) -> Value {
    let target = server.addr.to_string();
    let mut args = vec![workload, "--target", &target];
    args.extend(one_second_run("500"));
    args.extend(extra);
    run_bench(&args, &["hgrm", "hlog"], "")
}

fn count(summary: &Value, key: &str) -> u64 {
    summary["counters"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("counter {key} missing"))
}

fn assert_clean(summary: &Value, sessions: u64) {
    assert_eq!(count(summary, "sessions_opened"), sessions, "{summary:#}");
    assert_eq!(summary["errors_total"], 0, "{summary:#}");
    assert_eq!(summary["requests_unaccounted"], 0, "{summary:#}");
    assert_eq!(count(summary, "replies_mismatched"), 0);
}

fn check_echo(server: &Server, extra: &[&str]) {
    let mut args = vec!["--sessions", "20", "--inflight", "2"];
    args.extend(extra);
    let s = bench("echo", server, &args);
    assert_clean(&s, 20);
    let (sent, ok) = (count(&s, "requests_sent"), count(&s, "replies_ok"));
    assert!(ok > 100, "only {ok} replies");
    assert_eq!(
        sent,
        ok + count(&s, "requests_inflight_at_end") + count(&s, "requests_lost")
    );
    assert_eq!(
        s["histograms"]["latency"]["count"].as_u64().unwrap(),
        count(&s, "replies_measured")
    );
}

fn check_rate(server: &Server, workload: &str) {
    let s = bench(
        workload,
        server,
        &[
            "--sessions",
            "10",
            "--rate-per-s",
            "2000",
            "--method",
            "echo",
        ],
    );
    assert_clean(&s, 10);
    let ok = count(&s, "replies_ok");
    // 2,000 per second for one second: every one due is sent (or counted unsent) and answered.
    let scheduled = count(&s, "requests_sent") + count(&s, "requests_unsent_at_end");
    assert!(
        (1_990..=2_010).contains(&scheduled),
        "{scheduled} requests scheduled for 2,000"
    );
    assert!(
        ok + 10 >= scheduled - count(&s, "requests_unsent_at_end"),
        "{ok} replies"
    );
    assert!(s["histograms"]["send_lag"]["count"].as_u64().unwrap() > 0);
}

fn check_connect(server: &Server) {
    let s = bench(
        "connect",
        server,
        &[
            "--sessions",
            "50",
            "--connect-rate-per-s",
            "500",
            "--sessions-per-source-addr",
            "20",
        ],
    );
    assert_clean(&s, 50);
    assert_eq!(count(&s, "sessions_open"), 50);
    assert_eq!(s["histograms"]["setup"]["count"], 50);
    assert_eq!(s["main_histogram"], "setup");
}

fn check_storm(server: &Server) {
    let s = bench(
        "storm",
        server,
        &[
            "--sessions",
            "30",
            "--hold-s",
            "1",
            "--storm-mode",
            "client-reset",
        ],
    );
    assert_eq!(count(&s, "storm_dropped"), 30, "{s:#}");
    assert_eq!(count(&s, "storm_back"), 30, "{s:#}");
    assert!(s["counters"]["storm_all_back_ms"].as_u64().is_some());
    assert_eq!(s["histograms"]["reconnect"]["count"], 30);
    assert_eq!(count(&s, "sessions_opened"), 60);
}

#[test]
fn every_workload_against_the_tokio_baseline_adds_up() {
    let server = start_baseline("tokio", &[]);
    check_echo(&server, &[]);
    check_echo(&server, &["--raw"]);
    check_echo(
        &server,
        &["--workers", "2", "--sessions-per-source-addr", "7"],
    );
    check_rate(&server, "rate");
    check_rate(&server, "request");
    check_connect(&server);
    check_storm(&server);
}

#[test]
fn echo_against_the_glommio_baseline_adds_up() {
    let server = start_baseline("glommio", &[]);
    check_echo(&server, &[]);
    check_rate(&server, "request");
}

#[test]
fn plot_draws_svg_and_png_from_a_run() {
    let server = start_baseline("tokio", &[]);
    let out = tempfile::tempdir().unwrap();
    let target = server.addr.to_string();
    let dir = out.path().to_str().unwrap();
    let status = Command::new(BENCH)
        .args([
            "echo",
            "--target",
            &target,
            "--sessions",
            "5",
            "--warmup-s",
            "0",
            "--duration-s",
            "2",
            "--out",
            dir,
            "--label",
            "p",
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let plot = Command::new(BENCH)
        .args([
            "plot",
            &format!("{dir}/p.hgrm"),
            &format!("{dir}/p.hlog"),
            "--out",
            &format!("{dir}/chart"),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&plot.stderr);
    assert!(
        !stderr.contains("no font found"),
        "plot needs a TrueType font: run ./run.sh deps (Debian fonts-dejavu-core): {stderr}"
    );
    assert!(plot.status.success(), "{stderr}");
    for name in [
        "chart-percentiles.svg",
        "chart-percentiles.png",
        "chart-over-time.svg",
        "chart-over-time.png",
    ] {
        let bytes = std::fs::read(out.path().join(name)).unwrap();
        assert!(bytes.len() > 1_000, "{name} has {} bytes", bytes.len());
    }
}

#[test]
fn every_workload_against_holdfast_serve_adds_up() {
    let bin = require_holdfast_bin("e2e against holdfast serve");
    let server = start_listening(&bin, &["serve", "--shards", "1"]);
    check_echo(&server, &[]);
    check_rate(&server, "rate");
    check_rate(&server, "request");
    check_connect(&server);
    check_storm(&server);
}

#[test]
fn compare_prints_a_ratio_table_for_the_baselines() {
    let out = tempfile::tempdir().unwrap();
    // compare starts each server on the port after the last: two of them here.
    let port_base = (free_fixed_ports(2) - 1).to_string();
    let output = Command::new(BENCH)
        .args([
            "compare",
            "--targets",
            "glommio,tokio",
            "--connections",
            "20",
            "--runs",
            "1",
            "--warmup-s",
            "0",
        ])
        .args([
            "--duration-s",
            "1",
            "--port-base",
            &port_base,
            "--out",
            out.path().to_str().unwrap(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("| glommio | 20 |") && stdout.contains("| tokio | 20 |"),
        "{stdout}"
    );
    let tokio_row = stdout
        .lines()
        .find(|l| l.starts_with("| tokio | 20 |"))
        .unwrap();
    assert!(
        tokio_row.contains('x'),
        "tokio row has no ratio against glommio: {tokio_row}"
    );
    assert!(!stdout.contains("WARNING"), "{stdout}");
    assert!(out.path().join("compare.json").exists());
}
