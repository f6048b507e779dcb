//! The byte stream under a session. Each transport is a variant of [`Transport`] and splits
//! into a reading and a writing half, so the connection task can read and write at once.
//!
//! Only TCP exists: the server has no TLS or WebSocket listener yet. Adding one means a variant
//! here and in each half (`Tls(tokio_rustls::client::TlsStream<TcpStream>)` split with
//! `tokio::io::split`; `WebSocket(..)` from tokio-tungstenite, whose halves carry frames as
//! binary messages), and a matching [`Endpoint`] variant; nothing above this module changes.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::config::Endpoint;
use crate::error::Error;

/// One connected byte stream.
pub(crate) enum Transport {
    Tcp(TcpStream),
}

/// The reading half of a [`Transport`].
pub(crate) enum Reader {
    Tcp(OwnedReadHalf),
}

/// The writing half of a [`Transport`].
pub(crate) enum Writer {
    Tcp(OwnedWriteHalf),
}

/// Connects to `endpoint` within `timeout_ms` (name resolution included).
pub(crate) async fn connect(endpoint: &Endpoint, timeout_ms: u64) -> Result<Transport, Error> {
    let attempt = async {
        match endpoint {
            Endpoint::Tcp { addr } => {
                let stream = TcpStream::connect(addr.as_str()).await?;
                // Frames are small and latency matters more than packet count.
                stream.set_nodelay(true)?;
                Ok::<_, io::Error>(Transport::Tcp(stream))
            }
        }
    };
    match tokio::time::timeout(Duration::from_millis(timeout_ms), attempt).await {
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
        }
    }
}

impl Reader {
    /// Appends what is readable to `buf` (into its spare capacity); 0 means end of stream.
    /// Cancel-safe: if dropped before it completes, nothing was read.
    pub(crate) async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Reader::Tcp(read) => read.read_buf(buf).await,
        }
    }
}

impl Writer {
    /// Writes some of `buf` and advances it past what was written. Cancel-safe: if dropped
    /// before it completes, nothing was written.
    pub(crate) async fn write_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Writer::Tcp(write) => write.write_buf(buf).await,
        }
    }

    /// Writes all of `buf`.
    pub(crate) async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Writer::Tcp(write) => write.write_all(buf).await,
        }
    }

    /// Half-closes the writing side (TCP FIN), telling the server nothing more comes.
    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Writer::Tcp(write) => write.shutdown().await,
        }
    }
}
