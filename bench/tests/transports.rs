//! `--transport tcp|tls|ws|wss` end to end, in seconds: echo and push through each transport
//! against the real `holdfast` binary (its plain, TLS and WebSocket listeners; wss on the TLS
//! listener), echo against the tokio-rustls and tokio-tungstenite baselines, and a TLS client
//! that does not trust the server's certificate opens no session.
//!
//! Needs the real server: HOLDFAST_BIN, or `holdfast` built into the same target directory. It
//! fails, never skips, when the binary is missing.

use std::path::Path;

use holdfast_bench::compare::{write_self_signed, TlsFiles};
use serde_json::Value;

mod common;

use common::{one_second_run, run_bench, spawn_holdfast, start_baseline, Proc};

const SESSIONS: u64 = 10;
const TRANSPORTS: [&str; 4] = ["tcp", "tls", "ws", "wss"];

/// A `holdfast serve` with every listener on port 0, their addresses read from its start-up
/// lines.
struct Holdfast {
    _child: Proc,
    tcp: String,
    tls: String,
    ws: String,
    admin: String,
}

impl Holdfast {
    fn target(&self, transport: &str) -> &str {
        match transport {
            "tcp" => &self.tcp,
            "tls" | "wss" => &self.tls,
            "ws" => &self.ws,
            other => panic!("no transport {other}"),
        }
    }
}

fn start_holdfast(dir: &Path, tls: &TlsFiles) -> Holdfast {
    let config = dir.join("holdfast.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshards = 1\n\
             ws_listen = \"127.0.0.1:0\"\nws_path = \"/ws\"\ntls_listen = \"127.0.0.1:0\"\n\
             tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            tls.cert.display(),
            tls.key.display()
        ),
    )
    .unwrap();
    let (child, [tcp, tls, ws, admin]) = spawn_holdfast(
        "transports e2e",
        &["serve", "--config", config.to_str().unwrap()],
        &[],
        [
            "holdfast listening on ",
            "holdfast tls on ",
            "holdfast ws on ",
            "holdfast admin on ",
        ],
    );
    Holdfast {
        _child: Proc(child),
        tcp,
        tls,
        ws,
        admin,
    }
}

fn count(s: &Value, key: &str) -> u64 {
    s["counters"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("counter {key} missing: {s:#}"))
}

/// `holdfast-bench echo` over `transport` to `target`: every session opens, replies are checked.
fn echo(transport: &str, target: &str, tls: &TlsFiles, extra: &[&str]) -> Value {
    let sessions = SESSIONS.to_string();
    let ca = tls.cert.to_str().unwrap();
    let mut args = vec![
        "echo",
        "--transport",
        transport,
        "--target",
        target,
        "--tls-ca",
        ca,
        "--sessions",
        &sessions,
        "--inflight",
        "2",
    ];
    args.extend(one_second_run("500"));
    args.extend(extra);
    run_bench(
        &args,
        &["hgrm", "json"],
        &format!(" (transport {transport})"),
    )
}

fn assert_echo_clean(s: &Value, what: &str) {
    assert_eq!(count(s, "sessions_opened"), SESSIONS, "{what}: {s:#}");
    assert_eq!(s["errors_total"], 0, "{what}: {s:#}");
    assert_eq!(s["requests_unaccounted"], 0, "{what}: {s:#}");
    assert_eq!(count(s, "replies_mismatched"), 0, "{what}: {s:#}");
    let ok = count(s, "replies_ok");
    assert!(ok > 100, "{what}: only {ok} replies: {s:#}");
}

#[test]
fn echo_reaches_holdfast_over_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let tls = write_self_signed(dir.path()).unwrap();
    let server = start_holdfast(dir.path(), &tls);
    for transport in TRANSPORTS {
        let s = echo(transport, server.target(transport), &tls, &[]);
        assert_echo_clean(&s, &format!("holdfast over {transport}"));
    }
}

#[test]
fn push_reaches_every_subscriber_over_every_transport_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let tls = write_self_signed(dir.path()).unwrap();
    let server = start_holdfast(dir.path(), &tls);
    let sessions = SESSIONS.to_string();
    for transport in TRANSPORTS {
        let topic = format!("bench-{transport}");
        let mut args = vec![
            "push",
            "--transport",
            transport,
            "--target",
            server.target(transport),
            "--tls-ca",
            tls.cert.to_str().unwrap(),
            "--admin",
            &server.admin,
            "--sessions",
            &sessions,
            "--topic",
            &topic,
            "--rate-per-s",
            "100",
            "--payload-bytes",
            "64",
        ];
        args.extend(one_second_run("1000"));
        let s = run_bench(&args, &["json"], &format!(" (push over {transport})"));
        let p = &s["push"];
        let publishes = p["publisher"]["publishes_ok"].as_u64().unwrap();
        assert!(publishes >= 50, "{transport}: {publishes} publishes: {s:#}");
        assert_eq!(p["subscribers"], SESSIONS, "{transport}: {s:#}");
        assert_eq!(p["delivered"], publishes * SESSIONS, "{transport}: {s:#}");
        assert_eq!(p["gaps"], 0, "{transport}: {s:#}");
        assert_eq!(p["duplicates"], 0, "{transport}: {s:#}");
        assert_eq!(s["errors_total"], 0, "{transport}: {s:#}");
    }
}

#[test]
fn echo_reaches_the_tokio_rustls_and_tokio_tungstenite_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let tls = write_self_signed(dir.path()).unwrap();
    let (cert, key) = (tls.cert.to_str().unwrap(), tls.key.to_str().unwrap());
    let with_tls = ["--cert", cert, "--key", key];
    for (transport, baseline, extra) in [
        ("tls", "tokio-rustls", &with_tls[..]),
        ("ws", "tokio-tungstenite", &[][..]),
        ("wss", "tokio-tungstenite", &with_tls[..]),
    ] {
        let server = start_baseline(baseline, extra);
        let s = echo(transport, &server.addr.to_string(), &tls, &[]);
        assert_echo_clean(&s, &format!("{baseline} over {transport}"));
    }
}

/// Refused handshakes (the client's bad_certificate alert) close only their own connections:
/// trusting clients right after them open every session, several rounds over.
#[test]
fn untrusting_clients_open_no_session_and_trusting_clients_after_them_open_all() {
    let dir = tempfile::tempdir().unwrap();
    let tls = write_self_signed(dir.path()).unwrap();
    let server = start_holdfast(dir.path(), &tls);
    // Another self-signed certificate: the server's chain does not lead to it.
    let stranger = write_self_signed(&dir.path().join("stranger")).unwrap();
    for round in 0..REFUSED_ROUNDS {
        refused_then_trusted(&server, &tls, &stranger, round);
    }
}

const REFUSED_ROUNDS: u32 = 3;

fn refused_then_trusted(server: &Holdfast, tls: &TlsFiles, stranger: &TlsFiles, round: u32) {
    for transport in ["tls", "wss"] {
        let s = echo(transport, server.target(transport), tls, &[]);
        assert_echo_clean(&s, &format!("round {round}: trusting {transport} client"));
        let s = echo(transport, server.target(transport), stranger, &[]);
        assert_eq!(count(&s, "sessions_opened"), 0, "{transport}: {s:#}");
        let failed: u64 = s["counters"]["connect_failed"]
            .as_object()
            .expect("connect_failed by cause")
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(failed, SESSIONS, "{transport}: {s:#}");
    }
}
