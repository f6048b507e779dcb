//! How a session's bytes are read: poll readiness + recv while idle, a multishot recv while
//! busy (multishot_recv_max_per_shard), and back to a poll once silent. The swap must never
//! lose, reorder or duplicate a byte.

use std::time::Duration;

use holdfast_protocol::Kind;

use crate::metrics::{counter_sum, scrape};
use crate::support::{echo_frame, Client, Server};

const STARTED: &str = "holdfast_multishot_recvs_started_total";

/// Short heartbeats so a silent session is swapped back to a poll within a second.
const FAST_HEARTBEAT: &str = "shards = 1\ntimer_tick_ms = 10\nheartbeat_min_interval_ms = 100\n\
    heartbeat_interval_ms = 300\nheartbeat_timeout_ms = 10000\n";

/// Echoes one frame at a time, then `pipelined` frames in one write; every reply byte-exact
/// and in order.
fn echo_burst(client: &mut Client, first_id: u64, one_by_one: u64, pipelined: u64) {
    for id in first_id..first_id + one_by_one {
        let frame = echo_frame(id, format!("one by one {id}").as_bytes());
        client.send_raw(&frame);
        assert_eq!(client.recv().bytes, frame);
    }
    let first = first_id + one_by_one;
    let frames: Vec<Vec<u8>> = (first..first + pipelined)
        .map(|id| echo_frame(id, format!("pipelined {id}").as_bytes()))
        .collect();
    client.send_raw(&frames.concat());
    for frame in &frames {
        assert_eq!(&client.recv().bytes, frame);
    }
}

#[test]
fn a_busy_session_reads_through_a_multishot_recv_and_goes_back_to_poll_when_silent() {
    let server = Server::start(FAST_HEARTBEAT);
    let mut client = server.connect();
    client.hello();
    echo_burst(&mut client, 0, 50, 0);
    let after_burst = counter_sum(&scrape(&server), STARTED);
    assert_eq!(after_burst, 1.0, "one swap to a multishot recv while busy");

    // Silent past heartbeat_interval_ms: the server pings, and swaps the recv for a poll.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(client.recv().kind, Kind::Ping);
    client.send(Kind::Pong, 0, &[]);
    echo_burst(&mut client, 1_000, 50, 0);
    let after_second_burst = counter_sum(&scrape(&server), STARTED);
    assert_eq!(
        after_second_burst, 2.0,
        "busy again after going back to a poll: a second swap"
    );
    // A pipelined burst of ~60 KB (a full-buffer read sends it back to poll + recv
    // mid-stream): every reply still byte-exact and in order.
    echo_burst(&mut client, 2_000, 0, 2_000);
}

#[test]
fn with_multishot_recv_off_busy_sessions_keep_poll_and_recv() {
    let server = Server::start(&format!(
        "{FAST_HEARTBEAT}multishot_recv_max_per_shard = 0\n"
    ));
    let mut client = server.connect();
    client.hello();
    echo_burst(&mut client, 0, 50, 200);
    assert_eq!(counter_sum(&scrape(&server), STARTED), 0.0);
}

#[test]
fn multishot_recvs_are_capped_per_shard_and_sessions_past_the_cap_still_work() {
    // Heartbeats slow enough that no session goes back to a poll during the test.
    let server = Server::start("shards = 1\nmultishot_recv_max_per_shard = 2\n");
    let mut clients: Vec<Client> = (0..4).map(|_| server.connect()).collect();
    for client in &mut clients {
        client.hello();
    }
    for (n, client) in clients.iter_mut().enumerate() {
        echo_burst(client, n as u64 * 1_000, 30, 0);
    }
    assert_eq!(counter_sum(&scrape(&server), STARTED), 2.0, "the cap holds");
    // A session holding a multishot recv closes: its place is free for the next busy one.
    drop(clients.remove(0));
    std::thread::sleep(Duration::from_millis(100));
    for (n, client) in clients.iter_mut().enumerate() {
        echo_burst(client, 10_000 + n as u64 * 1_000, 30, 0);
    }
    assert_eq!(counter_sum(&scrape(&server), STARTED), 3.0);
}

/// A full completion queue ends multishot polls (the kernel cannot post their next
/// completion). A poll armed again at once on a socket whose bytes still wait for a receive
/// buffer fires at once and, the queue still full, ends again: at 1M sessions this looped at
/// ~300,000 POLL_ADDs per second (docs/CAPACITY.md, "What broke on the way"). Here: the server
/// stopped while 1,500 clients connect and send their Hello, so on resume it accepts them in a
/// burst and arms 1,500 polls that all fire at once into a 128-entry completion queue, with
/// 2 receive buffers to read them. Every session gets its Welcome, and the server reaps a
/// handful of completions per session, not hundreds.
#[test]
fn polls_ended_by_a_full_completion_queue_wait_for_the_read_before_coming_back() {
    const SESSIONS: usize = 1_500;
    const COMPLETIONS_PER_SESSION_MAX: f64 = 12.0;
    let server = Server::start(&format!(
        "shards = 1\nring_sq_entries = 64\nring_cq_entries = 128\nrecv_buffers_per_shard = 2\n\
         multishot_recv_max_per_shard = 0\nmax_connections_per_shard = {SESSIONS}\n\
         hello_timeout_ms = 60000\n"
    ));
    let completions = "holdfast_ring_completions_total";
    let before = counter_sum(&scrape(&server), completions);
    stop(&server);
    let mut clients: Vec<Client> = (0..SESSIONS).map(|_| server.connect()).collect();
    for client in &mut clients {
        client.send(Kind::Hello, 1, &[]);
    }
    server.signal(libc::SIGCONT);
    for (n, client) in clients.iter_mut().enumerate() {
        let welcome = client.recv();
        assert_eq!(welcome.kind, Kind::Welcome, "session {n}: {welcome:?}");
    }
    let per_session = (counter_sum(&scrape(&server), completions) - before) / SESSIONS as f64;
    assert!(
        per_session <= COMPLETIONS_PER_SESSION_MAX,
        "{per_session:.1} completions per session (at most {COMPLETIONS_PER_SESSION_MAX})"
    );
}

/// Stops the server (SIGSTOP) and waits until every one of its threads is stopped (the signal
/// is asynchronous).
fn stop(server: &Server) {
    server.signal(libc::SIGSTOP);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let all_stopped = || {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", server.pid())).unwrap();
        tasks.filter_map(Result::ok).all(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // The state follows the parenthesised command name: "pid (comm) T ...".
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
            matches!(state, Some(Some('T' | 't')))
        })
    };
    while !all_stopped() {
        assert!(std::time::Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
}
