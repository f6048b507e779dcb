//! A shard with room for exactly two connections: if a closed connection's slot were not
//! freed, the next connection could not be accepted and its Hello would time out.

use std::net::Shutdown;

use crate::support::{echo_frame, Ending, Server};

const TWO_SLOTS: &str = "shards = 1\nmax_connections_per_shard = 2\n";

fn both_slots_work(server: &Server) {
    let mut a = server.connect();
    let mut b = server.connect();
    a.hello();
    b.hello();
    let frame = echo_frame(1, b"slot reused");
    b.send_raw(&frame);
    assert_eq!(b.recv().bytes, frame);
}

#[test]
fn reset_connections_free_their_slots() {
    let server = Server::start(TWO_SLOTS);
    for _ in 0..3 {
        let mut a = server.connect();
        let mut b = server.connect();
        a.hello();
        b.hello();
        for client in [a, b] {
            let socket = socket2::SockRef::from(&client.stream);
            socket.set_linger(Some(std::time::Duration::ZERO)).unwrap();
            drop(client); // RST
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    both_slots_work(&server);
}

#[test]
fn half_closed_peers_are_cleaned_up() {
    let server = Server::start(TWO_SLOTS);
    for _ in 0..3 {
        let mut a = server.connect();
        a.hello();
        a.stream.shutdown(Shutdown::Write).unwrap();
        assert_eq!(
            a.ending(),
            Ending::Eof(vec![]),
            "server closes after the peer's EOF"
        );
    }
    both_slots_work(&server);
}

#[test]
fn eof_in_the_middle_of_a_frame_frees_the_slot() {
    let server = Server::start(TWO_SLOTS);
    for _ in 0..3 {
        let mut a = server.connect();
        a.hello();
        let frame = echo_frame(1, &[7; 1000]);
        a.send_raw(&frame[..500]);
        a.stream.shutdown(Shutdown::Write).unwrap();
        assert_eq!(a.ending(), Ending::Eof(vec![]));
    }
    both_slots_work(&server);
}

#[test]
fn half_closed_peer_still_gets_its_replies() {
    let server = Server::start(TWO_SLOTS);
    let mut a = server.connect();
    a.hello();
    let frame = echo_frame(3, &[1; 20_000]);
    a.send_raw(&frame);
    a.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(a.recv().bytes, frame);
    assert_eq!(a.ending(), Ending::Eof(vec![]));
}
