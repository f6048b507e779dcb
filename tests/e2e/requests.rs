use holdfast_protocol::{ErrorCode, Kind};

use crate::support::{echo_frame, Server};

#[test]
fn echo_request_gets_response_with_same_id_and_body() {
    let server = Server::start("shards = 1\n");
    let mut client = server.connect();
    client.hello();
    client.request(77, "echo", b"body bytes");
    let response = client.recv();
    assert_eq!((response.kind, response.id), (Kind::Response, 77));
    assert_eq!(response.response_body().unwrap(), b"body bytes");
}

#[test]
fn kv_handler_keeps_state_per_session() {
    let server = Server::start("shards = 1\n");
    let mut alice = server.connect();
    alice.hello();
    alice.request(1, "kv.set", b"color\0blue");
    assert_eq!(alice.recv().kind, Kind::Response);
    alice.request(2, "kv.get", b"color");
    assert_eq!(alice.recv().response_body().unwrap(), b"blue");
    let mut bob = server.connect();
    bob.hello();
    bob.request(3, "kv.get", b"color");
    assert_eq!(bob.recv().error_code(), Some(ErrorCode::HandlerFailed));
}

#[test]
fn unknown_method_gets_error_and_connection_stays_open() {
    let server = Server::start("shards = 1\n");
    let mut client = server.connect();
    client.hello();
    client.request(5, "no.such.method", b"");
    let error = client.recv();
    assert_eq!(
        (error.error_code(), error.id),
        (Some(ErrorCode::UnknownMethod), 5)
    );
    let frame = echo_frame(6, b"still here");
    client.send_raw(&frame);
    assert_eq!(client.recv().bytes, frame);
}

#[test]
fn too_many_requests_in_flight_is_refused() {
    let server = Server::start("shards = 1\nmax_inflight_requests = 4\n");
    let mut client = server.connect();
    client.hello();
    // Pipelined in one write: the server answers within one batch, none flushed in between.
    let mut batch = Vec::new();
    for id in 0..6u64 {
        let mut one = bytes::BytesMut::new();
        let request = holdfast_protocol::payload::Request {
            method: "echo",
            body: b"x",
        };
        holdfast_protocol::encode_frame(&mut one, 0, id, &request, 65_536).unwrap();
        batch.extend_from_slice(&one);
    }
    client.send_raw(&batch);
    let mut codes = Vec::new();
    while let Some(frame) = client.try_recv() {
        codes.push((frame.kind, frame.error_code()));
    }
    assert_eq!(
        codes.iter().filter(|(k, _)| *k == Kind::Response).count(),
        4
    );
    assert!(
        codes.contains(&(Kind::Error, Some(ErrorCode::TooManyInflight))),
        "{codes:?}"
    );
}
