use holdfast_protocol::Kind;

use crate::slow_consumer::small_window_client;
use crate::support::{echo_frame, Server};

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
    std::thread::sleep(std::time::Duration::from_millis(200));
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
    assert!(client.closed_by_server());
    drop(client);
    let status = server.wait_exit(std::time::Duration::from_secs(15));
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
        assert!(client.closed_by_server());
    }
    drop(clients);
    assert!(server
        .wait_exit(std::time::Duration::from_secs(15))
        .success());
}
