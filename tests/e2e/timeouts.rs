use std::time::{Duration, Instant};

use holdfast_protocol::{ErrorCode, Kind};

use crate::support::{Ending, Server};

#[test]
fn silent_connection_is_closed_after_hello_timeout() {
    let server = Server::start("shards = 1\nhello_timeout_ms = 300\ntimer_tick_ms = 10\n");
    let start = Instant::now();
    let mut client = server.connect();
    let error = client.recv();
    assert_eq!(error.error_code(), Some(ErrorCode::HelloTimeout));
    assert_eq!(client.ending(), Ending::Eof(vec![]));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(290),
        "not before the timeout: {waited:?}"
    );
}

#[test]
fn server_pings_then_closes_a_session_that_stays_silent() {
    let server = Server::start("shards = 1\nheartbeat_interval_ms = 200\nheartbeat_min_interval_ms = 100\nheartbeat_timeout_ms = 500\ntimer_tick_ms = 10\n");
    let mut client = server.connect();
    client.hello();
    let start = Instant::now();
    let ping = client.recv();
    assert_eq!(ping.kind, Kind::Ping, "server pings an idle session");
    let error = client.recv();
    assert_eq!(error.error_code(), Some(ErrorCode::HeartbeatTimeout));
    assert!(
        start.elapsed() >= Duration::from_millis(450),
        "closed at the timeout, not before: {:?}",
        start.elapsed()
    );
    assert_eq!(client.ending(), Ending::Eof(vec![]));
}

#[test]
fn heartbeats_keep_a_session_open_past_the_timeout() {
    let server = Server::start("shards = 1\nheartbeat_interval_ms = 200\nheartbeat_min_interval_ms = 100\nheartbeat_timeout_ms = 400\ntimer_tick_ms = 10\n");
    let mut client = server.connect();
    client.hello();
    for id in 0..10u64 {
        std::thread::sleep(Duration::from_millis(100));
        client.send(Kind::Ping, id, &[]);
        // On a loaded machine this thread may sleep past heartbeat_interval_ms: the server
        // then Pings first (it must, and a Pong answers it), and our Pong follows.
        let mut pong = client.recv();
        while pong.kind == Kind::Ping {
            client.send(Kind::Pong, pong.id, &[]);
            pong = client.recv();
        }
        assert_eq!(
            (pong.kind, pong.id),
            (Kind::Pong, id),
            "still open after {} ms",
            (id + 1) * 100
        );
    }
}
