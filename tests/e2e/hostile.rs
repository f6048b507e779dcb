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
