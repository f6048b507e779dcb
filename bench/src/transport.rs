//! The client side of each transport a worker speaks: plain TCP, TLS (rustls), WebSocket and
//! WebSocket over TLS (tungstenite). A [`Conn`] is a non-blocking byte stream of Holdfast frames
//! whatever the transport: the worker reads and writes frames through it exactly as it does a
//! TCP socket, and registers its one file descriptor with mio.
//!
//! - `tls`: ALPN `holdfast/1`, frames inside TLS records.
//! - `ws`: HTTP/1.1 Upgrade on `--ws-path`, subprotocol `holdfast.v1`; each write of the worker
//!   (whole frames) goes out as one binary message, each binary message received is read as bytes.
//! - `wss`: the same over TLS with ALPN `http/1.1` (the server's TLS listener upgrades it).
//!
//! The transport's own handshake (TLS, HTTP Upgrade) runs on the first reads and writes after the
//! TCP connect: until it is done a write returns `WouldBlock` (TLS buffers the plaintext instead),
//! so the worker's Hello waits in its out buffer and the setup time includes the handshake.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use serde::{Deserialize, Serialize};
use tungstenite::client::{ClientRequestBuilder, IntoClientRequest};
use tungstenite::handshake::client::ClientHandshake;
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// ALPN of Holdfast frames inside TLS (the server's TLS listener).
pub const ALPN_HOLDFAST: &[u8] = b"holdfast/1";
/// ALPN of a WebSocket Upgrade over TLS (wss).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// The WebSocket subprotocol Holdfast speaks.
pub const WS_SUBPROTOCOL: &str = "holdfast.v1";
/// tungstenite's read buffer per WebSocket connection (its default, 128 KiB, times 10,000
/// sessions would be 1.3 GB in one worker); a message larger than this is read in several reads.
pub const WS_READ_BUFFER_BYTES: usize = 4 * 1024;
/// Bytes tungstenite queues for one WebSocket before a write is refused (the worker retries it
/// when the socket drains).
pub const WS_WRITE_BUFFER_MAX_BYTES: usize = 1024 * 1024;
/// Plaintext rustls buffers before the TLS handshake ends or while the socket is full.
pub const TLS_SEND_BUFFER_MAX_BYTES: usize = 1024 * 1024;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum TransportKind {
    #[default]
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl TransportKind {
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
            TransportKind::Ws => "ws",
            TransportKind::Wss => "wss",
        }
    }

    pub fn parse(name: &str) -> Option<TransportKind> {
        [Self::Tcp, Self::Tls, Self::Ws, Self::Wss]
            .into_iter()
            .find(|k| k.name() == name)
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, TransportKind::Tls | TransportKind::Wss)
    }

    pub fn uses_ws(self) -> bool {
        matches!(self, TransportKind::Ws | TransportKind::Wss)
    }
}

/// What a worker needs to speak a transport (part of its plan).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TransportPlan {
    pub kind: TransportKind,
    /// PEM file of the certificate(s) the server's chain must lead to (tls, wss).
    pub tls_ca: Option<PathBuf>,
    /// The name the server's certificate must carry (SNI too).
    pub tls_server_name: String,
    /// The WebSocket Upgrade's path (ws, wss).
    pub ws_path: String,
}

/// Per-worker transport setup: built once, shared by every connection of the worker.
pub struct Connector {
    plan: TransportPlan,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    ws_uri: Option<String>,
}

impl Connector {
    pub fn new(plan: &TransportPlan, target: SocketAddr) -> Result<Connector> {
        let tls = if plan.kind.uses_tls() {
            let ca = plan.tls_ca.as_deref().context(
                "--transport tls and wss need --tls-ca PEM (the server's certificate or its CA)",
            )?;
            let alpn = if plan.kind.uses_ws() {
                ALPN_HTTP1
            } else {
                ALPN_HOLDFAST
            };
            let config = client_config(ca, alpn)?;
            let name = ServerName::try_from(plan.tls_server_name.clone())
                .with_context(|| format!("--tls-server-name {:?}", plan.tls_server_name))?;
            Some((config, name))
        } else {
            None
        };
        let ws_uri = plan.kind.uses_ws().then(|| {
            let scheme = if plan.kind.uses_tls() { "wss" } else { "ws" };
            let host = if plan.kind.uses_tls() {
                plan.tls_server_name.clone()
            } else {
                target.ip().to_string()
            };
            format!("{scheme}://{host}:{}{}", target.port(), plan.ws_path)
        });
        Ok(Connector {
            plan: plan.clone(),
            tls,
            ws_uri,
        })
    }

    pub fn kind(&self) -> TransportKind {
        self.plan.kind
    }

    /// Starts the transport on a connected socket (its handshake runs on the next reads and
    /// writes).
    pub fn start(&self, conn: &mut Conn) -> io::Result<()> {
        let Inner::Tcp(tcp) = std::mem::replace(&mut conn.inner, Inner::Gone) else {
            return Err(io::Error::other("transport already started"));
        };
        conn.inner = match self.plan.kind {
            TransportKind::Tcp => Inner::Tcp(tcp),
            TransportKind::Tls => Inner::Tls(Box::new(self.tls_io(tcp)?)),
            TransportKind::Ws => Inner::Ws(Box::new(self.ws(tcp)?)),
            TransportKind::Wss => {
                let tls = self.tls_io(tcp)?;
                Inner::Wss(Box::new(self.ws(tls)?))
            }
        };
        Ok(())
    }

    fn tls_io(&self, tcp: mio::net::TcpStream) -> io::Result<TlsIo> {
        let (config, name) = self.tls.as_ref().expect("a TLS transport has a config");
        let mut tls =
            ClientConnection::new(config.clone(), name.clone()).map_err(io::Error::other)?;
        tls.set_buffer_limit(Some(TLS_SEND_BUFFER_MAX_BYTES));
        Ok(TlsIo { tcp, tls })
    }

    fn ws<S: Read + Write>(&self, stream: S) -> io::Result<Ws<S>> {
        let uri = self
            .ws_uri
            .as_ref()
            .expect("a WebSocket transport has a URI");
        let request = ClientRequestBuilder::new(uri.parse().map_err(io::Error::other)?)
            .with_sub_protocol(WS_SUBPROTOCOL)
            .into_client_request()
            .map_err(io::Error::other)?;
        let config = WebSocketConfig::default()
            .read_buffer_size(WS_READ_BUFFER_BYTES)
            .write_buffer_size(0)
            .max_write_buffer_size(WS_WRITE_BUFFER_MAX_BYTES);
        let mid =
            ClientHandshake::start(stream, request, Some(config)).map_err(io::Error::other)?;
        let mut ws = Ws::Handshaking(Some(mid));
        ws.drive_handshake()?;
        Ok(ws)
    }
}

/// A rustls client config trusting the certificates in `ca_pem`, with one ALPN protocol.
pub fn client_config(ca_pem: &Path, alpn: &[u8]) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_pem)
        .with_context(|| format!("read {}", ca_pem.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("parse {}", ca_pem.display()))?;
        roots.add(cert).context("add a trusted certificate")?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "{} holds no certificate",
        ca_pem.display()
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

/// One client connection: a TCP socket and the transport on top of it.
pub struct Conn {
    fd: RawFd,
    inner: Inner,
}

enum Inner {
    Tcp(mio::net::TcpStream),
    Tls(Box<TlsIo>),
    Ws(Box<Ws<mio::net::TcpStream>>),
    Wss(Box<Ws<TlsIo>>),
    /// Only between taking the socket out and putting the transport in ([`Connector::start`]).
    Gone,
}

impl Conn {
    /// A connection whose TCP connect is in progress.
    pub fn new(tcp: mio::net::TcpStream) -> Conn {
        Conn {
            fd: tcp.as_raw_fd(),
            inner: Inner::Tcp(tcp),
        }
    }

    pub fn tcp(&self) -> &mio::net::TcpStream {
        match &self.inner {
            Inner::Tcp(tcp) => tcp,
            Inner::Tls(tls) => &tls.tcp,
            Inner::Ws(ws) => ws.stream(),
            Inner::Wss(ws) => &ws.stream().tcp,
            Inner::Gone => unreachable!("a Conn is never left without its socket"),
        }
    }

    /// True while the transport's own handshake is not done (writes would block).
    pub fn handshaking(&self) -> bool {
        match &self.inner {
            Inner::Ws(ws) => ws.handshaking(),
            Inner::Wss(ws) => ws.handshaking(),
            Inner::Tls(tls) => tls.tls.is_handshaking(),
            Inner::Tcp(_) | Inner::Gone => false,
        }
    }

    /// Writes bytes the transport still holds (TLS records, queued WebSocket frames).
    pub fn flush_pending(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Tcp(_) | Inner::Gone => Ok(()),
            Inner::Tls(tls) => tls.flush_records(),
            Inner::Ws(ws) => ws.flush_pending(),
            Inner::Wss(ws) => ws.flush_pending(),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Tcp(tcp) => tcp.read(buf),
            Inner::Tls(tls) => tls.read(buf),
            Inner::Ws(ws) => ws.read(buf),
            Inner::Wss(ws) => ws.read(buf),
            Inner::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Tcp(tcp) => tcp.write(buf),
            Inner::Tls(tls) => tls.write(buf),
            Inner::Ws(ws) => ws.write(buf),
            Inner::Wss(ws) => ws.write(buf),
            Inner::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_pending()
    }
}

impl mio::event::Source for Conn {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        mio::unix::SourceFd(&self.fd).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        mio::unix::SourceFd(&self.fd).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        mio::unix::SourceFd(&self.fd).deregister(registry)
    }
}

/// rustls over a non-blocking socket: `read` gives plaintext (WouldBlock when the socket has
/// nothing), `write` takes plaintext and sends what records the socket takes; the rest waits in
/// rustls until [`TlsIo::flush_records`].
pub struct TlsIo {
    tcp: mio::net::TcpStream,
    tls: ClientConnection,
}

impl TlsIo {
    fn flush_records(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Read for TlsIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n), // 0: the server's close_notify
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match self.tls.read_tls(&mut self.tcp) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            let processed = self.tls.process_new_packets();
            // Handshake replies and alerts go out even when the records were bad.
            self.flush_records()?;
            processed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }
}

impl Write for TlsIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.tls.writer().write(buf)?;
        self.flush_records()?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into()); // rustls's buffer is full
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_records()
    }
}

/// A WebSocket client over a non-blocking stream: tungstenite's handshake, then binary messages
/// read out as a byte stream.
enum Ws<S: Read + Write> {
    Handshaking(Option<MidHandshake<ClientHandshake<S>>>),
    Open {
        ws: WebSocket<S>,
        /// The last binary message received and how much of it was read.
        rx: bytes::Bytes,
        rx_at: usize,
    },
}

fn ws_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::ErrorKind::ConnectionAborted.into()
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<S: Read + Write> Ws<S> {
    fn stream(&self) -> &S {
        match self {
            Ws::Handshaking(mid) => mid
                .as_ref()
                .expect("a handshake in progress has its stream")
                .get_ref()
                .get_ref(),
            Ws::Open { ws, .. } => ws.get_ref(),
        }
    }

    fn handshaking(&self) -> bool {
        matches!(self, Ws::Handshaking(_))
    }

    /// Advances the HTTP Upgrade as far as the socket allows.
    fn drive_handshake(&mut self) -> io::Result<()> {
        let Ws::Handshaking(mid) = self else {
            return Ok(());
        };
        let Some(current) = mid.take() else {
            return Err(io::Error::other("a failed handshake was driven again"));
        };
        match current.handshake() {
            Ok((ws, _response)) => {
                *self = Ws::Open {
                    ws,
                    rx: bytes::Bytes::new(),
                    rx_at: 0,
                };
                Ok(())
            }
            Err(HandshakeError::Interrupted(next)) => {
                *mid = Some(next);
                Ok(())
            }
            Err(HandshakeError::Failure(e)) => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("websocket upgrade: {e}"),
            )),
        }
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            Ws::Handshaking(_) => self.drive_handshake(),
            Ws::Open { ws, .. } => match ws.flush() {
                Ok(()) => Ok(()),
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                Err(e) => Err(ws_error(e)),
            },
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.handshaking() {
            self.drive_handshake()?;
            if self.handshaking() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        let Ws::Open { ws, rx, rx_at } = self else {
            unreachable!("open after the handshake");
        };
        loop {
            if *rx_at < rx.len() {
                let n = buf.len().min(rx.len() - *rx_at);
                buf[..n].copy_from_slice(&rx[*rx_at..*rx_at + n]);
                *rx_at += n;
                return Ok(n);
            }
            match ws.read() {
                Ok(Message::Binary(bytes)) => {
                    *rx = bytes;
                    *rx_at = 0;
                }
                // tungstenite answers Pings itself (flushed on the next read or write).
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Ok(Message::Text(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text message: Holdfast sends binary messages",
                    ))
                }
                Ok(Message::Close(_)) => return Ok(0),
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Ok(0)
                }
                Err(e) => return Err(ws_error(e)),
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.handshaking() {
            self.drive_handshake()?;
            if self.handshaking() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        let Ws::Open { ws, .. } = self else {
            unreachable!("open after the handshake");
        };
        match ws.write(Message::Binary(bytes::Bytes::copy_from_slice(buf))) {
            Ok(()) => {}
            // Queued in tungstenite's write buffer: sent by a later flush.
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(tungstenite::Error::WriteBufferFull(_)) => {
                return Err(io::ErrorKind::WouldBlock.into())
            }
            Err(e) => return Err(ws_error(e)),
        }
        self.flush_pending()?;
        Ok(buf.len())
    }
}
