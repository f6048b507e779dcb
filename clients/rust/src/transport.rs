//! The byte stream under a session. Each transport is a variant of [`Transport`] and splits
//! into a reading and a writing half, so the connection task can read and write at once.
//!
//! TCP splits into owned halves. TLS (tokio-rustls), WebSocket (tokio-websockets, as a byte
//! stream through [`WsIo`]) and WebSocket inside TLS are one boxed stream split with
//! `tokio::io::split`. Those layers may hold written bytes until flushed, so their writer
//! flushes after every write and remembers an interrupted flush ([`Writer::needs_flush`]).

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::config::Endpoint;
use crate::config::TlsOptions;
use crate::error::Error;
use crate::websocket::{WsIo, SUBPROTOCOL};

/// A layered byte stream (TLS, WebSocket, or both).
pub(crate) trait Layered: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Layered for T {}

type BoxedStream = Box<dyn Layered>;

/// One connected byte stream.
pub(crate) enum Transport {
    Tcp(TcpStream),
    Layered(BoxedStream),
}

/// The reading half of a [`Transport`].
pub(crate) enum Reader {
    Tcp(OwnedReadHalf),
    Layered(ReadHalf<BoxedStream>),
}

/// The writing half of a [`Transport`].
pub(crate) enum Writer {
    Tcp(OwnedWriteHalf),
    Layered {
        write: WriteHalf<BoxedStream>,
        /// Bytes were accepted by a layer and not yet flushed to the socket.
        needs_flush: bool,
    },
}

async fn tcp(addr: &str) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    // Frames are small and latency matters more than packet count.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// `host` of `host:port` (brackets of an IPv6 literal removed): the TLS server name when none
/// is given.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

async fn tls<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    server_name: &str,
    config: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
) -> io::Result<tokio_rustls::client::TlsStream<S>> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    TlsConnector::from(config).connect(name, stream).await
}

/// The WebSocket upgrade on `stream`: `GET path` with subprotocol `holdfast.v1`.
async fn websocket<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    authority: &str,
    path: &str,
    secure: bool,
) -> io::Result<WsIo<S>> {
    let scheme = if secure { "wss" } else { "ws" };
    let invalid =
        |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
    let builder = tokio_websockets::ClientBuilder::new()
        .uri(&format!("{scheme}://{authority}{path}"))
        .map_err(|e| invalid(&e))?
        .add_header(
            HeaderName::from_static("sec-websocket-protocol"),
            HeaderValue::from_static(SUBPROTOCOL),
        )
        .map_err(|e| invalid(&e))?;
    let (socket, _response) = builder.connect_on(stream).await.map_err(|e| match e {
        tokio_websockets::Error::Io(e) => e,
        other => io::Error::new(io::ErrorKind::ConnectionRefused, other),
    })?;
    Ok(WsIo::new(socket))
}

async fn open(endpoint: &Endpoint) -> io::Result<Transport> {
    match endpoint {
        Endpoint::Tcp { addr } => Ok(Transport::Tcp(tcp(addr).await?)),
        Endpoint::Tls {
            addr,
            server_name,
            trust,
        } => {
            let name = server_name.as_deref().unwrap_or_else(|| host_of(addr));
            let stream = tls(tcp(addr).await?, name, trust.frames_config()).await?;
            Ok(Transport::Layered(Box::new(stream)))
        }
        Endpoint::WebSocket {
            addr,
            path,
            tls: None,
        } => {
            let socket = websocket(tcp(addr).await?, addr, path, false).await?;
            Ok(Transport::Layered(Box::new(socket)))
        }
        Endpoint::WebSocket {
            addr,
            path,
            tls: Some(TlsOptions { server_name, trust }),
        } => {
            let name = server_name.as_deref().unwrap_or_else(|| host_of(addr));
            let stream = tls(tcp(addr).await?, name, trust.websocket_config()).await?;
            let socket = websocket(stream, addr, path, true).await?;
            Ok(Transport::Layered(Box::new(socket)))
        }
    }
}

/// Connects to `endpoint` within `timeout_ms` (name resolution included).
pub(crate) async fn connect(endpoint: &Endpoint, timeout_ms: u64) -> Result<Transport, Error> {
    match tokio::time::timeout(Duration::from_millis(timeout_ms), open(endpoint)).await {
        Ok(result) => result.map_err(Error::from),
        Err(_) => Err(Error::Timeout {
            waiting_for: "connect",
            after_ms: timeout_ms,
        }),
    }
}

impl Transport {
    pub(crate) fn split(self) -> (Reader, Writer) {
        match self {
            Transport::Tcp(stream) => {
                let (read, write) = stream.into_split();
                (Reader::Tcp(read), Writer::Tcp(write))
            }
            Transport::Layered(stream) => {
                let (read, write) = tokio::io::split(stream);
                let writer = Writer::Layered {
                    write,
                    needs_flush: false,
                };
                (Reader::Layered(read), writer)
            }
        }
    }
}

impl Reader {
    /// Appends what is readable to `buf` (into its spare capacity); 0 means end of stream.
    /// Cancel-safe: if dropped before it completes, nothing was read.
    pub(crate) async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Reader::Tcp(read) => read.read_buf(buf).await,
            Reader::Layered(read) => read.read_buf(buf).await,
        }
    }
}

impl Writer {
    /// Writes some of `buf` (possibly none, to finish a flush) and advances it past what was
    /// written, then flushes a layered stream. Cancel-safe: `buf` is advanced exactly by what a
    /// layer accepted, and a flush cut short is remembered ([`Writer::needs_flush`]).
    pub(crate) async fn write_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Writer::Tcp(write) => write.write_buf(buf).await,
            Writer::Layered { write, needs_flush } => {
                let mut written = 0;
                if !buf.is_empty() {
                    written = write.write_buf(buf).await?;
                    *needs_flush = true;
                }
                write.flush().await?;
                *needs_flush = false;
                Ok(written)
            }
        }
    }

    /// True when a layer holds written bytes a cancelled flush left behind: call
    /// [`Writer::write_buf`] (with an empty buffer if need be) to send them.
    pub(crate) fn needs_flush(&self) -> bool {
        matches!(
            self,
            Writer::Layered {
                needs_flush: true,
                ..
            }
        )
    }

    /// Writes all of `buf` (and flushes it).
    pub(crate) async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Writer::Tcp(write) => write.write_all(buf).await,
            Writer::Layered { write, needs_flush } => {
                *needs_flush = true;
                write.write_all(buf).await?;
                write.flush().await?;
                *needs_flush = false;
                Ok(())
            }
        }
    }

    /// Closes the writing side (TCP FIN; TLS close_notify; a WebSocket close frame), telling
    /// the server nothing more comes.
    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Writer::Tcp(write) => write.shutdown().await,
            Writer::Layered { write, .. } => write.shutdown().await,
        }
    }
}
