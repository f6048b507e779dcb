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

#[test]
fn client_that_does_not_read_is_cut_off_as_slow_consumer() {
    let server =
        Server::start("shards = 1\nmax_outbound_bytes = 131072\nclose_linger_ms = 10000\n");
    let mut client = small_window_client(&server);
    client.hello();
    let mut bystander = server.connect();
    bystander.hello();

    // Write ~16 MiB of echoes without reading any reply.
    let mut writer = client.stream.try_clone().unwrap();
    let frame = echo_frame(1, &[0x5a; 32 * 1024]);
    let written = std::thread::spawn(move || {
        use std::io::Write;
        let mut frames = 0u32;
        while frames < 512 && writer.write_all(&frame).is_ok() {
            frames += 1;
        }
        frames
    });
    let frames_written = written.join().unwrap();
    assert!(frames_written > 8, "wrote {frames_written} frames");

    let mut echoes = 0u32;
    let error = loop {
        let frame = client.try_recv().expect("an Error frame before the close");
        match frame.kind {
            Kind::Echo => echoes += 1,
            Kind::Error => break frame,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(error.error_code(), Some(ErrorCode::SlowConsumer));
    assert!(
        echoes < frames_written,
        "cut off before every reply was queued ({echoes} of {frames_written})"
    );
    assert_eq!(client.ending(), Ending::Eof(vec![]));

    let probe = echo_frame(2, b"shard not stalled");
    bystander.send_raw(&probe);
    assert_eq!(bystander.recv().bytes, probe);
    std::thread::sleep(Duration::from_millis(10));
}
