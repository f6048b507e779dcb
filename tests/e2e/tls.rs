//! The TLS listener (`tls_listen`) against the real binary: a rustls client and `openssl
//! s_client` reach a session and echo; a failed handshake is counted and closes only that
//! connection; the handshake is under hello_timeout_ms; SIGHUP reloads the certificate for new
//! handshakes while live sessions go on.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use holdfast_protocol::{encode_raw, next_frame, Kind, MAX_FRAME_BYTES_DEFAULT};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::metrics::{counter_sum, scrape};
use crate::support::{echo_frame, Client, Server, REPLY_TIMEOUT_MS};

/// A self-signed certificate for localhost / 127.0.0.1 written as PEM files in `dir`.
pub(crate) fn write_cert(dir: &Path) -> CertificateDer<'static> {
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    cert.der().clone()
}

pub(crate) fn start(dir: &Path, extra: &str) -> Server {
    Server::start(&format!(
        "tls_listen = \"127.0.0.1:0\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n{extra}",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    ))
}

pub(crate) type TlsStream = StreamOwned<ClientConnection, TcpStream>;

pub(crate) fn tls_connect(addr: SocketAddr, trusted: &CertificateDer<'static>) -> TlsStream {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"holdfast/1".to_vec()];
    let conn = ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
        .unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(REPLY_TIMEOUT_MS)))
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    StreamOwned::new(conn, tcp)
}

/// Reads one whole frame's bytes from `stream`.
fn recv_frame(stream: &mut impl Read, buf: &mut BytesMut) -> Vec<u8> {
    loop {
        if let Some(frame) = next_frame(buf, u32::MAX >> 8).expect("valid frames") {
            let len = frame.bytes.len();
            return buf.split_to(len).to_vec();
        }
        let mut chunk = [0u8; 16_384];
        let n = stream.read(&mut chunk).expect("read a frame");
        assert!(n > 0, "closed while a frame was expected");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// True once the server closes `stream` (EOF or reset; whatever it sent first, such as a TLS
/// alert, is skipped) within REPLY_TIMEOUT_MS; false if it is still open then.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(REPLY_TIMEOUT_MS)))
        .unwrap();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn hello_frame() -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_raw(&mut out, Kind::Hello, 0, 1, &[], MAX_FRAME_BYTES_DEFAULT).unwrap();
    out.to_vec()
}

fn frame_kind(frame: &[u8]) -> Kind {
    next_frame(frame, u32::MAX >> 8)
        .unwrap()
        .expect("one whole frame")
        .header
        .kind
}

/// Hello -> Welcome, then `echoes` Echo frames come back unchanged.
pub(crate) fn session_echoes(stream: &mut TlsStream, echoes: u64) {
    let mut buf = BytesMut::new();
    stream.write_all(&hello_frame()).unwrap();
    assert_eq!(frame_kind(&recv_frame(stream, &mut buf)), Kind::Welcome);
    for id in 0..echoes {
        let frame = echo_frame(10 + id, format!("over TLS {id}").as_bytes());
        stream.write_all(&frame).unwrap();
        assert_eq!(recv_frame(stream, &mut buf), frame);
    }
}

#[test]
fn rustls_client_reaches_a_session_over_tls_and_echoes() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path());
    let server = start(dir.path(), "");
    let mut stream = tls_connect(server.tls.expect("tls listener"), &cert);
    session_echoes(&mut stream, 20);
    assert_eq!(stream.conn.alpn_protocol(), Some(&b"holdfast/1"[..]));
    // A large echo spans several TLS records both ways.
    let mut buf = BytesMut::new();
    let big = echo_frame(99, &vec![7u8; 60_000]);
    stream.write_all(&big).unwrap();
    assert_eq!(recv_frame(&mut stream, &mut buf), big);
    // The plain listener still serves plain clients beside it.
    let mut plain = Client::connect(server.addr);
    plain.hello();
    let metrics = scrape(&server);
    assert!(counter_sum(&metrics, "holdfast_tls_handshakes_total") >= 1.0);
}

#[test]
fn openssl_s_client_reaches_a_session_and_echoes() {
    let dir = tempfile::tempdir().unwrap();
    write_cert(dir.path());
    let server = start(dir.path(), "");
    let addr = server.tls.expect("tls listener");
    for version in ["-tls1_3", "-tls1_2"] {
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string(), version])
            .args(["-alpn", "holdfast/1", "-quiet", "-nocommands"])
            .arg("-CAfile")
            .arg(dir.path().join("cert.pem"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_client runs (Debian package openssl)");
        let echo = echo_frame(5, b"through openssl");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&hello_frame()).unwrap();
        stdin.write_all(&echo).unwrap();
        stdin.flush().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = BytesMut::new();
            let welcome = recv_frame(&mut stdout, &mut buf);
            let echoed = recv_frame(&mut stdout, &mut buf);
            (welcome, echoed)
        });
        let deadline = Instant::now() + Duration::from_millis(REPLY_TIMEOUT_MS);
        while !reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let finished = reader.is_finished();
        drop(stdin);
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            finished,
            "{version}: no Welcome and echo from openssl s_client in time"
        );
        let (welcome, echoed) = reader.join().unwrap();
        assert_eq!(frame_kind(&welcome), Kind::Welcome, "{version}");
        assert_eq!(echoed, echo, "{version}");
    }
}

#[test]
fn failed_handshake_is_counted_and_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path());
    let server = start(dir.path(), "");
    let addr = server.tls.unwrap();
    let mut good = tls_connect(addr, &cert);
    session_echoes(&mut good, 1);

    // Not TLS at all: a Holdfast Hello in clear on the TLS port.
    let mut clear = TcpStream::connect(addr).unwrap();
    clear.write_all(&hello_frame()).unwrap();
    assert!(
        closed_by_server(&mut clear),
        "a cleartext peer on the TLS port is closed"
    );
    // A well-framed ClientHello whose body does not parse: refused with a fatal alert.
    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_millis(REPLY_TIMEOUT_MS)))
        .unwrap();
    let bad_hello = [
        0x16, 0x03, 0x01, 0x00, 0x08, 1, 0, 0, 4, 0xff, 0xff, 0xff, 0xff,
    ];
    garbage.write_all(&bad_hello).unwrap();
    let mut reply = Vec::new();
    let _ = garbage.read_to_end(&mut reply);
    assert_eq!(
        reply.first(),
        Some(&0x15),
        "a TLS alert record comes back: {reply:?}"
    );

    // The established session is untouched.
    let mut buf = BytesMut::new();
    let frame = echo_frame(50, b"still here");
    good.write_all(&frame).unwrap();
    assert_eq!(recv_frame(&mut good, &mut buf), frame);
    let metrics = scrape(&server);
    assert!(
        counter_sum(&metrics, "holdfast_tls_handshake_failures_total") >= 2.0,
        "both failed handshakes are counted"
    );
}

#[test]
fn a_silent_tls_peer_is_closed_at_hello_timeout() {
    let dir = tempfile::tempdir().unwrap();
    write_cert(dir.path());
    let server = start(dir.path(), "hello_timeout_ms = 300\n");
    let started = Instant::now();
    let mut silent = TcpStream::connect(server.tls.unwrap()).unwrap();
    assert!(closed_by_server(&mut silent));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(3_000),
        "closed after {waited:?}"
    );
}

#[test]
fn sighup_reloads_the_certificate_for_new_handshakes_and_keeps_live_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_cert(dir.path());
    let server = start(dir.path(), "");
    let addr = server.tls.unwrap();
    let mut live = tls_connect(addr, &first);
    session_echoes(&mut live, 1);

    let second = write_cert(dir.path());
    assert_ne!(first, second);
    server.signal(libc::SIGHUP);
    // New handshakes present the new certificate once the signal thread has reloaded it.
    let deadline = Instant::now() + Duration::from_millis(REPLY_TIMEOUT_MS);
    loop {
        let mut stream = tls_connect(addr, &second);
        let mut buf = BytesMut::new();
        if stream.write_all(&hello_frame()).is_ok() && stream.flush().is_ok() {
            let mut chunk = [0u8; 4096];
            if let Ok(n) = stream.read(&mut chunk) {
                buf.extend_from_slice(&chunk[..n]);
                if n > 0 {
                    assert_eq!(stream.conn.peer_certificates().unwrap()[0], second);
                    break;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The session from before the reload goes on.
    let mut buf = BytesMut::new();
    let frame = echo_frame(77, b"after reload");
    live.write_all(&frame).unwrap();
    assert_eq!(recv_frame(&mut live, &mut buf), frame);
    assert_eq!(live.conn.peer_certificates().unwrap()[0], first);
    // A broken pair on disk: the reload is refused and the current certificate stays.
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    server.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(200));
    let mut again = tls_connect(addr, &second);
    session_echoes(&mut again, 1);
}

#[test]
fn sample_tls_config_serves_with_the_scripts_certificate() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(repo.join("server/tls/make-test-cert.sh"))
        .arg(dir.path())
        .stdout(Stdio::null())
        .status()
        .expect("make-test-cert.sh runs (needs openssl)");
    assert!(status.success());
    // The sample as shipped, on ephemeral ports and with this test's certificate paths.
    let sample = std::fs::read_to_string(repo.join("docs/examples/holdfast-tls.toml")).unwrap();
    let cert_file = dir.path().join("cert.pem");
    let toml: String = sample
        .lines()
        .filter(|l| !l.starts_with("listen =") && !l.starts_with("admin_listen ="))
        .map(|l| match l.split_once(" = ") {
            Some(("tls_listen", _)) => "tls_listen = \"127.0.0.1:0\"".to_string(),
            Some(("ws_listen", _)) => "ws_listen = \"127.0.0.1:0\"".to_string(),
            Some(("tls_cert_file", _)) => format!("tls_cert_file = \"{}\"", cert_file.display()),
            Some(("tls_key_file", _)) => {
                format!(
                    "tls_key_file = \"{}\"",
                    dir.path().join("key.pem").display()
                )
            }
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(toml.contains("tls_listen") && toml.contains("tls_key_file"));
    let server = Server::start(&toml);
    assert!(
        server.ws.is_some(),
        "the sample also starts a WebSocket listener"
    );
    let pem = std::fs::read(&cert_file).unwrap();
    let cert = rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    let mut stream = tls_connect(server.tls.expect("tls listener"), &cert);
    session_echoes(&mut stream, 1);
}

#[test]
fn pushes_reach_a_tls_subscriber_in_order() {
    use holdfast_protocol::payload::{Subscribe, TopicName};
    use holdfast_protocol::{encode_frame, Payload};

    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path());
    let server = start(dir.path(), "");
    let mut stream = tls_connect(server.tls.unwrap(), &cert);
    session_echoes(&mut stream, 0);
    let mut out = BytesMut::new();
    let topics = [TopicName { name: "news" }];
    encode_frame(&mut out, 0, 2, &Subscribe { topics: &topics }, 65_536).unwrap();
    stream.write_all(&out).unwrap();
    let mut buf = BytesMut::new();
    assert_eq!(frame_kind(&recv_frame(&mut stream, &mut buf)), Kind::Ack);
    for i in 0..5 {
        let json = format!(r#"{{"target":"topic","topic":"news","payload":"item {i}"}}"#);
        assert_eq!(crate::support::publish(&server, &json, None).0, 202);
    }
    // Shared push frames are encrypted per connection and arrive in sequence.
    for i in 0..5u64 {
        let frame = recv_frame(&mut stream, &mut buf);
        let decoded = next_frame(&frame, 1 << 20).unwrap().unwrap();
        let Payload::Push(push) = decoded.payload else {
            panic!("expected a Push, got {:?}", decoded.header.kind)
        };
        assert_eq!(push.seq.to_native(), i + 1);
        assert_eq!(push.payload.as_ref(), format!("item {i}").as_bytes());
    }
}
