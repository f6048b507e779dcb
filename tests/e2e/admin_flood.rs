//! The admin listener under hostile clients: thousands of idle connections, slowloris heads,
//! connections over `admin_max_connections`, slow bodies. /healthz, /metrics and POST /publish
//! must keep answering promptly throughout, and the limits must cut exactly what they name.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::{read_http_response, HttpResponse, Server};

/// Idle connections in the flood (what silenced the one-at-a-time listener).
const FLOOD_IDLE_CONNECTIONS: usize = 2_000;
/// Connections that send part of a request head and then nothing (some also half-close).
const FLOOD_SLOWLORIS_CONNECTIONS: usize = 100;
/// Probes per route.
const PROBES: usize = 10;
/// Median probe latency allowed (connect + request + response), on a loaded 2-core machine.
const PROBE_MEDIAN_MAX_MS: u128 = 100;
/// Any single probe.
const PROBE_MAX_MS: u128 = 1_000;

fn connect(admin: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(admin).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// One request on `stream` (kept open): its response, or None if the server closed.
fn exchange(stream: &mut TcpStream, method: &str, path: &str, body: &str) -> Option<HttpResponse> {
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(raw.as_bytes()).ok()?;
    read_http_response(stream)
}

/// The three routes an orchestrator and a backend rely on, each on a new connection: the
/// latency of each (connect to last byte), after checking its status.
fn probe_round(admin: SocketAddr) -> [Duration; 3] {
    let probes = [
        ("GET", "/healthz", "", 200),
        ("GET", "/metrics", "", 200),
        (
            "POST",
            "/publish",
            r#"{"target":"broadcast","payload":"probe"}"#,
            202,
        ),
    ];
    probes.map(|(method, path, body, status)| {
        let start = Instant::now();
        let mut stream = connect(admin);
        let response = exchange(&mut stream, method, path, body)
            .unwrap_or_else(|| panic!("{method} {path}: connection closed without a response"));
        let took = start.elapsed();
        assert_eq!(
            response.status, status,
            "{method} {path}: {}",
            response.body
        );
        took
    })
}

/// Runs PROBES rounds; asserts the median and the maximum of each route; returns the figures
/// as text for the report.
fn probe_and_assert(admin: SocketAddr, when: &str) -> String {
    let mut by_route: [Vec<Duration>; 3] = Default::default();
    for _ in 0..PROBES {
        for (route, took) in probe_round(admin).into_iter().enumerate() {
            by_route[route].push(took);
        }
    }
    let mut report = String::new();
    for (name, mut latencies) in ["/healthz", "/metrics", "POST /publish"]
        .into_iter()
        .zip(by_route)
    {
        latencies.sort();
        let median = latencies[latencies.len() / 2];
        let max = latencies[latencies.len() - 1];
        report.push_str(&format!(
            "{when}: {name} median {:.2} ms, max {:.2} ms\n",
            median.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        ));
        assert!(
            median.as_millis() <= PROBE_MEDIAN_MAX_MS,
            "{when}: {name} median {median:?} over {PROBE_MEDIAN_MAX_MS} ms ({latencies:?})"
        );
        assert!(
            max.as_millis() < PROBE_MAX_MS,
            "{when}: {name} slowest {max:?} over {PROBE_MAX_MS} ms ({latencies:?})"
        );
    }
    report
}

/// Waits until the server holds at least `fds` descriptors (it has accepted the flood).
fn wait_for_fds(server: &Server, fds: usize) {
    let start = Instant::now();
    while server.open_fds() < fds {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "server holds {} descriptors, expected at least {fds}",
            server.open_fds()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn healthz_metrics_and_publish_answer_promptly_under_2000_idle_and_slowloris_connections() {
    // A long header timeout: the flood stays open for the whole test, so the answers below come
    // from serving connections concurrently, not from cutting the flood.
    let server = Server::start("shards = 2\nadmin_header_timeout_ms = 60000\n");
    let admin = server.admin.unwrap();
    let baseline_fds = server.open_fds();

    let mut flood: Vec<TcpStream> = (0..FLOOD_IDLE_CONNECTIONS)
        .map(|_| connect(admin))
        .collect();
    for i in 0..FLOOD_SLOWLORIS_CONNECTIONS {
        let mut stream = connect(admin);
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: aaaa")
            .unwrap();
        if i % 2 == 0 {
            // Half-closed: the head can never complete, so the server may close these at once.
            stream.shutdown(Shutdown::Write).unwrap();
        }
        flood.push(stream);
    }
    // Every idle and every open slowloris connection is held by the server.
    wait_for_fds(
        &server,
        baseline_fds + FLOOD_IDLE_CONNECTIONS + FLOOD_SLOWLORIS_CONNECTIONS / 2,
    );

    let during = probe_and_assert(admin, "during the flood");
    // The flood was held, not cut, while the probes were answered.
    assert!(
        server.open_fds() >= baseline_fds + FLOOD_IDLE_CONNECTIONS,
        "the idle connections are still open ({} descriptors)",
        server.open_fds()
    );

    drop(flood);
    let after = probe_and_assert(admin, "right after the flood closed");
    println!("{during}{after}");
}

#[test]
fn over_admin_max_connections_is_answered_503_and_keep_alive_clients_are_still_served() {
    const LIMIT: usize = 4;
    let server = Server::start(&format!("shards = 1\nadmin_max_connections = {LIMIT}\n"));
    let admin = server.admin.unwrap();
    let mut kept: Vec<TcpStream> = (0..LIMIT).map(|_| connect(admin)).collect();
    for stream in &mut kept {
        let response = exchange(stream, "GET", "/healthz", "").unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), None, "kept alive");
    }

    let start = Instant::now();
    let mut over = connect(admin);
    let refused = exchange(&mut over, "GET", "/healthz", "").expect("an answer, not a hang");
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused.body.contains("admin_max_connections"),
        "{}",
        refused.body
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.header("connection"), Some("close"));
    assert!(
        read_http_response(&mut over).is_none(),
        "closed after the 503"
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "refused at once, took {:?}",
        start.elapsed()
    );

    // Every keep-alive client goes on over its own connection.
    for stream in &mut kept {
        let start = Instant::now();
        let response = exchange(stream, "GET", "/readyz", "").expect("still served");
        assert_eq!((response.status, response.body.as_str()), (200, "ready\n"));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    // A closed client frees its slot for the next.
    drop(kept.pop());
    let start = Instant::now();
    loop {
        let mut stream = connect(admin);
        let response = exchange(&mut stream, "GET", "/healthz", "").unwrap();
        if response.status == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "slot not freed: {}",
            response.status
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads until the server closes; returns when that happened.
fn closed_at(stream: &mut TcpStream) -> Instant {
    let mut buf = [0u8; 1024];
    loop {
        match std::io::Read::read(stream, &mut buf) {
            Ok(0) => return Instant::now(),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Instant::now(),
            Err(e) => panic!("not closed: {e}"),
        }
    }
}

#[test]
fn slow_header_and_silent_connection_are_cut_after_admin_header_timeout_ms() {
    const TIMEOUT_MS: u64 = 400;
    let server = Server::start(&format!(
        "shards = 1\nadmin_header_timeout_ms = {TIMEOUT_MS}\n"
    ));
    let admin = server.admin.unwrap();

    let mut slow = connect(admin);
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    let slow_since = Instant::now();
    let mut silent = connect(admin);
    let silent_since = Instant::now();
    // A keep-alive client that goes quiet after one request.
    let mut quiet = connect(admin);
    assert_eq!(
        exchange(&mut quiet, "GET", "/healthz", "").unwrap().status,
        200
    );
    let quiet_since = Instant::now();

    for (name, stream, since) in [
        ("slow head", &mut slow, slow_since),
        ("silent", &mut silent, silent_since),
        ("idle keep-alive", &mut quiet, quiet_since),
    ] {
        let took = closed_at(stream).duration_since(since);
        assert!(
            took >= Duration::from_millis(TIMEOUT_MS * 3 / 4) && took < Duration::from_secs(3),
            "{name}: closed after {took:?}, expected about {TIMEOUT_MS} ms"
        );
    }
    // A client that sends its request in time is served.
    let mut prompt = connect(admin);
    assert_eq!(
        exchange(&mut prompt, "GET", "/readyz", "").unwrap().status,
        200
    );
}

#[test]
fn slow_body_gets_408_and_a_body_over_admin_max_body_bytes_gets_413_unread() {
    let server =
        Server::start("shards = 1\nadmin_body_timeout_ms = 300\nadmin_max_body_bytes = 2048\n");
    let admin = server.admin.unwrap();

    let mut slow = connect(admin);
    slow.write_all(b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"tar")
        .unwrap();
    let start = Instant::now();
    let response = read_http_response(&mut slow).expect("a 408, not a silent close");
    assert_eq!(response.status, 408, "{}", response.body);
    assert!(
        response.body.contains("admin_body_timeout_ms"),
        "{}",
        response.body
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );

    // Announced over the limit: refused before a byte of the body is sent.
    let mut big = connect(admin);
    big.write_all(b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: 4096\r\n\r\n")
        .unwrap();
    let response = read_http_response(&mut big).expect("a 413");
    assert_eq!(response.status, 413, "{}", response.body);
    assert_eq!(response.header("connection"), Some("close"));

    // Chunked and over the limit: cut at the limit.
    let mut chunked = connect(admin);
    let chunk = "x".repeat(3000);
    let raw = format!(
        "POST /publish HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    chunked.write_all(raw.as_bytes()).unwrap();
    assert_eq!(read_http_response(&mut chunked).expect("a 413").status, 413);

    // Head over ADMIN_HEAD_MAX_BYTES (8 KiB): 431.
    let mut huge_head = connect(admin);
    let raw = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "y".repeat(9000)
    );
    let _ = huge_head.write_all(raw.as_bytes());
    assert_eq!(
        read_http_response(&mut huge_head).expect("a 431").status,
        431
    );
}

#[test]
fn admin_keep_alive_false_closes_after_each_response() {
    let server = Server::start("shards = 1\nadmin_keep_alive = false\n");
    let mut stream = connect(server.admin.unwrap());
    let response = exchange(&mut stream, "GET", "/healthz", "").unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(
        read_http_response(&mut stream).is_none(),
        "closed after one response"
    );
}
