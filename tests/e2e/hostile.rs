//! The holes a hostile client or an unlucky operator found (issue 13), each closed and proved
//! here: the heartbeat a client asks for is the one applied, a client over the connection cap
//! is told at once, Error frames name the offending frame, a Subscribe is all or nothing.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use holdfast_protocol::payload::Hello;
use holdfast_protocol::{encode_frame, Kind, MAX_FRAME_BYTES_DEFAULT};

use crate::support::{Client, Server};

fn hello_asking_heartbeat(client: &mut Client, heartbeat_ms: u32) -> crate::support::Received {
    let mut out = BytesMut::new();
    let hello = Hello {
        client_id: "",
        token: &[],
        versions: &[1],
        heartbeat_ms,
    };
    encode_frame(&mut out, 0, 1, &hello, MAX_FRAME_BYTES_DEFAULT).unwrap();
    client.send_raw(&out);
    client.recv()
}

/// Welcome announces the interval in force (PROTOCOL.md); the Pings must come at that interval,
/// not at the server default (10 s here).
#[test]
fn heartbeat_asked_in_hello_is_the_ping_spacing_observed() {
    let server = Server::start(
        "heartbeat_interval_ms = 10000\nheartbeat_min_interval_ms = 500\nheartbeat_timeout_ms = 30000\n",
    );
    let mut client = server.connect();
    let welcome = hello_asking_heartbeat(&mut client, 1_000);
    assert_eq!(welcome.kind, Kind::Welcome, "got {welcome:?}");
    assert_eq!(welcome.welcome_heartbeat_ms(), Some(1_000));
    let mut last = Instant::now();
    for ping in 0..3 {
        let frame = client.recv();
        let gap = last.elapsed();
        last = Instant::now();
        assert_eq!(frame.kind, Kind::Ping, "ping {ping}: got {frame:?}");
        assert!(
            gap >= Duration::from_millis(900) && gap <= Duration::from_millis(2_500),
            "ping {ping} came {gap:?} after the last frame, asked for 1 s"
        );
        client.send(Kind::Pong, frame.id, &[]);
    }
}

/// Over max_connections_per_shard a client is told at once: Error(server_full) with a
/// reconnect hint, a Goodbye carrying the hint, then the close; counted on /metrics. The
/// sessions already open are untouched, and a slot freed is a slot a new client gets.
#[test]
fn a_client_over_the_connection_cap_gets_server_full_at_once_and_is_counted() {
    let server = Server::start(
        "shards = 1\nmax_connections_per_shard = 4\nreconnect_after_ms = 500\nreconnect_jitter_ms = 100\n",
    );
    let mut sessions: Vec<Client> = (0..4).map(|_| server.connect()).collect();
    for client in &mut sessions {
        client.hello();
    }
    let started = Instant::now();
    let mut over = server.connect();
    let error = over.recv();
    assert_eq!(
        error.error_code(),
        Some(holdfast_protocol::ErrorCode::ServerFull)
    );
    let goodbye = over.recv();
    let hint = goodbye
        .goodbye_reconnect_after_ms()
        .expect("a Goodbye with the hint");
    assert!((500..=600).contains(&hint), "hint {hint} ms");
    assert!(over.closed_by_server());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "told in {:?}",
        started.elapsed()
    );
    // The open sessions still answer.
    for (n, client) in sessions.iter_mut().enumerate() {
        client.send_raw(&crate::support::echo_frame(n as u64 + 10, b"still here"));
        assert_eq!(client.recv().id, n as u64 + 10);
    }
    let metrics = crate::support::admin_request(
        server.admin.unwrap(),
        "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .1;
    assert!(
        metrics.contains("holdfast_connections_refused_full_total{shard=\"0\"} 1"),
        "{metrics}"
    );
    // A freed slot admits a new session.
    drop(sessions.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = server.connect();
        next.send(Kind::Hello, 1, &[]);
        let reply = next.recv();
        if reply.kind == Kind::Welcome {
            break;
        }
        assert_eq!(
            reply.error_code(),
            Some(holdfast_protocol::ErrorCode::ServerFull)
        );
        assert!(
            Instant::now() < deadline,
            "the freed slot was never given out"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
