use std::time::Duration;

use holdfast_protocol::Kind;

use crate::support::{echo_frame, Ending, Server};

#[test]
fn hello_welcome_then_echo_is_byte_exact() {
    let server = Server::start("shards = 2\n");
    let mut client = server.connect();
    client.hello();
    let frame = echo_frame(42, b"the quick brown fox \x00\xff");
    client.send_raw(&frame);
    let reply = client.recv();
    assert_eq!(reply.bytes, frame);
}

#[test]
fn ping_gets_pong_with_the_same_id() {
    let server = Server::start("shards = 1\n");
    let mut client = server.connect();
    client.hello();
    client.send(Kind::Ping, 9001, &[]);
    let pong = client.recv();
    assert_eq!((pong.kind, pong.id), (Kind::Pong, 9001));
}

#[test]
fn pipelined_frames_in_odd_splits_are_all_answered_in_order() {
    // Every reply (~300 KB) fits the outbound queue while the client is still writing: the
    // test is about splits, not about how fast this client reads.
    let server = Server::start("shards = 1\nmax_outbound_bytes = 1048576\n");
    let mut client = server.connect();
    client.hello();
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for id in 0..200u64 {
        let payload = vec![id as u8; (id as usize * 37) % 3000];
        let frame = echo_frame(id, &payload);
        stream.extend_from_slice(&frame);
        expected.push(frame);
    }
    // Cut the stream at odd positions, including inside headers.
    let cuts = [1usize, 7, 15, 16, 17, 333, 4097, 9999, 65_537];
    let mut at = 0;
    for (i, cut) in cuts.iter().cycle().enumerate() {
        if at >= stream.len() {
            break;
        }
        let end = (at + cut).min(stream.len());
        client.send_raw(&stream[at..end]);
        at = end;
        if i % 5 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for frame in expected {
        assert_eq!(client.recv().bytes, frame);
    }
}

#[test]
fn sessions_on_both_shards_get_distinct_ids() {
    let server = Server::start("shards = 2\n");
    let ids: std::collections::HashSet<u64> = (0..20).map(|_| server.connect().hello()).collect();
    assert_eq!(ids.len(), 20);
}

#[test]
fn client_goodbye_is_answered_by_a_prompt_close() {
    let server = Server::start("shards = 1\nclose_linger_ms = 10000\n");
    let mut client = server.connect();
    client.hello();
    let mut out = bytes::BytesMut::new();
    let goodbye = holdfast_protocol::payload::Goodbye {
        reason: "bye",
        reconnect_after_ms: 0,
    };
    holdfast_protocol::encode_frame(&mut out, 0, 3, &goodbye, 65_536).unwrap();
    client.send_raw(&out);
    let start = std::time::Instant::now();
    assert_eq!(client.ending(), Ending::Eof(vec![]));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the server shut its side at once, not after close_linger_ms"
    );
}
