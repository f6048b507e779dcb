//! The WebSocket listener (`ws_listen`) on the real binary: the conformance set run by
//! Python's `websockets` (ws_conformance.py), the JS client page in headless Chromium
//! (ws_browser.py), and a few checks with a hand-made client here (side by side with the
//! plain listener, drain, a silent connection that never upgrades).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_protocol::{Kind, HEADER_BYTES};

use crate::support::{Client, Server};

/// Debian's python3 (with its python3-websockets, see run.sh).
const PYTHON: &str = "/usr/bin/python3";
const MAX_FRAME_BYTES: u32 = 131_072;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ws_server(extra: &str) -> Server {
    let shards = if extra.contains("shards =") {
        ""
    } else {
        "shards = 2\n"
    };
    Server::start(&format!(
        "{shards}ws_listen = \"127.0.0.1:0\"\nws_path = \"/ws\"\n\
         max_frame_bytes = {MAX_FRAME_BYTES}\nmax_outbound_bytes = 1048576\n\
         heartbeat_min_interval_ms = 100\ntimer_tick_ms = 10\n{extra}"
    ))
}

/// Runs a Python script with a deadline; returns its stdout, failing the test on a non-zero
/// exit (with the output).
fn run_python(script: &str, args: &[String], limit: Duration) -> String {
    let mut child = Command::new(PYTHON)
        .arg(repo_root().join("tests/e2e").join(script))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{PYTHON} runs (Debian python3, see run.sh): {e}"));
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "{script} took over {limit:?}:\n{}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn websocket_listener_passes_the_conformance_set() {
    let server = ws_server(
        // Heartbeat Pings after 300 ms of silence (the set answers them, except in its
        // heartbeat case).
        "ws_allowed_origins = [\"https://app.example\"]\nheartbeat_interval_ms = 300\n\
         heartbeat_timeout_ms = 5000\n",
    );
    let ws = server.ws.expect("the server prints its WebSocket address");
    let admin = server.admin.expect("admin listener");
    let stdout = run_python(
        "ws_conformance.py",
        &[
            format!("ws://{ws}/ws"),
            admin.to_string(),
            MAX_FRAME_BYTES.to_string(),
        ],
        Duration::from_secs(120),
    );
    let script = std::fs::read_to_string(repo_root().join("tests/e2e/ws_conformance.py")).unwrap();
    let cases = script.matches("\n@case\n").count();
    assert!(cases >= 25, "the set has {cases} cases");
    assert!(
        stdout.contains(&format!("\n{cases} passed, 0 failed")),
        "{stdout}"
    );
}

#[test]
fn browser_page_shows_pushes_in_order() {
    // The page comes from the admin listener (GET /), on a port known only once it runs: any
    // origin is allowed here (the allow-list is checked by the conformance set).
    let server = ws_server("");
    let ws = server.ws.unwrap();
    let admin = server.admin.unwrap();
    // The test's artifact: <target dir>/tmp/browser/holdfast-page.png.
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser/holdfast-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let stdout = run_python(
        "ws_browser.py",
        &[
            format!("ws://{ws}/ws"),
            admin.to_string(),
            screenshot.display().to_string(),
        ],
        Duration::from_secs(90),
    );
    assert!(stdout.contains("1 passed, 0 failed"), "{stdout}");
    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000);
}

#[test]
fn admin_listener_serves_the_page_and_its_module() {
    let server = ws_server("");
    let admin = server.admin.unwrap();
    let get = |path: &str| {
        let mut stream = TcpStream::connect(admin).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        crate::support::read_http_response(&mut stream).expect("an answer")
    };
    let page = get("/?server=ws://127.0.0.1:1/ws&topic=news");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let on_disk = std::fs::read_to_string(repo_root().join("clients/js/index.html")).unwrap();
    assert_eq!(page.body, on_disk, "the page as in clients/js");
    let script = get("/holdfast.js");
    assert_eq!(script.status, 200);
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8"),
        "browsers load ES modules only with a JavaScript type"
    );
    assert!(script.body.contains("export class HoldfastClient"));
}

/// A hand-made WebSocket client: enough to check what the shard does around the transport.
struct WsClient {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl WsClient {
    fn connect(addr: std::net::SocketAddr) -> WsClient {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
                  Sec-WebSocket-Protocol: holdfast.v1\r\n\r\n",
            )
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        WsClient {
            stream,
            rest: Vec::new(),
        }
    }

    fn send_binary(&mut self, payload: &[u8]) {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut frame = vec![0x82];
        match payload.len() {
            n @ 0..=125 => frame.push(0x80 | n as u8),
            n => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).unwrap();
    }

    /// The next server frame: (opcode, payload).
    fn frame(&mut self) -> (u8, Vec<u8>) {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).unwrap();
        assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
        let len = match head[1] & 0x7F {
            126 => {
                let mut b = [0u8; 2];
                self.stream.read_exact(&mut b).unwrap();
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                self.stream.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).unwrap();
        (head[0] & 0x0F, payload)
    }

    /// The next Holdfast frame from binary messages: (kind, id, whole frame).
    fn holdfast(&mut self) -> (Kind, u64, Vec<u8>) {
        loop {
            if self.rest.len() >= HEADER_BYTES {
                let len = u32::from_le_bytes(self.rest[..4].try_into().unwrap()) as usize;
                if self.rest.len() >= len {
                    let frame: Vec<u8> = self.rest.drain(..len).collect();
                    let kind = Kind::from_u8(frame[5]).unwrap();
                    let id = u64::from_le_bytes(frame[8..16].try_into().unwrap());
                    return (kind, id, frame);
                }
            }
            let (opcode, payload) = self.frame();
            assert_eq!(opcode, 0x2, "Holdfast frames come in binary messages");
            self.rest.extend_from_slice(&payload);
        }
    }
}

fn holdfast_frame(kind: Kind, id: u64, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&((HEADER_BYTES + payload.len()) as u32).to_le_bytes());
    frame.extend_from_slice(&[1, kind as u8, 0, 0]);
    frame.extend_from_slice(&id.to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[test]
fn plain_and_websocket_sessions_run_side_by_side_on_every_shard() {
    let server = ws_server("");
    let ws_addr = server.ws.unwrap();
    let mut plain = server.connect();
    plain.hello();
    // The kernel spreads connections over the shards' listeners by a hash of their addresses:
    // eight land on one shard once in 128 runs, so open sessions (at least eight, at most
    // 64) until both shards have some.
    let on_both_shards = |sessions: &[u64]| {
        let shards: std::collections::BTreeSet<u64> = sessions.iter().map(|id| id >> 56).collect();
        shards.len() == 2
    };
    let mut sessions = Vec::new();
    for i in 0..64u64 {
        if sessions.len() >= 8 && on_both_shards(&sessions) {
            break;
        }
        let mut ws = WsClient::connect(ws_addr);
        ws.send_binary(&holdfast_frame(Kind::Hello, 1, &[]));
        let (kind, id, welcome) = ws.holdfast();
        assert_eq!((kind, id), (Kind::Welcome, 1));
        let session_id = u64::from_le_bytes(welcome[16..24].try_into().unwrap());
        sessions.push(session_id);
        // Two Echo frames in one message, a third split over two messages.
        let a = holdfast_frame(Kind::Echo, 10 + i, b"first");
        let b = holdfast_frame(Kind::Echo, 20 + i, b"second");
        let c = holdfast_frame(Kind::Echo, 30 + i, &[7u8; 300]);
        ws.send_binary(&[a.clone(), b.clone()].concat());
        ws.send_binary(&c[..100]);
        ws.send_binary(&c[100..]);
        assert_eq!(ws.holdfast().2, a);
        assert_eq!(ws.holdfast().2, b);
        assert_eq!(ws.holdfast().2, c);
    }
    assert!(
        on_both_shards(&sessions),
        "WebSocket sessions on both shards: {sessions:x?}"
    );
    plain.send_raw(&crate::support::echo_frame(5, b"plain still works"));
    assert_eq!(plain.recv().kind, Kind::Echo);
    let metrics = crate::support::admin_request(
        server.admin.unwrap(),
        "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .1;
    let upgrades: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("holdfast_ws_upgrades_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(upgrades, sessions.len() as u64, "{metrics}");
}

#[test]
fn drain_sends_goodbye_in_a_message_then_close_1001() {
    let server = ws_server("drain_timeout_ms = 3000\n");
    let mut ws = WsClient::connect(server.ws.unwrap());
    ws.send_binary(&holdfast_frame(Kind::Hello, 1, &[]));
    assert_eq!(ws.holdfast().0, Kind::Welcome);
    server.signal(libc::SIGTERM);
    assert_eq!(ws.holdfast().0, Kind::Goodbye);
    let (opcode, payload) = ws.frame();
    assert_eq!(opcode, 0x8);
    assert_eq!(&payload[..2], &1001u16.to_be_bytes());
}

#[test]
fn connection_that_never_upgrades_is_closed_at_the_hello_deadline_with_nothing_sent() {
    let server = ws_server("hello_timeout_ms = 300\n");
    let mut stream = TcpStream::connect(server.ws.unwrap()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut received = Vec::new();
    stream.read_to_end(&mut received).unwrap();
    assert!(
        received.is_empty(),
        "nothing is sent to a peer that is not a WebSocket yet"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    // The plain listener is unaffected.
    let mut plain = Client::connect(server.addr);
    plain.hello();
}

#[test]
fn refused_upgrade_gets_an_http_error_and_is_counted() {
    let server = ws_server("");
    let mut stream = TcpStream::connect(server.ws.unwrap()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{answer}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = crate::support::admin_request(
            server.admin.unwrap(),
            "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .1;
        if metrics.lines().any(|l| {
            l.starts_with("holdfast_connections_closed")
                && l.contains("transport_error")
                && l.ends_with(" 1")
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

/// Idle sessions hold no buffer: an upgraded, idle WebSocket session costs its boxed state
/// (at most 128 bytes), its side-table entry and what the allocator keeps of freed handshake
/// buffers. Measured (release, one shard, 10,000 sessions): 324-378 B per session of server
/// RSS, against ~0 for plain TCP (docs/PERFORMANCE.md, "Idle WebSocket sessions").
#[test]
fn idle_websocket_sessions_cost_under_1_kib_each() {
    const SESSIONS: usize = 4_000;
    let server = ws_server("shards = 1\nhello_timeout_ms = 60000\n");
    let ws_addr = server.ws.unwrap();
    // Warm up the shard's pools and allocator with a first batch, closed again.
    let warm: Vec<WsClient> = (0..200).map(|_| WsClient::connect(ws_addr)).collect();
    drop(warm);
    std::thread::sleep(Duration::from_millis(300));
    let before_kib = rss_kib(server.pid());
    let mut sessions = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        let mut ws = WsClient::connect(ws_addr);
        ws.send_binary(&holdfast_frame(Kind::Hello, 1, &[]));
        assert_eq!(ws.holdfast().0, Kind::Welcome);
        sessions.push(ws);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after_kib = rss_kib(server.pid());
    let per_session_bytes = after_kib.saturating_sub(before_kib) * 1024 / SESSIONS as u64;
    println!("{SESSIONS} idle WebSocket sessions: RSS {before_kib} -> {after_kib} KiB, {per_session_bytes} B each");
    assert!(
        per_session_bytes < 1024,
        "an idle WebSocket session costs {per_session_bytes} B"
    );
}

/// wss on the TLS listener: Python's `websockets` (ssl context trusting the test certificate,
/// ALPN http/1.1) upgrades on `ws_path`, says Hello in a binary message, echoes and gets pushes
/// (wss_session.py); a holdfast/1 rustls client on the same port keeps its session beside it.
#[test]
fn wss_client_and_holdfast_tls_client_share_the_tls_listener() {
    let dir = tempfile::tempdir().unwrap();
    let cert = crate::tls::write_cert(dir.path());
    let server = crate::tls::start(dir.path(), "ws_path = \"/ws\"\n");
    let tls = server.tls.expect("tls listener");
    let mut holdfast = crate::tls::tls_connect(tls, &cert);
    crate::tls::session_echoes(&mut holdfast, 3);
    let stdout = run_python(
        "wss_session.py",
        &[
            format!("wss://localhost:{}/ws", tls.port()),
            dir.path().join("cert.pem").display().to_string(),
            server.admin.expect("admin listener").to_string(),
        ],
        Duration::from_secs(30),
    );
    assert!(stdout.contains("alpn=http/1.1 ok"), "{stdout}");
    assert_eq!(holdfast.conn.alpn_protocol(), Some(&b"holdfast/1"[..]));
    // The holdfast/1 session is untouched, and a new one still starts on the same port.
    let frame = crate::support::echo_frame(77, b"after wss");
    holdfast.write_all(&frame).unwrap();
    let mut reply = vec![0u8; frame.len()];
    holdfast.read_exact(&mut reply).unwrap();
    assert_eq!(reply, frame);
    crate::tls::session_echoes(&mut crate::tls::tls_connect(tls, &cert), 1);
    let metrics = crate::metrics::scrape(&server);
    assert_eq!(
        crate::metrics::counter_sum(&metrics, "holdfast_ws_upgrades_total"),
        1.0
    );
    assert_eq!(
        crate::metrics::counter_sum(&metrics, "holdfast_tls_handshakes_total"),
        3.0
    );
}
