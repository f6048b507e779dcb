//! Baseline: the physical limit of a broadcast on this machine. Sessions get what
//! `holdfast-bench push` needs (Hello -> Welcome, Subscribe -> Ack, Ping -> Pong, from one mio
//! thread); `POST /publish` with `{"target": "broadcast", ...}` on the admin listener encodes ONE
//! Push frame (topic "*", the next seq, the payload) and hands it to every subscribed socket
//! through io_uring, one Send per socket from the same buffer, submitted in batches of
//! `SEND_BATCH_MAX` as fast as the kernel takes them. Nothing else: no per-session queue, no
//! copy per socket, no shard hop. That is the floor Holdfast's broadcast is measured against.
//! `holdfast-baseline-push --listen 127.0.0.1:7879 --admin-listen 127.0.0.1:7880`

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::BytesMut;
use holdfast_bench::echo_server::{answer_frames, BadFrame, BASELINE_MAX_FRAME_BYTES};
use holdfast_protocol::{encode_frame, encode_raw, payload, Kind, HEADER_BYTES};
use io_uring::{opcode, types, IoUring};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sends in flight at most (the ring's submission queue entries).
const SEND_BATCH_MAX: u32 = 4096;
/// Read buffer of the session thread (shared by all sessions: one thread reads them in turn).
const READ_BYTES: usize = 16 * 1024;
/// Largest publish request (headers plus body) the admin listener reads.
const PUBLISH_REQUEST_BYTES_MAX: usize = 1024 * 1024;
/// The topic of broadcast Pushes (as Holdfast's).
const BROADCAST_TOPIC: &str = "*";
const LISTENER: Token = Token(usize::MAX);
/// mio events handled per poll.
const EVENTS_PER_POLL: usize = 1024;

/// File descriptors of subscribed sessions. The session thread removes a socket here before it
/// closes it, and the broadcast holds the lock while its sends are in flight, so a send never
/// reaches a reused descriptor.
type Subscribers = Arc<Mutex<Vec<RawFd>>>;

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    out: BytesMut,
    subscribed: bool,
}

fn main() -> std::io::Result<()> {
    let (listen, admin) = args();
    let subscribers: Subscribers = Arc::default();
    let for_sessions = Arc::clone(&subscribers);
    let listener = TcpListener::bind(listen)?;
    std::thread::Builder::new()
        .name("sessions".into())
        .spawn(move || {
            if let Err(e) = sessions(listener, &for_sessions) {
                eprintln!("holdfast-baseline-push: sessions thread: {e}");
                std::process::exit(1);
            }
        })?;
    let admin_listener = StdListener::bind(admin)?;
    let mut ring = IoUring::new(SEND_BATCH_MAX)?;
    eprintln!("holdfast-baseline-push listening on {listen}, publish at http://{admin}/publish");
    let mut seq = 0u64;
    for stream in admin_listener.incoming() {
        let Ok(stream) = stream else { continue };
        if let Err(e) = serve_admin(stream, &subscribers, &mut ring, &mut seq) {
            eprintln!("holdfast-baseline-push: admin connection: {e}");
        }
    }
    Ok(())
}

fn args() -> (SocketAddr, SocketAddr) {
    let mut listen: SocketAddr = "127.0.0.1:7879".parse().expect("static");
    let mut admin: SocketAddr = "127.0.0.1:7880".parse().expect("static");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        let parsed = value
            .parse()
            .unwrap_or_else(|e| usage(&format!("{arg}: {e}")));
        match arg.as_str() {
            "--listen" => listen = parsed,
            "--admin-listen" => admin = parsed,
            other => usage(&format!("unknown argument {other}")),
        }
    }
    (listen, admin)
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\nusage: holdfast-baseline-push [--listen 127.0.0.1:7879] [--admin-listen 127.0.0.1:7880]");
    std::process::exit(2)
}

/// The session thread: accepts, answers Hello/Subscribe/Ping, keeps the subscriber list.
fn sessions(mut listener: TcpListener, subscribers: &Subscribers) -> std::io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(EVENTS_PER_POLL);
    let mut conns: HashMap<usize, Conn> = HashMap::new();
    let mut next_token = 0usize;
    let mut buf = vec![0u8; READ_BYTES];
    loop {
        poll.poll(&mut events, None)?;
        for event in &events {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let token = Token(next_token);
                            next_token += 1;
                            poll.registry().register(
                                &mut stream,
                                token,
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            conns.insert(
                                token.0,
                                Conn {
                                    stream,
                                    input: Vec::new(),
                                    out: BytesMut::new(),
                                    subscribed: false,
                                },
                            );
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let Some(conn) = conns.get_mut(&event.token().0) else {
                continue;
            };
            let keep = serve_conn(conn, &mut buf, subscribers, event.token().0 as u64 + 1);
            if !keep {
                let mut conn = conns.remove(&event.token().0).expect("present");
                if conn.subscribed {
                    let fd = conn.stream.as_raw_fd();
                    subscribers
                        .lock()
                        .expect("subscribers lock")
                        .retain(|s| *s != fd);
                }
                let _ = poll.registry().deregister(&mut conn.stream);
            }
        }
    }
}

/// Reads what is there, answers it, writes what it can; false: close the connection.
fn serve_conn(conn: &mut Conn, buf: &mut [u8], subscribers: &Subscribers, session_id: u64) -> bool {
    loop {
        match conn.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => conn.input.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    let consumed = match answer(&conn.input, &mut conn.out, session_id) {
        Ok((consumed, subscribe)) => {
            if subscribe && !conn.subscribed {
                conn.subscribed = true;
                subscribers
                    .lock()
                    .expect("subscribers lock")
                    .push(conn.stream.as_raw_fd());
            }
            consumed
        }
        Err(BadFrame) => return false,
    };
    conn.input.drain(..consumed);
    while !conn.out.is_empty() {
        match conn.stream.write(&conn.out) {
            Ok(n) => {
                let _ = conn.out.split_to(n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Answers the complete frames at the front of `input`: Subscribe gets an Ack (and makes the
/// session a subscriber), the rest goes to the echo baselines' logic. Returns the bytes consumed
/// and whether a Subscribe was seen.
fn answer(input: &[u8], out: &mut BytesMut, session_id: u64) -> Result<(usize, bool), BadFrame> {
    let mut consumed = 0;
    let mut subscribe = false;
    while let Some(header) = input[consumed..].first_chunk::<HEADER_BYTES>() {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len < HEADER_BYTES || len > BASELINE_MAX_FRAME_BYTES as usize {
            return Err(BadFrame);
        }
        if input.len() - consumed < len {
            break;
        }
        let frame = &input[consumed..consumed + len];
        if Kind::from_u8(frame[5]) == Some(Kind::Subscribe) {
            let id = u64::from_le_bytes(frame[8..16].try_into().expect("8 bytes"));
            encode_raw(out, Kind::Ack, 0, id, &[], BASELINE_MAX_FRAME_BYTES)
                .map_err(|_| BadFrame)?;
            subscribe = true;
        } else {
            let answered = answer_frames(frame, out, session_id)?;
            assert_eq!(answered, len, "one whole frame is answered whole");
        }
        consumed += len;
    }
    Ok((consumed, subscribe))
}

/// One admin connection (keep-alive): `POST /publish` requests until the client closes.
fn serve_admin(
    stream: StdStream,
    subscribers: &Subscribers,
    ring: &mut IoUring,
    seq: &mut u64,
) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(usize::MAX);
                }
            }
        }
        if content_length > PUBLISH_REQUEST_BYTES_MAX {
            reply(&mut writer, 413, r#"{"error":"request too large"}"#)?;
            return Ok(());
        }
        let mut body = vec![0u8; content_length];
        reader.read_exact(&mut body)?;
        if !request_line.starts_with("POST /publish ") {
            reply(&mut writer, 404, r#"{"error":"only POST /publish"}"#)?;
            continue;
        }
        match publish(&body, subscribers, ring, seq) {
            Ok(published) => reply(&mut writer, 202, &format!(r#"{{"seq":{published}}}"#))?,
            Err(error) => reply(
                &mut writer,
                400,
                &serde_json::json!({ "error": error }).to_string(),
            )?,
        }
    }
}

fn reply(writer: &mut StdStream, status: u16, body: &str) -> std::io::Result<()> {
    let reason = match status {
        202 => "Accepted",
        404 => "Not Found",
        413 => "Payload Too Large",
        _ => "Bad Request",
    };
    write!(
        writer,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Encodes the Push once and sends it to every subscriber; returns its seq.
fn publish(
    body: &[u8],
    subscribers: &Subscribers,
    ring: &mut IoUring,
    seq: &mut u64,
) -> Result<u64, String> {
    let request: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))?;
    if request["target"] != "broadcast" {
        return Err("this baseline publishes only {\"target\": \"broadcast\"}".into());
    }
    let payload = base64::engine::general_purpose::STANDARD
        .decode(request["payload_base64"].as_str().unwrap_or(""))
        .map_err(|e| format!("payload_base64: {e}"))?;
    *seq += 1;
    let mut frame = BytesMut::new();
    let push = payload::Push {
        topic: BROADCAST_TOPIC,
        seq: *seq,
        payload: &payload,
    };
    encode_frame(&mut frame, 0, 0, &push, BASELINE_MAX_FRAME_BYTES)
        .map_err(|e| format!("encode: {e}"))?;
    let fds = subscribers.lock().expect("subscribers lock");
    broadcast(ring, &fds, &frame).map_err(|e| format!("io_uring: {e}"))?;
    Ok(*seq)
}

/// Sends `frame` to each of `fds` through io_uring: one Send per socket, batches of
/// `SEND_BATCH_MAX`. A short or refused send (full socket buffer) is finished with blocking
/// writes, so every subscriber gets the whole frame.
fn broadcast(ring: &mut IoUring, fds: &[RawFd], frame: &[u8]) -> std::io::Result<()> {
    for batch in fds.chunks(SEND_BATCH_MAX as usize) {
        {
            let mut sq = ring.submission();
            for (i, fd) in batch.iter().enumerate() {
                let send = opcode::Send::new(types::Fd(*fd), frame.as_ptr(), frame.len() as u32)
                    .build()
                    .user_data(i as u64);
                // SAFETY: `frame` outlives the batch (submit_and_wait below returns only after
                // every send of the batch completed), and the queue has room for a whole batch.
                unsafe { sq.push(&send) }.expect("the batch fits the submission queue");
            }
        }
        ring.submit_and_wait(batch.len())?;
        let mut unfinished = Vec::new();
        for cqe in ring.completion() {
            let sent = cqe.result();
            if sent != frame.len() as i32 {
                unfinished.push((batch[cqe.user_data() as usize], sent.max(0) as usize));
            }
        }
        for (fd, sent) in unfinished {
            finish_blocking(fd, &frame[sent..])?;
        }
    }
    Ok(())
}

/// Writes the rest of a frame to a non-blocking socket, waiting in poll(2) while it is full.
fn finish_blocking(fd: RawFd, mut rest: &[u8]) -> std::io::Result<()> {
    while !rest.is_empty() {
        // SAFETY: `rest` is a live slice; send reads at most rest.len() bytes from it.
        let n = unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL) };
        if n >= 0 {
            rest = &rest[n as usize..];
            continue;
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 1_000) };
            }
            std::io::ErrorKind::Interrupted => {}
            // A session that went away is not a broadcast failure.
            _ => return Ok(()),
        }
    }
    Ok(())
}
