//! The holes a hostile client or an unlucky operator found (issue 13), each closed and proved
//! here: the heartbeat a client asks for is the one applied, a client over the connection cap
//! is told at once, Error frames name the offending frame, a Subscribe is all or nothing.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use holdfast_protocol::payload::Hello;
use holdfast_protocol::{encode_frame, Kind, MAX_FRAME_BYTES_DEFAULT};

use crate::support::{Client, Ending, Server};

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
        "shards = 1\nmax_connections_per_shard = 4\nreconnect_after_ms = 500\nreconnect_jitter_ms = 100\nclose_linger_ms = 5000\n",
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
    assert_eq!(over.ending(), Ending::Eof(vec![]));
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
    // A freed session slot admits a new session at once, while the refused connection may
    // still hold its refusal slot.
    drop(sessions.pop());
    let deadline = Instant::now() + Duration::from_secs(2);
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
        // Only until the server has seen the close (no linger of the refused one counts).
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// PROTOCOL.md: the Error's id is the offending frame's id once its header parsed.
#[test]
fn an_invalid_payload_gets_an_error_naming_its_frame_id() {
    let server = Server::start("");
    let mut client = server.connect();
    client.hello();
    let mut frame = vec![0u8; 16];
    frame[0..4].copy_from_slice(&(16u32 + 40).to_le_bytes());
    frame[4] = 1;
    frame[5] = Kind::Request as u8;
    frame[8..16].copy_from_slice(&77u64.to_le_bytes());
    frame.extend_from_slice(&[0xff; 40]);
    client.send_raw(&frame);
    let error = client.recv();
    assert_eq!(
        error.error_code(),
        Some(holdfast_protocol::ErrorCode::InvalidArchive)
    );
    assert_eq!(error.id, 77, "the Error names frame 77");
    assert_eq!(client.ending(), Ending::Eof(vec![]));
}

/// The kernel send queue (bytes) of the server's socket for the connection from `client_port`,
/// read from /proc/net/tcp (tx_queue).
fn server_send_queue_bytes(server_port: u16, client_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port_of = |address: &str| u16::from_str_radix(address.split(':').nth(1)?, 16).ok();
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, queues) = (fields.get(1)?, fields.get(2)?, fields.get(4)?);
        if port_of(local)? != server_port || port_of(remote)? != client_port {
            return None;
        }
        u64::from_str_radix(queues.split(':').next()?, 16).ok()
    })
}

/// A client that never reads pins at most about twice socket_send_buffer_bytes of kernel
/// memory in its send queue (before: up to net.ipv4.tcp_wmem's 4 MB, while max_outbound_bytes
/// bounded only the user-space queue), and is cut as a slow consumer.
#[test]
fn a_never_reading_client_pins_a_bounded_kernel_send_queue() {
    const SEND_BUFFER_BYTES: u64 = 65_536;
    let server = Server::start(&format!(
        "shards = 1\nsocket_send_buffer_bytes = {SEND_BUFFER_BYTES}\nclose_linger_ms = 10000\n"
    ));
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // A small receive window, so what the client does not read piles up on the server's side.
    socket.set_recv_buffer_size(4_096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut client = Client::from_stream(socket.into());
    client.hello();
    let client_port = client.stream.local_addr().unwrap().port();
    let payload = "x".repeat(50_000);
    let mut peak = 0;
    for round in 0..24 {
        let (status, body) = crate::support::publish(
            &server,
            &format!(r#"{{"target":"broadcast","payload":"{payload}"}}"#),
            None,
        );
        assert_eq!(status, 202, "{body}");
        // /proc/net/tcp lists every socket of the host: read it now and then, not each round.
        if round % 6 != 5 {
            continue;
        }
        if let Some(queued) = server_send_queue_bytes(server.addr.port(), client_port) {
            peak = peak.max(queued);
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    if let Some(queued) = server_send_queue_bytes(server.addr.port(), client_port) {
        peak = peak.max(queued);
    }
    assert!(peak > 0, "the server's send queue was seen");
    assert!(
        peak <= 2 * SEND_BUFFER_BYTES + 65_536,
        "{peak} bytes queued in the kernel for a client that never reads"
    );
    // The broadcasts were accepted (202); the shard delivers them after that, so on a loaded
    // machine the cut may come a little after the last publish.
    let cut = "holdfast_slow_consumers_total{shard=\"0\"} 1";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = crate::support::admin_request(
            server.admin.unwrap(),
            "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .1;
        if metrics.contains(cut) {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn subscribe_frame(id: u64, names: &[&str]) -> Vec<u8> {
    use holdfast_protocol::payload::{Subscribe, TopicName};
    let topics: Vec<TopicName<'_>> = names.iter().map(|name| TopicName { name }).collect();
    let mut out = BytesMut::new();
    encode_frame(&mut out, 0, id, &Subscribe { topics: &topics }, 65_536).unwrap();
    out.to_vec()
}

/// After a publish to `topic`, the next frame the client gets is its own echo: no push came.
fn no_push_for(server: &Server, client: &mut Client, topic: &str) {
    let (status, body) = crate::support::publish(
        server,
        &format!(r#"{{"target":"topic","topic":"{topic}","payload":"p"}}"#),
        None,
    );
    assert_eq!(status, 202, "{body}");
    client.send_raw(&crate::support::echo_frame(99, b"after"));
    let next = client.recv();
    assert_eq!((next.kind, next.id), (Kind::Echo, 99), "got {next:?}");
}

/// A Subscribe that fails on one topic (too many, or a bad name third in the list) leaves no
/// topic of it subscribed; one that fits subscribes them all.
#[test]
fn a_subscribe_that_fails_on_any_topic_subscribes_none() {
    let server = Server::start("shards = 1\nmax_topics_per_session = 2\n");
    let mut client = server.connect();
    client.hello();
    client.send_raw(&subscribe_frame(5, &["a", "b", "c"]));
    assert_eq!(
        client.recv().error_code(),
        Some(holdfast_protocol::ErrorCode::LimitExceeded)
    );
    no_push_for(&server, &mut client, "a");
    client.send_raw(&subscribe_frame(6, &["x", "y", "*"]));
    assert_eq!(
        client.recv().error_code(),
        Some(holdfast_protocol::ErrorCode::LimitExceeded)
    );
    no_push_for(&server, &mut client, "x");
    client.send_raw(&subscribe_frame(7, &["a", "b", "a"]));
    let ack = client.recv();
    assert_eq!((ack.kind, ack.id), (Kind::Ack, 7), "got {ack:?}");
    let (status, _) = crate::support::publish(
        &server,
        r#"{"target":"topic","topic":"b","payload":"p"}"#,
        None,
    );
    assert_eq!(status, 202);
    assert_eq!(client.recv().kind, Kind::Push);
}

/// Drain loses no request: sessions keep 4 echoes in flight until they see Goodbye, then wait
/// for the answers to what they already sent and close. Every request gets its answer (before,
/// the requests that arrived after the Goodbye was queued were dropped unanswered).
#[test]
fn drain_answers_every_request_a_session_sent_before_it_saw_goodbye() {
    const SESSIONS: usize = 16;
    const IN_FLIGHT: u64 = 4;
    let mut server =
        Server::start("shards = 2\nclose_linger_ms = 2000\ndrain_timeout_ms = 10000\n");
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let workers: Vec<_> = (0..SESSIONS)
        .map(|_| {
            let mut client = server.connect();
            let started = started_tx.clone();
            std::thread::spawn(move || {
                client.hello();
                let (mut sent, mut answered, mut goodbye) = (0u64, 0u64, false);
                for _ in 0..IN_FLIGHT {
                    sent += 1;
                    client.send_raw(&crate::support::echo_frame(sent, b"in flight"));
                }
                started.send(()).unwrap();
                while !goodbye || answered < sent {
                    let frame = client.recv();
                    match frame.kind {
                        Kind::Echo => {
                            answered += 1;
                            assert_eq!(frame.id, answered, "answers come in request order");
                            if !goodbye {
                                sent += 1;
                                client.send_raw(&crate::support::echo_frame(sent, b"in flight"));
                            }
                        }
                        Kind::Goodbye => goodbye = true,
                        Kind::Ping => {}
                        other => panic!("unexpected {other:?}"),
                    }
                }
                (sent, answered)
            })
        })
        .collect();
    for _ in 0..SESSIONS {
        started_rx.recv().unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    server.signal(libc::SIGTERM);
    let mut total = 0;
    for worker in workers {
        let (sent, answered) = worker.join().expect("every request answered");
        assert_eq!(sent, answered);
        total += sent;
    }
    assert!(
        total > SESSIONS as u64 * IN_FLIGHT,
        "traffic flowed: {total} requests"
    );
    assert!(server.wait_exit(Duration::from_secs(15)).success());
}

/// The first `sent` bytes of an Echo frame whose header promises `len` bytes.
fn partial_echo(id: u64, len: usize, sent: usize) -> Vec<u8> {
    let frame = crate::support::echo_frame(id, &vec![0x33; len - 16]);
    frame[..sent].to_vec()
}

/// Incomplete frames are bounded across a shard, not only per connection: the connection whose
/// partial frame would pass max_partial_frame_bytes_per_shard is refused (limit_exceeded), the
/// ones within the budget complete their frames normally.
#[test]
fn partial_frames_past_the_shard_budget_close_only_the_connection_that_passes_it() {
    let server = Server::start(
        "shards = 1\nmax_frame_bytes = 65536\nmax_partial_frame_bytes_per_shard = 131072\n",
    );
    let mut within: Vec<Client> = (0..2).map(|_| server.connect()).collect();
    for (n, client) in within.iter_mut().enumerate() {
        client.hello();
        client.send_raw(&partial_echo(n as u64 + 1, 60_000, 50_000));
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut over = server.connect();
    over.hello();
    over.send_raw(&partial_echo(9, 60_000, 50_000));
    assert_eq!(
        over.recv().error_code(),
        Some(holdfast_protocol::ErrorCode::LimitExceeded)
    );
    // Closed: gracefully, or with a reset since part of its frame was never read.
    let ending = over.ending();
    assert!(
        matches!(ending, Ending::Eof(_) | Ending::Reset(_)),
        "{ending:?}"
    );
    for (n, client) in within.iter_mut().enumerate() {
        let whole = crate::support::echo_frame(n as u64 + 1, &vec![0x33; 60_000 - 16]);
        client.send_raw(&whole[50_000..]);
        let echo = client.recv();
        assert_eq!((echo.kind, echo.bytes.len()), (Kind::Echo, 60_000));
    }
}

/// A trickle of bytes that never completes a frame is not liveness: the session is pinged and
/// closed at heartbeat_timeout_ms as if silent.
#[test]
fn a_trickle_of_bytes_is_not_liveness() {
    let server = Server::start(
        "heartbeat_interval_ms = 1000\nheartbeat_min_interval_ms = 1000\nheartbeat_timeout_ms = 2000\n",
    );
    let mut client = server.connect();
    client.hello();
    let frame = partial_echo(5, 1_000, 1_000);
    let started = Instant::now();
    let mut writer = client.stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        use std::io::Write;
        for byte in &frame[..600] {
            if writer.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let closed = loop {
        match client.try_recv() {
            Some(frame) if frame.kind == Kind::Ping => continue,
            Some(frame) => break frame,
            None => panic!("closed without an Error"),
        }
    };
    assert_eq!(
        closed.error_code(),
        Some(holdfast_protocol::ErrorCode::HeartbeatTimeout)
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "closed after {elapsed:?} while bytes kept coming"
    );
    trickle.join().unwrap();
}

/// A frame in progress must complete within frame_timeout_ms: a connection that sends a frame's
/// first half and then keeps the session alive with nothing else (no byte, no frame) is closed
/// with limit_exceeded at the frame deadline, well before its heartbeat timeout; a client that
/// completes its frames in pieces is never cut.
#[test]
fn a_frame_not_completed_within_frame_timeout_ms_closes_that_connection() {
    let server = Server::start(
        "frame_timeout_ms = 600\nheartbeat_interval_ms = 10000\nheartbeat_timeout_ms = 30000\ntimer_tick_ms = 10\n",
    );
    let mut stuck = server.connect();
    stuck.hello();
    let mut steady = server.connect();
    steady.hello();
    let started = Instant::now();
    stuck.send_raw(&partial_echo(3, 1_000, 500));
    // The steady client sends its frames in two pieces, 200 ms apart, for longer than the
    // frame timeout: each frame completes in time, so it is never cut.
    let steady_client = std::thread::spawn(move || {
        for id in 1..=6u64 {
            let frame = crate::support::echo_frame(id, &[7; 200]);
            steady.send_raw(&frame[..100]);
            std::thread::sleep(Duration::from_millis(200));
            steady.send_raw(&frame[100..]);
            assert_eq!(steady.recv().id, id);
        }
    });
    let error = stuck.recv();
    let waited = started.elapsed();
    assert_eq!(
        error.error_code(),
        Some(holdfast_protocol::ErrorCode::LimitExceeded),
        "{error:?}"
    );
    assert!(
        waited >= Duration::from_millis(550) && waited < Duration::from_secs(5),
        "closed {waited:?} after its frame began"
    );
    steady_client
        .join()
        .expect("the steady client was never cut");
}

/// Under backpressure a burst that pauses at every event is held once, not re-copied at each
/// pause: the bytes copied into held input stay within the bytes sent (before, every pause
/// copied the rest of the held input again, quadratic in the burst).
#[test]
fn a_paused_burst_of_events_is_copied_once_not_at_every_pause() {
    use holdfast_protocol::payload::Event;
    const EVENTS: u64 = 4_000;
    let server = Server::start(
        "shards = 1\nevent_pipeline_capacity = 1\nevent_overflow_policy = \"backpressure\"\nevent_parked_max = 4\n",
    );
    let mut client = server.connect();
    client.hello();
    let mut burst = BytesMut::new();
    for id in 1..=EVENTS {
        let event = Event {
            topic: "item",
            payload: b"burst",
        };
        encode_frame(
            &mut burst,
            holdfast_protocol::FLAG_ACK_REQUESTED,
            id,
            &event,
            65_536,
        )
        .unwrap();
    }
    client.send_raw(&burst);
    for id in 1..=EVENTS {
        let ack = client.recv();
        assert_eq!((ack.kind, ack.id), (Kind::Ack, id), "got {ack:?}");
    }
    let metrics = crate::support::admin_request(
        server.admin.unwrap(),
        "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .1;
    let copied: u64 = metrics
        .lines()
        .filter(|line| line.starts_with("holdfast_held_input_copied_bytes_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    let parked: u64 = metrics
        .lines()
        .filter(|line| line.starts_with("holdfast_events_parked_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(parked > 10, "the burst paused ({parked} events parked)");
    assert!(
        copied <= 2 * burst.len() as u64,
        "{copied} bytes copied into held input for a {} byte burst",
        burst.len()
    );
}

/// A connection that has not said Hello when the drain starts is told why it is closed:
/// Error(shutting_down) (code 19, never sent before) and a Goodbye with the reconnect hint.
#[test]
fn a_connection_before_hello_at_drain_gets_shutting_down_and_the_hint() {
    let mut server =
        Server::start("shards = 1\nreconnect_after_ms = 700\nreconnect_jitter_ms = 0\n");
    let mut early = server.connect();
    // One listener accepts in order: once a later session is answered, `early` is accepted.
    let mut session = server.connect();
    session.hello();
    server.signal(libc::SIGTERM);
    let error = early.recv();
    assert_eq!(
        error.error_code(),
        Some(holdfast_protocol::ErrorCode::ShuttingDown),
        "{error:?}"
    );
    assert_eq!(early.recv().goodbye_reconnect_after_ms(), Some(700));
    assert_eq!(early.ending(), Ending::Eof(vec![]));
    drop(session);
    assert!(server.wait_exit(Duration::from_secs(15)).success());
}
