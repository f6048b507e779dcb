//! Goodbye's reconnect hint is spread by a random jitter; the randomness must differ between
//! processes, or every host (and every restart) of a fleet sends its clients back in lockstep.

use std::time::Duration;

use holdfast_protocol::Kind;

use crate::support::Server;

const SESSIONS: usize = 6;
const RECONNECT_AFTER_MS: u32 = 1_000;
const RECONNECT_JITTER_MS: u32 = 4_000;

/// Starts a server with the shared config, opens SESSIONS sessions, drains it: the hints its
/// sessions got, in connection order.
fn drained_hints() -> Vec<u32> {
    let mut server = Server::start(&format!(
        "shards = 1\nreconnect_after_ms = {RECONNECT_AFTER_MS}\nreconnect_jitter_ms = {RECONNECT_JITTER_MS}\n"
    ));
    let mut clients: Vec<_> = (0..SESSIONS).map(|_| server.connect()).collect();
    for client in &mut clients {
        client.hello();
    }
    server.signal(libc::SIGTERM);
    let hints = clients
        .iter_mut()
        .map(|client| {
            let goodbye = client.recv();
            assert_eq!(goodbye.kind, Kind::Goodbye, "got {goodbye:?}");
            goodbye.goodbye_reconnect_after_ms().unwrap()
        })
        .collect();
    drop(clients);
    assert!(server.wait_exit(Duration::from_secs(15)).success());
    hints
}

#[test]
fn two_processes_with_the_same_config_give_different_reconnect_hints() {
    let first = drained_hints();
    let second = drained_hints();
    for hint in first.iter().chain(&second) {
        assert!(
            (RECONNECT_AFTER_MS..=RECONNECT_AFTER_MS + RECONNECT_JITTER_MS).contains(hint),
            "hint {hint} within base + jitter"
        );
    }
    // With a fixed seed both draw the same sequence; from the OS, six draws over 4,001 values
    // match by chance with probability ~2e-22.
    let (mut first_sorted, mut second_sorted) = (first.clone(), second.clone());
    first_sorted.sort();
    second_sorted.sort();
    assert_ne!(
        first_sorted, second_sorted,
        "both processes drew the same hints: {first:?} and {second:?}"
    );
}
