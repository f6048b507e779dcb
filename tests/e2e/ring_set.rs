//! A shard past one io_uring fixed-file table: `ring_max_fixed_files` small makes a shard own
//! several rings (a ring set) cheaply. Every session on every ring says Hello, heartbeats,
//! echoes, gets a broadcast push and closes cleanly; a ring filling up moves the accepts to
//! a ring with room, so no connection is refused while any ring has a free entry.

use std::time::{Duration, Instant};

use holdfast_protocol::{next_frame, ErrorCode, Kind, Payload};

use crate::support::{admin_request, echo_frame, publish, Client, Ending, Server};

/// Sum of `name` over every shard in /metrics (labelled samples, or the bare one).
fn metric(server: &Server, name: &str) -> u64 {
    let (status, body) = admin_request(
        server.admin.unwrap(),
        "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n",
    );
    assert_eq!(status, 200);
    let values: Vec<u64> = body
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .collect();
    assert!(!values.is_empty(), "{name} not in /metrics:\n{body}");
    values.iter().sum()
}

/// The shard slot a session id (a connection id: `shard:8 | slot:24 | generation:32`) names;
/// slot / ring_max_fixed_files is its ring.
fn slot_of(session_id: u64) -> u32 {
    (session_id >> 32) as u32 & 0xff_ffff
}

/// Connects `count` clients, then has each say Hello (so all are accepted before any is
/// served: the accepts cross every ring boundary in one burst). Returns them with their slots.
fn sessions(server: &Server, count: usize) -> (Vec<Client>, Vec<u32>) {
    let mut clients: Vec<Client> = (0..count).map(|_| server.connect()).collect();
    let slots = clients
        .iter_mut()
        .map(|client| slot_of(client.hello()))
        .collect();
    (clients, slots)
}

/// A one-shard server with rings of `ring_entries` and room for `count` sessions, and `count`
/// sessions on it (see `sessions`), with their slots; no accept found the fixed-file table full.
fn server_with_sessions(ring_entries: u32, count: usize) -> (Server, Vec<Client>, Vec<u32>) {
    let server = Server::start(&format!(
        "shards = 1\nring_max_fixed_files = {ring_entries}\nmax_connections_per_shard = {count}\n\
         hello_timeout_ms = 60000\n"
    ));
    let (clients, slots) = sessions(&server, count);
    assert_eq!(metric(&server, "holdfast_accept_table_full_total"), 0);
    (server, clients, slots)
}

/// Each client's Echo of `body` (id: 10 + its index) comes back to it byte-exact.
fn echo_each(clients: &mut [Client], body: &[u8]) {
    for (n, client) in clients.iter_mut().enumerate() {
        let id = n as u64 + 10;
        client.send_raw(&echo_frame(id, body));
        let echo = client.recv();
        assert_eq!((echo.kind, echo.id), (Kind::Echo, id), "session {n}");
        assert!(echo.bytes.ends_with(body), "session {n}");
    }
}

fn goodbye(client: &mut Client) {
    let mut out = bytes::BytesMut::new();
    let goodbye = holdfast_protocol::payload::Goodbye {
        reason: "done",
        reconnect_after_ms: 0,
    };
    holdfast_protocol::encode_frame(&mut out, 0, 3, &goodbye, 65_536).unwrap();
    client.send_raw(&out);
    assert_eq!(client.ending(), Ending::Eof(vec![]));
}

/// Waits (bounded) until the server counts `want` open connections.
fn wait_open(server: &Server, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open = metric(server, "holdfast_connections_open");
        if open == want {
            return;
        }
        assert!(Instant::now() < deadline, "{open} open, want {want}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 3,000 sessions on one shard whose rings hold 1,000 entries each: four rings (3,000
/// sessions and 64 refusal slots). Each session works end to end on whichever ring holds it.
#[test]
fn three_thousand_sessions_on_rings_of_one_thousand_hello_heartbeat_echo_push_and_close() {
    const SESSIONS: usize = 3_000;
    let (server, mut clients, slots) = server_with_sessions(1_000, SESSIONS);
    assert_eq!(
        metric(&server, "holdfast_connections_refused_full_total"),
        0
    );
    let mut per_ring = [0usize; 4];
    for slot in &slots {
        per_ring[*slot as usize / 1000] += 1;
    }
    assert!(
        per_ring[..3].iter().all(|&n| n >= 900),
        "sessions per ring {per_ring:?}"
    );
    for (n, client) in clients.iter_mut().enumerate() {
        let id = n as u64 + 10;
        client.send(Kind::Ping, id, &[]);
        let pong = client.recv();
        assert_eq!((pong.kind, pong.id), (Kind::Pong, id), "session {n}");
    }
    echo_each(&mut clients, b"ring set");
    let (status, body) = publish(
        &server,
        r#"{"target":"broadcast","payload_base64":"AAEC"}"#,
        None,
    );
    assert_eq!(status, 202, "{body}");
    for (n, client) in clients.iter_mut().enumerate() {
        let push = client.recv();
        assert_eq!(push.kind, Kind::Push, "session {n}: {push:?}");
        let frame = next_frame(&push.bytes, 1 << 20).unwrap().unwrap();
        let Payload::Push(push) = frame.payload else {
            panic!("session {n}: not a push")
        };
        assert_eq!(
            (&*push.topic, &*push.payload),
            ("*", &[0u8, 1, 2][..]),
            "session {n}"
        );
    }
    for client in &mut clients {
        goodbye(client);
    }
    wait_open(&server, 0);
}

/// Rings of 256 entries, 600 sessions: three rings (664 slots). Filled, the shard refuses the
/// next client with server_full (not a kernel reset at accept); after 300 leave, new clients
/// are accepted into the rings that have room again.
#[test]
fn a_full_ring_moves_accepts_to_the_next_and_freed_entries_are_used_again() {
    const SESSIONS: usize = 600;
    let (server, mut clients, slots) = server_with_sessions(256, SESSIONS);
    assert!(
        slots.iter().any(|&slot| slot >= 512),
        "the third ring took accepts"
    );
    let mut over = server.connect();
    let refusal = over.recv();
    assert_eq!(
        refusal.error_code(),
        Some(ErrorCode::ServerFull),
        "{refusal:?}"
    );
    for client in clients.iter_mut().take(SESSIONS / 2) {
        goodbye(client);
    }
    drop(over);
    wait_open(&server, (SESSIONS - SESSIONS / 2) as u64);
    let freed: std::collections::HashSet<u32> = slots[..SESSIONS / 2].iter().copied().collect();
    let (mut again, again_slots) = sessions(&server, SESSIONS / 2);
    let reused = again_slots
        .iter()
        .filter(|slot| freed.contains(slot))
        .count();
    assert!(
        reused >= SESSIONS / 2 - 64,
        "{reused} of the freed entries named again"
    );
    echo_each(&mut again, b"again");
    assert_eq!(metric(&server, "holdfast_accept_table_full_total"), 0);
    assert_eq!(
        metric(&server, "holdfast_connections_refused_full_total"),
        1
    );
}
