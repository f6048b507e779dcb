//! Transports: the layer between a connection's received bytes and the Holdfast decoder, and
//! between its outbound batches and the send. Plain TCP passes bytes through; WebSocket
//! ([`ws`]) answers the Upgrade, unmasks frames in the receive buffer and wraps each batch as
//! one binary message; TLS (another module, see below) decrypts records in place and encrypts
//! batches. The shard calls the same four methods whatever the listener was:
//!
//! - `on_received(&mut self, config, bytes: &mut [u8], sink)`: reads *all* of `bytes` (a
//!   slice of a provided receive buffer, which the transport may change in place: unmask,
//!   decrypt) and calls `sink(&mut [u8]) -> ControlFlow<()>` with each run of plaintext
//!   Holdfast bytes, in stream order. The sink is the decoder feed; `Break` means the session
//!   is closing and the rest is dropped ([`Outcome::SinkStopped`]). A transport keeps only
//!   what it cannot use yet (a split frame header, an incomplete handshake), never plaintext.
//!   `Err(TransportError)` means the connection must end: the transport has queued its own
//!   answer (HTTP error, close frame, TLS alert), so the shard flushes, then closes.
//! - `wrap_outbound(&mut self, batch: Bytes) -> Bytes`: the wire bytes of one send: the
//!   transport's own bytes first (handshake answer, pong), `batch` (whole Holdfast frames,
//!   possibly empty) in its framing, then a queued close. Plain returns `batch` unchanged.
//! - `has_wire_bytes(&self)`: the transport has bytes of its own to send (so the shard sends
//!   even when no Holdfast frame is queued: a 101, a pong, a TLS handshake flight).
//! - `close(&mut self, cause)`: the server ends the session; the transport queues its closing
//!   bytes (a WebSocket close frame, a TLS close_notify) for the next `wrap_outbound`.
//!
//! A layered transport composes: `Wss` is TLS whose sink is the WebSocket's `on_received`
//! (the plaintext slice is `&mut`, so it unmasks in place too), and whose `wrap_outbound`
//! encrypts what the WebSocket's produced.
//!
//! TLS ([`tls`]): `Tls` holds a boxed [`TlsState`] (a rustls unbuffered session: records
//! decrypted in place, batches encrypted into the send); a failure is a [`TlsRefusal`] whose
//! fatal alert is queued like the WebSocket's answers. `Wss` (TLS carrying WebSocket) is not
//! wired yet: it composes the two as described above.
//!
//! Memory: `Transport` is 16 bytes; each state is boxed, so a plain connection pays nothing
//! and an idle WebSocket one pays its [`ws::WsState`] (no heap buffer once upgraded).

pub mod tls;
pub mod ws;

use std::ops::ControlFlow;

use bytes::Bytes;

pub use tls::{TlsRefusal, TlsState};
pub use ws::{WsConfig, WsError, WsState};

/// Which transport a listener speaks; each accepted connection starts its state from this.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum TransportKind {
    #[default]
    Plain,
    Ws,
    Tls,
}

impl TransportKind {
    /// A connection's transport state right after accept. TLS starts from the listener's
    /// current `ServerConfig` (`tls`; `None` for the other kinds).
    pub fn start(
        self,
        tls: Option<&std::sync::Arc<rustls::ServerConfig>>,
    ) -> Result<Transport, TransportError> {
        Ok(match self {
            TransportKind::Plain => Transport::Plain,
            TransportKind::Ws => Transport::Ws(Box::default()),
            TransportKind::Tls => {
                let config = tls.ok_or(TransportError::Tls(TlsRefusal::Handshake))?;
                let state = TlsState::new(std::sync::Arc::clone(config))
                    .map_err(|_| TransportError::Tls(TlsRefusal::Handshake))?;
                Transport::Tls(Box::new(state))
            }
        })
    }

    /// The name used in logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Plain => "tcp",
            TransportKind::Ws => "ws",
            TransportKind::Tls => "tls",
        }
    }
}

/// One connection's transport.
#[derive(Debug)]
pub enum Transport {
    Plain,
    Ws(Box<WsState>),
    Tls(Box<TlsState>),
}

/// What one shard's transports need to know; shared by its connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    pub ws: WsConfig,
}

/// What `on_received` did with its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// All input was used; keep reading (check `has_wire_bytes`).
    Continue,
    /// The peer closed the transport cleanly (its close was answered): send, then close.
    PeerClosed,
    /// The sink asked to stop; the rest of the input was dropped.
    SinkStopped,
}

/// Why the transport ends the connection; its answer is queued (`has_wire_bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Ws(#[from] WsError),
    #[error(transparent)]
    Tls(#[from] TlsRefusal),
}

/// Why the server ends a session, for the transport's closing bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCause {
    /// Goodbye exchanged, or the peer closed.
    Normal,
    /// The server is draining or shutting down.
    GoingAway,
    /// The session sent an Error (bad frame, auth, timeout, slow consumer) and ends.
    SessionError,
}

impl Transport {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Transport::Plain => TransportKind::Plain.name(),
            Transport::Ws(_) => TransportKind::Ws.name(),
            Transport::Tls(_) => TransportKind::Tls.name(),
        }
    }

    /// See the module doc.
    pub fn on_received<S>(
        &mut self,
        config: &TransportConfig,
        bytes: &mut [u8],
        mut sink: S,
    ) -> Result<Outcome, TransportError>
    where
        S: FnMut(&mut [u8]) -> ControlFlow<()>,
    {
        match self {
            Transport::Plain => Ok(match sink(bytes) {
                ControlFlow::Continue(()) => Outcome::Continue,
                ControlFlow::Break(()) => Outcome::SinkStopped,
            }),
            Transport::Ws(ws) => Ok(match ws.on_received(&config.ws, bytes, sink)? {
                ws::WsOutcome::Continue => Outcome::Continue,
                ws::WsOutcome::PeerClosed => Outcome::PeerClosed,
                ws::WsOutcome::SinkStopped => Outcome::SinkStopped,
            }),
            Transport::Tls(tls) => Ok(match tls.on_received_for_seam(bytes, sink)? {
                tls::TlsOutcome::Continue => Outcome::Continue,
                tls::TlsOutcome::PeerClosed => Outcome::PeerClosed,
                tls::TlsOutcome::SinkStopped => Outcome::SinkStopped,
            }),
        }
    }

    /// Whether the transport's handshake is done (always, for plain TCP): the peer can take
    /// Holdfast frames.
    pub fn is_established(&self) -> bool {
        match self {
            Transport::Plain => true,
            Transport::Ws(ws) => ws.is_upgraded(),
            Transport::Tls(tls) => tls.is_established(),
        }
    }

    /// See the module doc.
    pub fn wrap_outbound(&mut self, batch: Bytes) -> Bytes {
        match self {
            Transport::Plain => batch,
            Transport::Ws(ws) => ws.wrap_outbound(batch),
            Transport::Tls(tls) => tls.wrap_outbound_for_seam(&batch),
        }
    }

    /// See the module doc.
    pub fn has_wire_bytes(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Ws(ws) => ws.has_wire_bytes(),
            Transport::Tls(tls) => tls.has_wire_bytes(),
        }
    }

    /// See the module doc.
    pub fn close(&mut self, cause: CloseCause) {
        match self {
            Transport::Plain => {}
            Transport::Ws(ws) => {
                let (code, reason) = match cause {
                    CloseCause::Normal => (ws::close_code::NORMAL, ""),
                    CloseCause::GoingAway => (ws::close_code::GOING_AWAY, "server shutting down"),
                    CloseCause::SessionError => (
                        ws::close_code::POLICY_VIOLATION,
                        "session ended with an Error frame",
                    ),
                };
                ws.close(code, reason);
            }
            // close_notify whatever the cause: the Holdfast Error or Goodbye frame before it
            // says why.
            Transport::Tls(tls) => tls.close(),
        }
    }

    /// User-space bytes this transport holds for its connection (boxed state and buffers).
    pub fn held_bytes(&self) -> usize {
        match self {
            Transport::Plain => 0,
            Transport::Ws(ws) => std::mem::size_of::<WsState>() + ws.heap_bytes(),
            Transport::Tls(tls) => tls.held_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TransportConfig {
        TransportConfig {
            ws: WsConfig {
                path: "/ws".into(),
                allowed_origins: Vec::new(),
                max_message_bytes: 65_536,
            },
        }
    }

    #[test]
    fn plain_hands_every_byte_to_the_sink_and_sends_batches_unchanged() {
        let mut transport = TransportKind::Plain.start(None).unwrap();
        let mut input = *b"sixteen byte hdr and a payload";
        let mut seen = Vec::new();
        let outcome = transport
            .on_received(&config(), &mut input, |bytes| {
                seen.extend_from_slice(bytes);
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(outcome, Outcome::Continue);
        assert_eq!(seen, b"sixteen byte hdr and a payload");
        let batch = Bytes::from_static(b"frames");
        let wire = transport.wrap_outbound(batch.clone());
        assert_eq!(wire.as_ptr(), batch.as_ptr(), "no copy for plain TCP");
        assert!(!transport.has_wire_bytes());
        assert_eq!(transport.held_bytes(), 0);
    }

    #[test]
    fn plain_reports_a_stopped_sink() {
        let mut transport = Transport::Plain;
        let outcome = transport
            .on_received(&config(), &mut [1, 2, 3], |_| ControlFlow::Break(()))
            .unwrap();
        assert_eq!(outcome, Outcome::SinkStopped);
    }

    #[test]
    fn the_transport_enum_stays_two_words() {
        assert!(std::mem::size_of::<Transport>() <= 16);
    }
}
