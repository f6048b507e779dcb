//! The support client's `ending()` reports what happened, not what a test hopes for: an open
//! session is `Open`, a graceful close `Eof`, a reset `Reset`, each with the frames before it.

use std::time::Duration;

use holdfast_protocol::{ErrorCode, Kind};

use crate::support::{Ending, Server};

#[test]
fn ending_tells_an_open_session_from_a_closed_one() {
    let server = Server::start("shards = 1\n");
    let mut client = server.connect();
    client.hello();
    assert_eq!(
        client.ending_within(Duration::from_millis(300)),
        Ending::Open(vec![]),
        "an idle session within its heartbeat timeout stays open"
    );
    client.send(Kind::Ping, 5, &[]);
    assert_eq!(
        client.ending_within(Duration::from_millis(300)),
        Ending::Open(vec![Kind::Pong]),
        "frames during the wait are reported"
    );
    client.send(Kind::Hello, 6, &[]); // a second Hello: Error UnexpectedFrame, then close
    let error = client.recv();
    assert_eq!(error.error_code(), Some(ErrorCode::UnexpectedFrame));
    assert_eq!(client.ending(), Ending::Eof(vec![]));
}

#[test]
fn ending_reports_a_reset_as_a_reset() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = crate::support::Client::connect(listener.local_addr().unwrap());
    let (peer, _) = listener.accept().unwrap();
    socket2::SockRef::from(&peer)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(peer); // RST
    assert_eq!(client.ending(), Ending::Reset(vec![]));
}
