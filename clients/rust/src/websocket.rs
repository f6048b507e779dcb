//! WebSocket as a byte stream: [`WsIo`] turns a tokio-websockets stream into `AsyncRead` +
//! `AsyncWrite`, because the protocol over WebSocket is "Holdfast frames in binary messages as
//! one byte stream" (docs/PROTOCOL.md, "Over WebSocket"): a message may carry several frames or
//! part of one, so everything above the transport reads and writes bytes as over TCP.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_websockets::{Message, WebSocketStream};

/// The subprotocol the server requires in the upgrade.
pub const SUBPROTOCOL: &str = "holdfast.v1";

/// Largest binary message this client sends, in bytes: below any `max_frame_bytes` a server
/// accepts, so a message never exceeds the server's limit (a longer write becomes several
/// messages, which the server reads as one byte stream).
pub const WS_MESSAGE_MAX_BYTES: usize = 16_384;

/// A WebSocket connection read and written as the byte stream it carries.
pub(crate) struct WsIo<S> {
    socket: WebSocketStream<S>,
    /// The rest of the last binary message, not yet read.
    pending: Bytes,
    /// The server closed (or the stream ended): reads return end of stream.
    ended: bool,
}

impl<S> WsIo<S> {
    pub(crate) fn new(socket: WebSocketStream<S>) -> WsIo<S> {
        WsIo {
            socket,
            pending: Bytes::new(),
            ended: false,
        }
    }
}

fn to_io(error: tokio_websockets::Error) -> io::Error {
    match error {
        tokio_websockets::Error::Io(error) => error,
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            // tokio-websockets answers pings (and the close handshake) itself while polled.
            match ready!(Pin::new(&mut this.socket).poll_next(cx)) {
                None => this.ended = true,
                Some(Err(error)) => return Poll::Ready(Err(to_io(error))),
                Some(Ok(message)) if message.is_binary() => {
                    this.pending = Bytes::from(message.into_payload());
                }
                Some(Ok(message)) if message.is_close() => this.ended = true,
                Some(Ok(message)) if message.is_text() => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the server sent a text message; Holdfast frames travel in binary ones",
                    )));
                }
                // Ping and pong: nothing for the byte stream.
                Some(Ok(_)) => {}
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut socket = Pin::new(&mut this.socket);
        ready!(socket.as_mut().poll_ready(cx)).map_err(to_io)?;
        let n = buf.len().min(WS_MESSAGE_MAX_BYTES);
        socket
            .start_send(Message::binary(Bytes::copy_from_slice(&buf[..n])))
            .map_err(to_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket)
            .poll_flush(cx)
            .map_err(to_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Sends a close frame (1000) and flushes it.
        Pin::new(&mut self.get_mut().socket)
            .poll_close(cx)
            .map_err(to_io)
    }
}
