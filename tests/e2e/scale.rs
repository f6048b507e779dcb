//! One server process holds more sessions than RLIMIT_NOFILE (20,000 here): accepted sockets
//! are direct descriptors in each shard ring's table, not process fds. The client side needs
//! more sockets than one process may open, so the test re-runs its own binary as "holder"
//! processes, each from its own loopback source address.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use holdfast_protocol::{encode_raw, next_frame, Kind};
use socket2::{Domain, Socket, Type};

use crate::support::{echo_frame, Server};

const HOLDERS: usize = 2;
const SESSIONS_PER_HOLDER: usize = 15_000;
const HOLD_DEADLINE_S: u64 = 120;

#[test]
fn one_process_holds_more_sessions_than_rlimit_nofile() {
    let (nofile, _) = rlimit_nofile();
    let total = HOLDERS * SESSIONS_PER_HOLDER;
    assert!(
        total as u64 > nofile,
        "test needs more sessions ({total}) than RLIMIT_NOFILE ({nofile})"
    );
    let server =
        Server::start("shards = 2\nmax_connections_per_shard = 18000\nhello_timeout_ms = 60000\n");
    let exe = std::env::current_exe().unwrap();
    // A source network of its own per run (127.N.h.2): a rerun's binds never wait on the
    // ports an earlier run left in TIME_WAIT on the same source address.
    let source_net = 20 + std::process::id() % 200;
    let dir = tempfile::tempdir().unwrap();
    let mut holders = Vec::new();
    let mut reports = Vec::new();
    for h in 0..HOLDERS {
        let report = dir.path().join(format!("holder-{h}"));
        let child = Command::new(&exe)
            .args(["--exact", "scale::holder", "--ignored", "--test-threads=1"])
            .env(
                "HOLDFAST_HOLDER",
                format!(
                    "{},{},127.{}.{}.2,{}",
                    server.addr,
                    SESSIONS_PER_HOLDER,
                    source_net,
                    h + 2,
                    report.display()
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        holders.push(child);
        reports.push(report);
    }
    let deadline = Instant::now() + Duration::from_secs(HOLD_DEADLINE_S);
    for (report, holder) in reports.iter().zip(&mut holders) {
        let held = loop {
            if let Ok(text) = std::fs::read_to_string(report) {
                if text.ends_with('\n') {
                    break text;
                }
            }
            if let Some(status) = holder.try_wait().unwrap() {
                panic!("holder exited early: {status:?}");
            }
            assert!(
                Instant::now() < deadline,
                "holders did not report within {HOLD_DEADLINE_S} s"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(held, format!("held {SESSIONS_PER_HOLDER}\n"));
    }
    let fds = server.open_fds();
    assert!(
        fds < 200,
        "sessions are not process fds: server has {fds} open"
    );
    let mut probe = server.connect();
    probe.hello();
    let frame = echo_frame(1, b"30k and still answering");
    probe.send_raw(&frame);
    assert_eq!(probe.recv().bytes, frame);
    for mut holder in holders {
        drop(holder.stdin.take());
        let _ = holder.wait();
    }
}

fn rlimit_nofile() -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (limit.rlim_cur, limit.rlim_max)
}

/// Not a test on its own: the body of a holder process (see above).
#[test]
#[ignore = "run as a child process by one_process_holds_more_sessions_than_rlimit_nofile"]
fn holder() {
    let Ok(spec) = std::env::var("HOLDFAST_HOLDER") else {
        return;
    };
    let parts: Vec<&str> = spec.split(',').collect();
    let server: SocketAddr = parts[0].parse().unwrap();
    let count: usize = parts[1].parse().unwrap();
    let source: Ipv4Addr = parts[2].parse().unwrap();
    let report = parts[3];
    let mut hello = BytesMut::new();
    encode_raw(&mut hello, Kind::Hello, 0, 1, &[], 65_536).unwrap();
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.bind(&SocketAddrV4::new(source, 0).into()).unwrap();
        socket.connect(&server.into()).unwrap();
        let mut stream = TcpStream::from(socket);
        stream.write_all(&hello).unwrap();
        streams.push(stream);
    }
    for stream in &mut streams {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = [0u8; 256];
        let mut have = 0;
        loop {
            let n = std::io::Read::read(stream, &mut buf[have..]).unwrap();
            assert!(n > 0, "server closed a held session");
            have += n;
            if let Some(frame) = next_frame(&buf[..have], 65_536).unwrap() {
                assert_eq!(frame.header.kind, Kind::Welcome);
                break;
            }
        }
    }
    std::fs::write(report, format!("held {}\n", streams.len())).unwrap();
    // Hold until the parent closes our stdin.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}
