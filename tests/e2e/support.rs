//! Test support: start a real `holdfast serve` on an ephemeral loopback port, and a small
//! blocking client that speaks the protocol through holdfast-protocol.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use holdfast_protocol::payload::Hello;
use holdfast_protocol::{
    encode_frame, encode_raw, next_frame, ErrorCode, Kind, Payload, MAX_FRAME_BYTES_DEFAULT,
};

/// How long a test waits for any single reply before failing.
pub const REPLY_TIMEOUT_MS: u64 = 5_000;

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The admin listener (`holdfast admin on ADDR`), on an ephemeral port.
    pub admin: Option<SocketAddr>,
    /// The WebSocket listener (`holdfast ws on ADDR`), when `ws_listen` is set.
    pub ws: Option<SocketAddr>,
    /// The TLS listener (`holdfast tls on ADDR`), when `tls_listen` is set.
    pub tls: Option<SocketAddr>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `holdfast serve` with `toml` appended to a base config (port 0, loopback).
    pub fn start(toml: &str) -> Server {
        Server::start_with(toml, &[])
    }

    pub fn start_with(toml: &str, env: &[(&str, &str)]) -> Server {
        Server::start_with_args(toml, env, &[])
    }

    /// As [`Server::start_with`], with extra `holdfast serve` flags (e.g. `--probes`).
    pub fn start_with_args(toml: &str, env: &[(&str, &str)], args: &[&str]) -> Server {
        Server::start_listening("127.0.0.1:0".parse().unwrap(), toml, env, args)
    }

    /// As [`Server::start_with_args`], listening on `listen` (e.g. a restart on the port a
    /// killed server had).
    pub fn start_listening(
        listen: SocketAddr,
        toml: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("holdfast.toml");
        std::fs::write(
            &path,
            format!("listen = \"{listen}\"\nadmin_listen = \"127.0.0.1:0\"\n{toml}"),
        )
        .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_holdfast"));
        command
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // Warnings by default; E2E_SERVER_LOG (e.g. `info`, `holdfast=debug`) shows more of
        // a failing test's server.
        let log = std::env::var("E2E_SERVER_LOG").unwrap_or_else(|_| "warn".to_owned());
        command.env("HOLDFAST_LOG", log);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("holdfast binary runs");
        let stdout = child.stdout.take().unwrap();
        let mut stdout = BufReader::new(stdout);
        // `holdfast admin on ADDR` (when enabled) comes first; the listening line is the last
        // start-up line.
        let mut admin = None;
        let mut ws = None;
        let mut tls = None;
        let mut line = String::new();
        loop {
            line.clear();
            stdout.read_line(&mut line).unwrap();
            let addr = line
                .split_whitespace()
                .find_map(|word| word.parse::<SocketAddr>().ok());
            if line.starts_with("holdfast admin on ") {
                admin = addr;
                continue;
            }
            if line.starts_with("holdfast ws on ") {
                ws = addr;
                continue;
            }
            if line.starts_with("holdfast tls on ") {
                tls = addr;
                continue;
            }
            let addr = addr.unwrap_or_else(|| panic!("no listening line, got {line:?}"));
            break Server {
                child,
                addr,
                admin,
                ws,
                tls,
                _dir: dir,
            };
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < limit, "server did not exit in {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Open descriptors of the server process.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An owned copy of a received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub kind: Kind,
    pub id: u64,
    pub bytes: Vec<u8>,
}

impl Received {
    fn payload(&self) -> Payload<'_> {
        next_frame(&self.bytes, u32::MAX >> 8)
            .unwrap()
            .unwrap()
            .payload
    }

    pub fn error_code(&self) -> Option<ErrorCode> {
        match self.payload() {
            Payload::Error(e) => ErrorCode::from_u16(e.code.to_native()),
            _ => None,
        }
    }

    pub fn welcome_session_id(&self) -> Option<u64> {
        match self.payload() {
            Payload::Welcome(w) => Some(w.session_id.to_native()),
            _ => None,
        }
    }

    pub fn welcome_heartbeat_ms(&self) -> Option<u32> {
        match self.payload() {
            Payload::Welcome(w) => Some(w.heartbeat_ms.to_native()),
            _ => None,
        }
    }

    pub fn goodbye_reconnect_after_ms(&self) -> Option<u32> {
        match self.payload() {
            Payload::Goodbye(g) => Some(g.reconnect_after_ms.to_native()),
            _ => None,
        }
    }

    pub fn response_body(&self) -> Option<Vec<u8>> {
        match self.payload() {
            Payload::Response(r) => Some(r.body.to_vec()),
            _ => None,
        }
    }
}

pub struct Client {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_millis(REPLY_TIMEOUT_MS)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn send(&mut self, kind: Kind, id: u64, payload: &[u8]) {
        let mut out = BytesMut::new();
        encode_raw(&mut out, kind, 0, id, payload, MAX_FRAME_BYTES_DEFAULT).unwrap();
        self.send_raw(&out);
    }

    /// Anonymous Hello; returns the Welcome's session id.
    pub fn hello(&mut self) -> u64 {
        self.send(Kind::Hello, 1, &[]);
        let welcome = self.recv();
        assert_eq!(welcome.kind, Kind::Welcome, "got {welcome:?}");
        welcome.welcome_session_id().unwrap()
    }

    pub fn hello_with(&mut self, client_id: &str, token: &[u8]) -> Received {
        let mut out = BytesMut::new();
        let hello = Hello {
            client_id,
            token,
            versions: &[1],
            heartbeat_ms: 0,
        };
        encode_frame(&mut out, 0, 1, &hello, MAX_FRAME_BYTES_DEFAULT).unwrap();
        self.send_raw(&out);
        self.recv()
    }

    pub fn request(&mut self, id: u64, method: &str, body: &[u8]) {
        let mut out = BytesMut::new();
        let request = holdfast_protocol::payload::Request { method, body };
        encode_frame(&mut out, 0, id, &request, MAX_FRAME_BYTES_DEFAULT).unwrap();
        self.send_raw(&out);
    }

    /// Next frame, or panic after REPLY_TIMEOUT_MS.
    pub fn recv(&mut self) -> Received {
        self.try_recv()
            .unwrap_or_else(|| panic!("connection closed while a frame was expected"))
    }

    /// Next frame, or None on EOF / reset. Panics if nothing arrives within REPLY_TIMEOUT_MS.
    pub fn try_recv(&mut self) -> Option<Received> {
        let deadline = Instant::now() + Duration::from_millis(REPLY_TIMEOUT_MS);
        match self.next_until(deadline) {
            Next::Frame(received) => Some(received),
            Next::Eof | Next::Reset => None,
            Next::TimedOut => panic!("nothing arrived within {REPLY_TIMEOUT_MS} ms"),
        }
    }

    /// How the connection ends, waiting at most REPLY_TIMEOUT_MS: [`Ending::Eof`] or
    /// [`Ending::Reset`] if the server closed it, [`Ending::Open`] if it was still open when the
    /// wait ran out. Each carries the kinds of the frames that arrived during the wait.
    pub fn ending(&mut self) -> Ending {
        self.ending_within(Duration::from_millis(REPLY_TIMEOUT_MS))
    }

    /// As [`Client::ending`], waiting at most `wait`.
    pub fn ending_within(&mut self, wait: Duration) -> Ending {
        let deadline = Instant::now() + wait;
        let mut frames = Vec::new();
        loop {
            match self.next_until(deadline) {
                Next::Frame(received) => frames.push(received.kind),
                Next::Eof => return Ending::Eof(frames),
                Next::Reset => return Ending::Reset(frames),
                Next::TimedOut => return Ending::Open(frames),
            }
        }
    }

    /// The next whole frame, or how the stream ended, or nothing by `deadline`.
    fn next_until(&mut self, deadline: Instant) -> Next {
        loop {
            if let Some(frame) =
                next_frame(&self.buf, u32::MAX >> 8).expect("server sends valid frames")
            {
                let received = Received {
                    kind: frame.header.kind,
                    id: frame.header.id,
                    bytes: frame.bytes.to_vec(),
                };
                let len = frame.bytes.len();
                let _ = self.buf.split_to(len);
                return Next::Frame(received);
            }
            let now = Instant::now();
            if now >= deadline {
                return Next::TimedOut;
            }
            // A zero read timeout means "block forever": keep at least 1 ms.
            let left = (deadline - now).max(Duration::from_millis(1));
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 65_536];
            let read = self.stream.read(&mut chunk);
            self.stream
                .set_read_timeout(Some(Duration::from_millis(REPLY_TIMEOUT_MS)))
                .unwrap();
            match read {
                Ok(0) => return Next::Eof,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Next::Reset,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }
}

/// What [`Client::next_until`] found.
enum Next {
    Frame(Received),
    Eof,
    Reset,
    TimedOut,
}

/// How a connection ended during a wait, with the kinds of the frames that arrived first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The server shut its side down (FIN): a graceful close.
    Eof(Vec<Kind>),
    /// The connection was reset (RST), e.g. closed with bytes of ours still unread.
    Reset(Vec<Kind>),
    /// Still open when the wait ran out.
    Open(Vec<Kind>),
}

/// An Echo frame with `payload`.
pub fn echo_frame(id: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_raw(
        &mut out,
        Kind::Echo,
        0,
        id,
        payload,
        MAX_FRAME_BYTES_DEFAULT,
    )
    .unwrap();
    out.to_vec()
}

/// One raw HTTP request to the admin listener on a new connection: (status, body).
pub fn admin_request(admin: SocketAddr, raw: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(admin).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(raw.as_bytes()).unwrap();
    let response =
        read_http_response(&mut stream).unwrap_or_else(|| panic!("no response to {raw:?}"));
    (response.status, response.body)
}

/// One HTTP/1.1 response as read off the wire.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header lines, names lowercased: ("content-length", "12").
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (head, then `Content-Length` bytes of body) without waiting for the
/// connection to close, so it works on keep-alive connections. None if the connection closed
/// (or failed) before a whole response.
pub fn read_http_response(stream: &mut TcpStream) -> Option<HttpResponse> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8(head).expect("response head is UTF-8");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().expect("numeric Content-Length"));
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some(HttpResponse {
        status,
        headers,
        body: String::from_utf8(body).expect("response body is UTF-8"),
    })
}

/// `POST /publish` with a JSON body (and a bearer secret if given).
pub fn publish(server: &Server, json: &str, bearer: Option<&str>) -> (u16, String) {
    let admin = server.admin.expect("admin listener on");
    let auth = bearer
        .map(|b| format!("Authorization: Bearer {b}\r\n"))
        .unwrap_or_default();
    let raw = format!(
        "POST /publish HTTP/1.1\r\nHost: test\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
        json.len()
    );
    admin_request(admin, &raw)
}
