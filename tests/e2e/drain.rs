use std::time::{Duration, Instant};

use holdfast_protocol::Kind;

use crate::metrics::{counter_sum, scrape};
use crate::slow_consumer::small_window_client;
use crate::support::{echo_frame, Ending, Server};

#[test]
fn sigterm_delivers_queued_frames_then_goodbye_and_exits_zero() {
    let mut server = Server::start(
        "shards = 2\nmax_outbound_bytes = 16777216\nreconnect_after_ms = 1000\nreconnect_jitter_ms = 500\ndrain_timeout_ms = 10000\n",
    );
    let mut client = small_window_client(&server);
    client.hello();
    let frame = echo_frame(9, &[0xab; 16 * 1024]);
    const FRAMES: usize = 256; // 4 MiB of replies: most wait in the server's queue
    for _ in 0..FRAMES {
        client.send_raw(&frame);
    }
    // SIGTERM only once the server has read every echo (its replies are then queued or sent),
    // not after a guessed sleep: the promise under test is about frames already taken in.
    wait_for_frames_received(&server, FRAMES as f64 + 1.0);
    server.signal(libc::SIGTERM);

    let mut echoes = 0;
    let goodbye = loop {
        let received = client.recv();
        match received.kind {
            Kind::Echo => {
                assert_eq!(received.bytes, frame);
                echoes += 1;
            }
            Kind::Goodbye => break received,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        echoes, FRAMES,
        "every queued reply delivered before Goodbye"
    );
    let hint = goodbye.goodbye_reconnect_after_ms().unwrap();
    assert!(
        (1000..=1500).contains(&hint),
        "reconnect hint {hint} within base + jitter"
    );
    assert_eq!(client.ending(), Ending::Eof(vec![]));
    drop(client);
    let status = server.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn drain_with_idle_sessions_exits_promptly() {
    let mut server = Server::start("shards = 2\n");
    let mut clients: Vec<_> = (0..10).map(|_| server.connect()).collect();
    for client in &mut clients {
        client.hello();
    }
    server.signal(libc::SIGTERM);
    for client in &mut clients {
        assert_eq!(client.recv().kind, Kind::Goodbye);
        assert_eq!(client.ending(), Ending::Eof(vec![]));
    }
    drop(clients);
    assert!(server.wait_exit(Duration::from_secs(15)).success());
}

/// Polls /metrics until the server has counted `frames` received frames (over all shards).
fn wait_for_frames_received(server: &Server, frames: f64) {
    const WAIT_LIMIT: Duration = Duration::from_secs(10);
    let start = Instant::now();
    loop {
        let received = counter_sum(&scrape(server), "holdfast_frames_received_total");
        if received >= frames {
            return;
        }
        assert!(
            start.elapsed() < WAIT_LIMIT,
            "the server read {received} of {frames} frames in {WAIT_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A server whose stdout and stderr readers have gone (a `| head` pipe, a log shipper that
/// died) still drains and exits on SIGTERM: a log line that cannot be written is dropped, it
/// does not take the signal thread down with it.
#[test]
fn sigterm_drains_and_exits_zero_after_stdout_and_stderr_readers_are_gone() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("holdfast.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshards = 1\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("HOLDFAST_LOG", "info") // the drain logs at info: those writes must fail
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("holdfast binary runs");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("holdfast listening on ") {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "no listening line"
        );
    }
    drop(stdout);
    drop(child.stderr.take());

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            panic!("server did not exit within 10 s of SIGTERM with its log pipes closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
}

/// From the moment draining starts, `POST /publish` takes nothing: 503 with `Retry-After`,
/// for topic and broadcast targets alike, so no publish is accepted that the draining
/// sessions would never get. Before the drain the same publish is accepted.
#[test]
fn publish_is_refused_with_503_and_retry_after_from_drain_start() {
    let mut server =
        Server::start("shards = 2\nclose_linger_ms = 5000\ndrain_timeout_ms = 10000\n");
    let admin = server.admin.expect("admin listener on");
    let publish_raw = |json: &str| {
        let raw = format!(
            "POST /publish HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{json}",
            json.len()
        );
        let mut stream = std::net::TcpStream::connect(admin).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        std::io::Write::write_all(&mut stream, raw.as_bytes()).unwrap();
        crate::support::read_http_response(&mut stream).expect("an answer")
    };
    let topic = r#"{"target":"topic","topic":"news","payload":"x"}"#;
    let broadcast = r#"{"target":"broadcast","payload":"x"}"#;
    assert_eq!(publish_raw(topic).status, 202, "accepted before the drain");
    // A session that stays connected after its Goodbye keeps the drain (and admin) going.
    let mut client = server.connect();
    client.hello();
    server.signal(libc::SIGTERM);
    assert_eq!(client.recv().kind, Kind::Goodbye, "the drain has started");
    for json in [topic, broadcast] {
        let answer = publish_raw(json);
        assert_eq!(answer.status, 503, "{json}: {answer:?}");
        assert_eq!(answer.header("retry-after"), Some("1"), "{answer:?}");
        assert!(answer.body.contains("draining"), "{answer:?}");
    }
    drop(client);
    assert!(server.wait_exit(Duration::from_secs(15)).success());
}
