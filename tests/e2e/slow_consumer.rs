use std::net::TcpStream;
use std::time::Duration;

use holdfast_protocol::{ErrorCode, Kind};
use socket2::{Domain, Socket, Type};

use crate::support::{echo_frame, Client, Ending, Server};

/// A client whose receive buffer is tiny, so the server's replies back up quickly.
pub fn small_window_client(server: &Server) -> Client {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    Client::from_stream(TcpStream::from(socket))
}

/// Replies push back (PROTOCOL.md, "Flow control"): a client that writes requests much faster
/// than it reads answers is not cut; the server stops reading it until the answers drain, and
/// TCP flow control slows its writes. Every echo arrives, in order, and no Error is sent.
#[test]
fn a_pipelining_client_that_reads_slowly_gets_every_reply_and_is_not_cut() {
    const FRAMES: u64 = 2_048;
    let server =
        Server::start("shards = 1\nmax_outbound_bytes = 131072\nclose_linger_ms = 10000\n");
    let mut client = small_window_client(&server);
    client.hello();
    let mut writer = client.stream.try_clone().unwrap();
    let written = std::thread::spawn(move || {
        use std::io::Write;
        for id in 1..=FRAMES {
            writer
                .write_all(&echo_frame(id, &[0x5a; 4 * 1024]))
                .unwrap();
        }
    });
    for id in 1..=FRAMES {
        let frame = client.recv();
        assert_eq!((frame.kind, frame.id), (Kind::Echo, id), "got {frame:?}");
        if id % 64 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    written.join().unwrap();
}

/// Pushes are what a client did not ask for, so they cannot push back: a client that reads
/// none of them is cut as a slow consumer (Error slow_consumer, then close), and the shard goes
/// on serving everyone else.
#[test]
fn a_client_that_does_not_read_its_pushes_is_cut_off_as_slow_consumer() {
    let server = Server::start(
        "shards = 1\nmax_outbound_bytes = 131072\nclose_linger_ms = 10000\nsocket_send_buffer_bytes = 16384\n",
    );
    let mut client = small_window_client(&server);
    client.hello();
    let mut bystander = server.connect();
    bystander.hello();
    let payload = "p".repeat(30_000);
    let mut cut = false;
    for _ in 0..64 {
        let (status, _) = crate::support::publish(
            &server,
            &format!(r#"{{"target":"broadcast","payload":"{payload}"}}"#),
            None,
        );
        assert_eq!(status, 202);
        // The bystander reads its pushes and is never cut.
        assert_eq!(bystander.recv().kind, Kind::Push);
        let metrics = crate::support::admin_request(
            server.admin.unwrap(),
            "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .1;
        if metrics.contains("holdfast_slow_consumers_total{shard=\"0\"} 1") {
            cut = true;
            break;
        }
    }
    assert!(cut, "the non-reading client was cut");
    let error = loop {
        let frame = client.try_recv().expect("an Error frame before the close");
        match frame.kind {
            Kind::Push | Kind::Ping => {}
            Kind::Error => break frame,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(error.error_code(), Some(ErrorCode::SlowConsumer));
    assert_eq!(client.ending(), Ending::Eof(vec![]));

    let probe = echo_frame(2, b"shard not stalled");
    bystander.send_raw(&probe);
    assert_eq!(bystander.recv().bytes, probe);
}
