//! TCP probes on a loopback exchange between two sockets of this process.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{attach_to_self, snapshot_until};

const ROUNDS: usize = 20;
const MESSAGE: &[u8; 64] = &[7u8; 64];

/// Ping-pong `ROUNDS` messages over loopback; the server side is the accepted
/// socket (local port = the listener's), the client an ephemeral port.
fn exchange(listener: &TcpListener) {
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_nodelay(true).unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..ROUNDS {
            c.write_all(MESSAGE).unwrap();
            c.read_exact(&mut buf).unwrap();
            // Let the server block in read, so the next message finds it waiting.
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let (mut s, _) = listener.accept().unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..ROUNDS {
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    }
    client.join().unwrap();
    // Server closes second: ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> CLOSE.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    drop(s);
}

#[test]
fn loopback_exchange_on_the_port_shows_srtt_read_latency_and_state_transitions() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let probes = attach_to_self(port);
    exchange(&listener);

    let snap = snapshot_until(&probes, Duration::from_secs(2), |s| {
        s.state_transitions("LAST_ACK", "CLOSE") > 0
    });
    let text = snap.render_text();
    assert!(
        snap.tcp_srtt_us.count() >= ROUNDS as u64,
        "srtt sampled once per read:\n{text}"
    );
    // Loopback RTT is microseconds, far below a second.
    assert!(snap.tcp_srtt_us.percentile(0.99) < 1_000_000, "{text}");
    assert!(
        snap.data_ready_to_read_ns.count() >= ROUNDS as u64,
        "one data-ready -> read per message:\n{text}"
    );
    assert_eq!(
        snap.state_transitions("SYN_RECV", "ESTABLISHED"),
        1,
        "{text}"
    );
    assert_eq!(
        snap.state_transitions("ESTABLISHED", "CLOSE_WAIT"),
        1,
        "{text}"
    );
    assert_eq!(snap.state_transitions("LAST_ACK", "CLOSE"), 1, "{text}");
    // The client's socket has an ephemeral local port: not ours.
    assert_eq!(
        snap.state_transitions("SYN_SENT", "ESTABLISHED"),
        0,
        "{text}"
    );
    assert_eq!(snap.tcp_retransmits, 0, "no loss on loopback:\n{text}");
}

#[test]
fn traffic_on_another_port_is_not_counted() {
    let ours = TcpListener::bind("127.0.0.1:0").unwrap();
    let probes = attach_to_self(ours.local_addr().unwrap().port());
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    exchange(&other);
    std::thread::sleep(Duration::from_millis(50));
    let snap = probes.snapshot().unwrap();
    assert_eq!(snap.tcp_srtt_us.count(), 0, "{}", snap.render_text());
    assert_eq!(snap.data_ready_to_read_ns.count(), 0);
    assert!(
        snap.tcp_state_transitions.is_empty(),
        "{:?}",
        snap.tcp_state_transitions
    );
}

#[test]
fn port_zero_follows_sockets_the_process_sends_or_receives_on() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let probes = attach_to_self(0);
    exchange(&listener);
    let snap = snapshot_until(&probes, Duration::from_secs(2), |s| {
        s.state_transitions("LAST_ACK", "CLOSE") > 0
    });
    let text = snap.render_text();
    // A socket is picked up at its first send or receive, so the first
    // message of each side may be missed, and the handshake always is.
    assert!(snap.tcp_srtt_us.count() >= ROUNDS as u64, "{text}");
    assert!(
        snap.data_ready_to_read_ns.count() >= ROUNDS as u64,
        "{text}"
    );
    assert!(
        snap.state_transitions("ESTABLISHED", "FIN_WAIT1") >= 1,
        "client closes first:\n{text}"
    );
    assert!(snap.state_transitions("LAST_ACK", "CLOSE") >= 1, "{text}");
}
