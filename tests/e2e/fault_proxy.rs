//! A fault-injecting TCP proxy for the e2e tests: the user-space stand-in for netem and Chaos
//! Mesh (this kernel has no netem). It listens on 127.0.0.1:0 and forwards each accepted
//! connection to the real server; each direction of each connection can be given, at any time:
//!
//! - `latency`: every chunk is delivered this long after the proxy read it;
//! - `bytes_per_s`: a bandwidth cap, paced in slices of 1/50 s;
//! - a stall: nothing is forwarded until an instant (the source is still read into a small
//!   bounded queue, then TCP flow control holds the sender, as a stalled path would);
//! - `byte_gap`: byte-at-a-time delivery, one byte per write (TCP_NODELAY: one segment each),
//!   this long apart;
//! - `reset_after_bytes`: after k more bytes, both sides are reset (RST), wherever that falls in
//!   a frame;
//! - `blackhole`: nothing more is forwarded and nothing is ever closed (a half-open path, like a
//!   peer behind a dead NAT); what the source sends is read and kept for inspection.
//!
//! Threads, not async: each link has a reader and a writer per direction (four threads), joined
//! through a bounded queue of [`QUEUE_CHUNKS`] chunks of at most [`CHUNK_BYTES`], so a stalled
//! link holds at most ~80 KiB in the proxy. Tests open a handful of links; every thread polls
//! the link's `done` flag at least every [`POLL`] and all end when the proxy is dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::Client;

/// Largest chunk one read takes from a source.
pub const CHUNK_BYTES: usize = 16 * 1024;
/// Chunks queued between a direction's reader and writer.
pub const QUEUE_CHUNKS: usize = 4;
/// How often blocked threads look at the link's `done` flag and at changed faults.
const POLL: Duration = Duration::from_millis(10);
/// Bytes kept per direction of what a blackhole swallowed.
pub const SWALLOWED_KEEP_BYTES: usize = 64 * 1024;
/// A bandwidth cap forwards in slices of this fraction of a second.
const PACE_SLICES_PER_S: u64 = 50;
/// How long a test waits for the proxy to have accepted its own connection.
const LINK_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    ToServer = 0,
    /// Server to client.
    ToClient = 1,
}

/// Faults on one direction of one link. The default forwards at once, untouched.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    pub latency: Duration,
    pub bytes_per_s: Option<u64>,
    pub stall_until: Option<Instant>,
    /// Byte-at-a-time delivery with this gap after each byte.
    pub byte_gap: Option<Duration>,
    pub reset_after_bytes: Option<u64>,
    pub blackhole: bool,
}

/// How a source side of a link ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceEnd {
    Eof,
    /// A read error (reset, or reset by the proxy itself).
    Error,
}

struct Shared {
    client_addr: SocketAddr,
    client: TcpStream,
    upstream: TcpStream,
    faults: [Mutex<Faults>; 2],
    /// How each direction's source ended (ToServer: the client; ToClient: the server), set by
    /// its reader.
    source_end: [Mutex<Option<SourceEnd>>; 2],
    /// When and how each direction ended, set by its writer once everything read before the
    /// end has been forwarded or swallowed (so `swallowed` is complete by then).
    ended: [Mutex<Option<(Instant, SourceEnd)>>; 2],
    swallowed: [Mutex<Vec<u8>>; 2],
    forwarded_bytes: [AtomicU64; 2],
    /// write(2) calls that forwarded those bytes (byte-at-a-time: one per byte).
    writes: [AtomicU64; 2],
    /// The proxy reset this link itself (`reset_after_bytes`).
    reset_by_proxy: AtomicBool,
    done: AtomicBool,
}

/// One proxied connection, shared with its four threads; the handle a test uses to inject
/// faults and to see what the server did.
#[derive(Clone)]
pub struct Link {
    shared: Arc<Shared>,
}

impl Link {
    /// Changes the faults of one direction (applies to bytes already queued too).
    pub fn set(&self, direction: Direction, faults: Faults) {
        *self.shared.faults[direction as usize].lock().unwrap() = faults;
    }

    /// Stops forwarding `direction` for `duration` from now.
    pub fn stall(&self, direction: Direction, duration: Duration) {
        self.shared.faults[direction as usize]
            .lock()
            .unwrap()
            .stall_until = Some(Instant::now() + duration);
    }

    /// Half-open from now on, both directions: nothing forwarded, nothing closed.
    pub fn blackhole(&self) {
        for faults in &self.shared.faults {
            faults.lock().unwrap().blackhole = true;
        }
    }

    /// When the server closed its side of this link (EOF or reset), if it did: recorded once
    /// everything it sent before has been passed on (or swallowed).
    pub fn server_ended(&self) -> Option<(Instant, SourceEnd)> {
        *self.shared.ended[Direction::ToClient as usize]
            .lock()
            .unwrap()
    }

    /// Waits up to `limit` for the server to close its side; returns when it did.
    pub fn wait_server_ended(&self, limit: Duration) -> Option<(Instant, SourceEnd)> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(ended) = self.server_ended() {
                return Some(ended);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// What a blackhole swallowed from `direction`'s source (the first SWALLOWED_KEEP_BYTES).
    pub fn swallowed(&self, direction: Direction) -> Vec<u8> {
        self.shared.swallowed[direction as usize]
            .lock()
            .unwrap()
            .clone()
    }

    pub fn forwarded_bytes(&self, direction: Direction) -> u64 {
        self.shared.forwarded_bytes[direction as usize].load(Ordering::Relaxed)
    }

    pub fn writes(&self, direction: Direction) -> u64 {
        self.shared.writes[direction as usize].load(Ordering::Relaxed)
    }

    pub fn reset_by_proxy(&self) -> bool {
        self.shared.reset_by_proxy.load(Ordering::Relaxed)
    }

    /// Closes both sides now (the client and the server each see their connection end), as
    /// a network failure would, without the server restarting.
    pub fn cut(&self) {
        self.finish();
    }

    fn finish(&self) {
        self.shared.done.store(true, Ordering::Relaxed);
        let _ = self.shared.client.shutdown(Shutdown::Both);
        let _ = self.shared.upstream.shutdown(Shutdown::Both);
    }
}

pub struct FaultProxy {
    addr: SocketAddr,
    links: Arc<Mutex<Vec<Link>>>,
    stop: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy to `upstream` with the kernel's default socket buffers.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        FaultProxy::start_with_buffers(upstream, None)
    }

    /// A proxy whose upstream sockets get SO_RCVBUF and SO_SNDBUF of `socket_buffer_bytes`
    /// (no autotuning): a stall then backs up into the server after a few KiB instead of the
    /// megabytes loopback autotuning would buffer.
    pub fn start_with_buffers(
        upstream: SocketAddr,
        socket_buffer_bytes: Option<usize>,
    ) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let links: Arc<Mutex<Vec<Link>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let accept_thread = {
            let links = links.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("fault-proxy-accept".into())
                .spawn(move || {
                    for client in listener.incoming() {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let Ok(client) = client else { continue };
                        let Ok(link) = open_link(client, upstream, socket_buffer_bytes) else {
                            continue; // the upstream refused: the client sees its socket close
                        };
                        links.lock().unwrap().push(link);
                    }
                })
                .unwrap()
        };
        FaultProxy {
            addr,
            links,
            stop,
            accept_thread: Some(accept_thread),
        }
    }

    /// Where the proxy listens (for a client that connects by itself).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every link accepted so far, oldest first.
    pub fn links(&self) -> Vec<Link> {
        self.links.lock().unwrap().clone()
    }

    /// A client connected through the proxy, and the handle of its link.
    pub fn connect(&self) -> (Client, Link) {
        let stream = TcpStream::connect(self.addr).unwrap();
        let local = stream.local_addr().unwrap();
        let start = Instant::now();
        loop {
            let found = self
                .links
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.shared.client_addr == local)
                .cloned();
            if let Some(link) = found {
                return (Client::from_stream(stream), link);
            }
            assert!(
                start.elapsed() < LINK_WAIT,
                "the proxy did not accept {local} within {LINK_WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
        for link in self.links.lock().unwrap().drain(..) {
            link.finish();
        }
    }
}

fn open_link(
    client: TcpStream,
    upstream_addr: SocketAddr,
    socket_buffer_bytes: Option<usize>,
) -> std::io::Result<Link> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    if let Some(bytes) = socket_buffer_bytes {
        socket.set_recv_buffer_size(bytes)?;
        socket.set_send_buffer_size(bytes)?;
    }
    socket.connect(&upstream_addr.into())?;
    let upstream = TcpStream::from(socket);
    for stream in [&client, &upstream] {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(POLL))?;
    }
    let shared = Arc::new(Shared {
        client_addr: client.peer_addr()?,
        client,
        upstream,
        faults: Default::default(),
        source_end: Default::default(),
        ended: Default::default(),
        swallowed: Default::default(),
        forwarded_bytes: Default::default(),
        writes: Default::default(),
        reset_by_proxy: AtomicBool::new(false),
        done: AtomicBool::new(false),
    });
    let link = Link { shared };
    for direction in [Direction::ToServer, Direction::ToClient] {
        let (source, sink) = match direction {
            Direction::ToServer => (&link.shared.client, &link.shared.upstream),
            Direction::ToClient => (&link.shared.upstream, &link.shared.client),
        };
        let (source, sink) = (source.try_clone()?, sink.try_clone()?);
        let (tx, rx) = sync_channel(QUEUE_CHUNKS);
        let reader_link = link.clone();
        std::thread::Builder::new()
            .name("fault-proxy-read".into())
            .spawn(move || read_side(&reader_link, direction, source, tx))?;
        let writer_link = link.clone();
        std::thread::Builder::new()
            .name("fault-proxy-write".into())
            .spawn(move || write_side(&writer_link, direction, rx, sink))?;
    }
    Ok(link)
}

/// Reads `source` into the queue until it ends, recording how.
fn read_side(
    link: &Link,
    direction: Direction,
    mut source: TcpStream,
    queue: SyncSender<(Instant, Vec<u8>)>,
) {
    let shared = &link.shared;
    let mut buf = vec![0u8; CHUNK_BYTES];
    let end = loop {
        if shared.done.load(Ordering::Relaxed) {
            return;
        }
        match source.read(&mut buf) {
            Ok(0) => break SourceEnd::Eof,
            Ok(n) => {
                if queue.send((Instant::now(), buf[..n].to_vec())).is_err() {
                    return; // the writer ended (reset or done)
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break SourceEnd::Error,
        }
    };
    *shared.source_end[direction as usize].lock().unwrap() = Some(end);
}

/// Forwards queued chunks to `sink` under the direction's faults; when the source has ended,
/// passes the end on (FIN or RST) unless the direction is blackholed.
fn write_side(
    link: &Link,
    direction: Direction,
    queue: Receiver<(Instant, Vec<u8>)>,
    mut sink: TcpStream,
) {
    let shared = &link.shared;
    let mut pacer = Pacer::default();
    loop {
        match queue.recv_timeout(POLL) {
            Ok((read_at, chunk)) => {
                if forward(link, direction, &mut sink, read_at, &chunk, &mut pacer).is_err() {
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if shared.done.load(Ordering::Relaxed) {
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let end = *shared.source_end[direction as usize].lock().unwrap();
    if let Some(end) = end {
        *shared.ended[direction as usize].lock().unwrap() = Some((Instant::now(), end));
    }
    if shared.faults[direction as usize].lock().unwrap().blackhole
        || shared.done.load(Ordering::Relaxed)
    {
        return;
    }
    match end {
        Some(SourceEnd::Error) => {
            reset(&sink);
            link.finish();
        }
        _ => {
            let _ = sink.shutdown(Shutdown::Write);
        }
    }
}

/// Bandwidth pacing state of one direction: bytes sent since `start` under `bytes_per_s`.
#[derive(Default)]
struct Pacer {
    bytes_per_s: u64,
    start: Option<Instant>,
    sent_bytes: u64,
}

impl Pacer {
    /// When the next byte may go under a cap of `bytes_per_s`.
    fn next_at(&mut self, bytes_per_s: u64, now: Instant) -> Instant {
        if self.bytes_per_s != bytes_per_s || self.start.is_none() {
            *self = Pacer {
                bytes_per_s,
                start: Some(now),
                sent_bytes: 0,
            };
        }
        let at = |p: &Pacer| {
            p.start.unwrap()
                + Duration::from_nanos(p.sent_bytes * 1_000_000_000 / bytes_per_s.max(1))
        };
        // No credit saved up while idle: a burst after a quiet spell is paced too.
        if at(self) + Duration::from_secs(1) / PACE_SLICES_PER_S as u32 <= now {
            self.start = Some(now);
            self.sent_bytes = 0;
        }
        at(self)
    }
}

/// Forwards one chunk, applying the faults in force as it goes. Err: the link is over.
fn forward(
    link: &Link,
    direction: Direction,
    sink: &mut TcpStream,
    read_at: Instant,
    chunk: &[u8],
    pacer: &mut Pacer,
) -> Result<(), ()> {
    let shared = &link.shared;
    let d = direction as usize;
    let mut offset = 0;
    while offset < chunk.len() {
        if shared.done.load(Ordering::Relaxed) {
            return Err(());
        }
        let faults = shared.faults[d].lock().unwrap().clone();
        let now = Instant::now();
        if faults.blackhole {
            let mut kept = shared.swallowed[d].lock().unwrap();
            let room = SWALLOWED_KEEP_BYTES.saturating_sub(kept.len());
            let rest = &chunk[offset..];
            kept.extend_from_slice(&rest[..rest.len().min(room)]);
            return Ok(());
        }
        let mut wait_until = read_at + faults.latency;
        if let Some(until) = faults.stall_until {
            wait_until = wait_until.max(until);
        }
        if let Some(rate) = faults.bytes_per_s {
            wait_until = wait_until.max(pacer.next_at(rate, now));
        }
        if now < wait_until {
            std::thread::sleep((wait_until - now).min(POLL));
            continue; // look at the faults again: they may have changed
        }
        let mut n = chunk.len() - offset;
        if faults.byte_gap.is_some() {
            n = 1;
        }
        if let Some(rate) = faults.bytes_per_s {
            n = n.min((rate / PACE_SLICES_PER_S).max(1) as usize);
        }
        if let Some(left) = faults.reset_after_bytes {
            n = n.min(left as usize);
        }
        if n > 0 {
            if sink.write_all(&chunk[offset..offset + n]).is_err() {
                return Err(());
            }
            offset += n;
            pacer.sent_bytes += n as u64;
            shared.forwarded_bytes[d].fetch_add(n as u64, Ordering::Relaxed);
            shared.writes[d].fetch_add(1, Ordering::Relaxed);
        }
        let reset_now = {
            let mut faults = shared.faults[d].lock().unwrap();
            match faults.reset_after_bytes.as_mut() {
                Some(left) => {
                    *left = left.saturating_sub(n as u64);
                    *left == 0
                }
                None => false,
            }
        };
        if reset_now {
            // Let the receiver take the partial frame first, so the reset lands mid-frame
            // rather than racing the bytes before it.
            std::thread::sleep(Duration::from_millis(50));
            shared.reset_by_proxy.store(true, Ordering::Relaxed);
            reset(&shared.upstream);
            reset(&shared.client);
            link.finish();
            return Err(());
        }
        if let Some(gap) = faults.byte_gap {
            std::thread::sleep(gap);
        }
    }
    Ok(())
}

/// Resets `stream` (RST) now, whatever other handles to it exist: a connect to AF_UNSPEC is
/// TCP's disconnect, which sends a reset from ESTABLISHED (and every state a close would).
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    let unspec = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    // SAFETY: connect(2) on a descriptor this stream owns, with a sockaddr that lives for the
    // call and whose size is passed; AF_UNSPEC only disconnects the socket.
    unsafe {
        libc::connect(
            stream.as_raw_fd(),
            &unspec,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        );
    }
}
