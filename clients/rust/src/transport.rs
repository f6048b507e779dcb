//! The byte stream under a session. Each transport is a variant of [`Transport`] and splits
//! into a reading and a writing half, so the connection task can read and write at once.
//!
//! TCP splits into owned halves. TLS (tokio-rustls), WebSocket (tokio-websockets, as a byte
//! stream through [`WsIo`]) and WebSocket inside TLS are one boxed stream split with
//! `tokio::io::split`. Those layers may hold written bytes until flushed, so their writer
//! flushes after every write and remembers an interrupted flush ([`Writer::needs_flush`]).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
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

async fn tcp(addr: &str, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let stream = match source {
        None => TcpStream::connect(addr).await?,
        Some(source) => from_source(addr, source).await?,
    };
    // Frames are small and latency matters more than packet count.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects from `source` (port picked by the kernel at bind) to the first address `addr`
/// resolves to in the same family.
async fn from_source(addr: &str, source: IpAddr) -> io::Result<TcpStream> {
    let mut last = None;
    for target in tokio::net::lookup_host(addr).await? {
        if target.is_ipv4() != source.is_ipv4() {
            continue;
        }
        let socket = if target.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(source, 0))?;
        match socket.connect(target).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("{addr} resolves to no address of the family of source_addr {source}"),
        )
    }))
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

async fn open(endpoint: &Endpoint, source: Option<IpAddr>) -> io::Result<Transport> {
    match endpoint {
        Endpoint::Tcp { addr } => Ok(Transport::Tcp(tcp(addr, source).await?)),
        Endpoint::Tls {
            addr,
            server_name,
            trust,
        } => {
            let name = server_name.as_deref().unwrap_or_else(|| host_of(addr));
            let stream = tls(tcp(addr, source).await?, name, trust.frames_config()).await?;
            Ok(Transport::Layered(Box::new(stream)))
        }
        Endpoint::WebSocket {
            addr,
            path,
            tls: None,
        } => {
            let socket = websocket(tcp(addr, source).await?, addr, path, false).await?;
            Ok(Transport::Layered(Box::new(socket)))
        }
        Endpoint::WebSocket {
            addr,
            path,
            tls: Some(TlsOptions { server_name, trust }),
        } => {
            let name = server_name.as_deref().unwrap_or_else(|| host_of(addr));
            let stream = tls(tcp(addr, source).await?, name, trust.websocket_config()).await?;
            let socket = websocket(stream, addr, path, true).await?;
            Ok(Transport::Layered(Box::new(socket)))
        }
    }
}

/// Connects to `endpoint` within `timeout_ms` (name resolution included).
pub(crate) async fn connect(
    endpoint: &Endpoint,
    source: Option<IpAddr>,
    timeout_ms: u64,
) -> Result<Transport, Error> {
    match tokio::time::timeout(Duration::from_millis(timeout_ms), open(endpoint, source)).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn source_addr_is_the_local_address_of_the_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let source: IpAddr = "127.0.0.3".parse().unwrap();
        let (connected, accepted) = tokio::join!(tcp(&addr, Some(source)), listener.accept());
        assert_eq!(connected.unwrap().local_addr().unwrap().ip(), source);
        assert_eq!(accepted.unwrap().1.ip(), source);
        // Without one the kernel picks (127.0.0.1 towards 127.0.0.1).
        let (connected, _) = tokio::join!(tcp(&addr, None), listener.accept());
        let local = connected.unwrap().local_addr().unwrap().ip();
        assert_eq!(local, IpAddr::from([127, 0, 0, 1]));
    }

    #[tokio::test]
    async fn source_addr_of_another_family_is_a_clear_error() {
        let source: IpAddr = "::1".parse().unwrap();
        let error = tcp("127.0.0.1:1", Some(source)).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrNotAvailable);
        assert!(error.to_string().contains("source_addr"), "{error}");
    }
}
