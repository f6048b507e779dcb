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
//! fatal alert is queued like the WebSocket's answers.
//!
//! wss: every TLS-listener connection starts as `Tls`. The application protocol is known
//! before any plaintext can arrive (ALPN is chosen on the ClientHello, and 0-RTT is off), so
//! the first plaintext run picks the layer above TLS (`alpn_layer`, `sniff_layer`): ALPN
//! `holdfast/1` -> Holdfast frames; ALPN `http/1.1`, or no ALPN and the run starts with
//! `GET ` -> WebSocket.
//! The connection then becomes `Wss` ([`WssState`]: the `TlsState` moved out of its box next
//! to a `WsState`), for the rest of its life.
//!
//! Memory: `Transport` is 16 bytes; each state is boxed, so a plain connection pays nothing
//! and an idle WebSocket one pays its [`ws::WsState`] (no heap buffer once upgraded).

pub mod tls;
pub mod ws;

use std::ops::ControlFlow;

use bytes::Bytes;

pub use tls::{TlsRefusal, TlsState, ALPN_HOLDFAST, ALPN_HTTP_1_1};
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
    /// A TLS-listener connection whose peer chose WebSocket (see the module doc).
    Wss(Box<WssState>),
}

/// WebSocket inside TLS: TLS's plaintext runs (`&mut`, so unmasked in place) go to the
/// WebSocket layer, whose wire bytes TLS encrypts.
#[derive(Debug)]
pub struct WssState {
    tls: TlsState,
    ws: WsState,
}

/// The layer above TLS, chosen on the first plaintext run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AppLayer {
    Holdfast,
    WebSocket,
}

/// The layer above TLS that the negotiated `alpn` names; `None` (no ALPN) leaves it to the
/// first plaintext run (`sniff_layer`).
fn alpn_layer(alpn: Option<&[u8]>) -> Option<AppLayer> {
    match alpn? {
        ALPN_HOLDFAST => Some(AppLayer::Holdfast),
        _ => Some(AppLayer::WebSocket),
    }
}

/// The layer above TLS for a client that offered no ALPN, by its first plaintext run: an HTTP
/// `GET ` (or a prefix of it, for a run under 4 bytes) is a WebSocket Upgrade (the WebSocket
/// layer answers anything else on it with an HTTP error); anything else is Holdfast frames.
/// A Holdfast frame starting with `GET ` would declare a length of 542 MB.
fn sniff_layer(first: &[u8]) -> AppLayer {
    const HTTP_GET: &[u8] = b"GET ";
    if !first.is_empty() && HTTP_GET.starts_with(&first[..first.len().min(HTTP_GET.len())]) {
        AppLayer::WebSocket
    } else {
        AppLayer::Holdfast
    }
}

/// Feeds one plaintext run to the WebSocket layer; a stop, a close or an error ends the TLS
/// read (the result is kept in `ws_result`).
fn feed_ws<S>(
    ws: &mut WsState,
    config: &WsConfig,
    run: &mut [u8],
    sink: &mut S,
    ws_result: &mut Result<ws::WsOutcome, WsError>,
) -> ControlFlow<()>
where
    S: FnMut(&mut [u8]) -> ControlFlow<()>,
{
    if !matches!(ws_result, Ok(ws::WsOutcome::Continue)) {
        return ControlFlow::Break(());
    }
    *ws_result = ws.on_received(config, run, &mut *sink);
    match ws_result {
        Ok(ws::WsOutcome::Continue) => ControlFlow::Continue(()),
        _ => ControlFlow::Break(()),
    }
}

/// The seam's outcome of a TLS read whose plaintext went to the WebSocket layer.
fn wss_outcome(
    tls: Result<tls::TlsOutcome, TlsRefusal>,
    ws: Result<ws::WsOutcome, WsError>,
) -> Result<Outcome, TransportError> {
    let tls = tls?;
    Ok(match ws? {
        ws::WsOutcome::PeerClosed => Outcome::PeerClosed,
        ws::WsOutcome::SinkStopped => Outcome::SinkStopped,
        ws::WsOutcome::Continue => match tls {
            tls::TlsOutcome::Continue => Outcome::Continue,
            tls::TlsOutcome::PeerClosed => Outcome::PeerClosed,
            tls::TlsOutcome::SinkStopped => Outcome::SinkStopped,
        },
    })
}

fn ws_close_reason(cause: CloseCause) -> (u16, &'static str) {
    match cause {
        CloseCause::Normal => (ws::close_code::NORMAL, ""),
        CloseCause::GoingAway => (ws::close_code::GOING_AWAY, "server shutting down"),
        CloseCause::SessionError => (
            ws::close_code::POLICY_VIOLATION,
            "session ended with an Error frame",
        ),
    }
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
            Transport::Wss(_) => "wss",
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
            Transport::Tls(tls) => {
                // Chosen once, on the first plaintext run (kept in the TLS state if Holdfast).
                let mut layer = tls.holdfast_chosen.then_some(AppLayer::Holdfast);
                let mut ws: Option<WsState> = None;
                let mut ws_result = Ok(ws::WsOutcome::Continue);
                // ALPN is settled before any plaintext (see the module doc).
                let by_alpn = alpn_layer(tls.session().alpn_protocol());
                let tls_result = tls.on_received_for_seam(bytes, |run| {
                    let layer =
                        *layer.get_or_insert_with(|| by_alpn.unwrap_or_else(|| sniff_layer(run)));
                    match layer {
                        AppLayer::Holdfast => sink(run),
                        AppLayer::WebSocket => feed_ws(
                            ws.get_or_insert_with(WsState::new),
                            &config.ws,
                            run,
                            &mut sink,
                            &mut ws_result,
                        ),
                    }
                });
                let Some(ws) = ws else {
                    tls.holdfast_chosen = layer == Some(AppLayer::Holdfast);
                    return Ok(match tls_result? {
                        tls::TlsOutcome::Continue => Outcome::Continue,
                        tls::TlsOutcome::PeerClosed => Outcome::PeerClosed,
                        tls::TlsOutcome::SinkStopped => Outcome::SinkStopped,
                    });
                };
                let Transport::Tls(tls) = std::mem::replace(self, Transport::Plain) else {
                    unreachable!("matched above");
                };
                *self = Transport::Wss(Box::new(WssState { tls: *tls, ws }));
                wss_outcome(tls_result, ws_result)
            }
            Transport::Wss(wss) => {
                let WssState { tls, ws } = &mut **wss;
                let mut ws_result = Ok(ws::WsOutcome::Continue);
                let tls_result = tls.on_received_for_seam(bytes, |run| {
                    feed_ws(ws, &config.ws, run, &mut sink, &mut ws_result)
                });
                wss_outcome(tls_result, ws_result)
            }
        }
    }

    /// Whether the transport's handshake is done (always, for plain TCP): the peer can take
    /// Holdfast frames.
    pub fn is_established(&self) -> bool {
        match self {
            Transport::Plain => true,
            Transport::Ws(ws) => ws.is_upgraded(),
            Transport::Tls(tls) => tls.is_established(),
            Transport::Wss(wss) => wss.tls.is_established() && wss.ws.is_upgraded(),
        }
    }

    /// Which handshakes are done, for the counters: (the TLS handshake, the WebSocket Upgrade).
    pub fn handshakes_done(&self) -> (bool, bool) {
        match self {
            Transport::Plain => (false, false),
            Transport::Ws(ws) => (false, ws.is_upgraded()),
            Transport::Tls(tls) => (tls.is_established(), false),
            Transport::Wss(wss) => (wss.tls.is_established(), wss.ws.is_upgraded()),
        }
    }

    /// See the module doc.
    pub fn wrap_outbound(&mut self, batch: Bytes) -> Bytes {
        match self {
            Transport::Plain => batch,
            Transport::Ws(ws) => ws.wrap_outbound(batch),
            Transport::Tls(tls) => tls.wrap_outbound_for_seam(&batch),
            Transport::Wss(wss) => {
                let plaintext = wss.ws.wrap_outbound(batch);
                wss.tls.wrap_outbound_for_seam(&plaintext)
            }
        }
    }

    /// See the module doc.
    pub fn has_wire_bytes(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Ws(ws) => ws.has_wire_bytes(),
            Transport::Tls(tls) => tls.has_wire_bytes(),
            Transport::Wss(wss) => wss.ws.has_wire_bytes() || wss.tls.has_wire_bytes(),
        }
    }

    /// See the module doc.
    pub fn close(&mut self, cause: CloseCause) {
        match self {
            Transport::Plain => {}
            Transport::Ws(ws) => {
                let (code, reason) = ws_close_reason(cause);
                ws.close(code, reason);
            }
            // close_notify whatever the cause: the Holdfast Error or Goodbye frame before it
            // says why.
            Transport::Tls(tls) => tls.close(),
            // The WebSocket close frame, then close_notify after it.
            Transport::Wss(wss) => {
                let (code, reason) = ws_close_reason(cause);
                wss.ws.close(code, reason);
                wss.tls.close();
            }
        }
    }

    /// User-space bytes this transport holds for its connection (boxed state and buffers).
    pub fn held_bytes(&self) -> usize {
        match self {
            Transport::Plain => 0,
            Transport::Ws(ws) => std::mem::size_of::<WsState>() + ws.heap_bytes(),
            Transport::Tls(tls) => tls.held_bytes(),
            Transport::Wss(wss) => {
                wss.tls.held_bytes() + std::mem::size_of::<WsState>() + wss.ws.heap_bytes()
            }
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

    /// A rustls client and a TLS-listener transport, talking through memory.
    mod wss {
        use super::*;
        use rustls::pki_types::ServerName;
        use rustls::{ClientConfig, ClientConnection, RootCertStore};
        use std::io::{Read, Write};
        use std::sync::Arc;

        const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: holdfast.v1\r\n\r\n";

        fn pair(alpn: &[&[u8]]) -> (Transport, ClientConnection) {
            let rcgen::CertifiedKey { cert, signing_key } =
                rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            let server = tls::server_config_from_pem(
                cert.pem().as_bytes(),
                signing_key.serialize_pem().as_bytes(),
            )
            .unwrap();
            let mut roots = RootCertStore::empty();
            roots.add(cert.der().clone()).unwrap();
            let mut config = ClientConfig::builder_with_provider(tls::crypto_provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            let client =
                ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
                    .unwrap();
            (TransportKind::Tls.start(Some(&server)).unwrap(), client)
        }

        /// The client's pending ciphertext into the transport, `piece_bytes` at a time;
        /// returns what reached the Holdfast sink.
        fn to_server(
            transport: &mut Transport,
            client: &mut ClientConnection,
            piece_bytes: usize,
        ) -> Vec<u8> {
            let mut ciphertext = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut ciphertext).unwrap();
            }
            let mut seen = Vec::new();
            for piece in ciphertext.chunks(piece_bytes) {
                let outcome = transport
                    .on_received(&config(), &mut piece.to_vec(), |run| {
                        seen.extend_from_slice(run);
                        ControlFlow::Continue(())
                    })
                    .unwrap();
                assert_eq!(outcome, Outcome::Continue);
            }
            seen
        }

        /// The transport's wire bytes for `batch` into the client; returns the plaintext.
        fn to_client(
            transport: &mut Transport,
            client: &mut ClientConnection,
            batch: &[u8],
        ) -> Vec<u8> {
            let wire = transport.wrap_outbound(Bytes::copy_from_slice(batch));
            let mut wire = &wire[..];
            let mut plaintext = Vec::new();
            while !wire.is_empty() {
                client.read_tls(&mut wire).unwrap();
                let state = client.process_new_packets().unwrap();
                let mut chunk = vec![0; state.plaintext_bytes_to_read()];
                client.reader().read_exact(&mut chunk).unwrap();
                plaintext.extend_from_slice(&chunk);
            }
            plaintext
        }

        fn handshake(transport: &mut Transport, client: &mut ClientConnection, piece_bytes: usize) {
            for _ in 0..8 {
                assert!(to_server(transport, client, piece_bytes).is_empty());
                assert!(to_client(transport, client, b"").is_empty());
                if !client.is_handshaking() && !client.wants_write() {
                    return;
                }
            }
            panic!("handshake did not complete");
        }

        fn masked_binary(payload: &[u8]) -> Vec<u8> {
            let mask = [0x37, 0xfa, 0x21, 0x3d];
            let mut frame = vec![0x82, 0x80 | payload.len() as u8];
            frame.extend_from_slice(&mask);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            frame
        }

        #[test]
        fn wss_upgrade_and_messages_split_at_every_piece_size_reach_the_sink_unmasked() {
            let payload = b"sixteen byte hdr and a payload";
            for alpn in [&[ALPN_HTTP_1_1][..], &[]] {
                for piece_bytes in [1, 3, 17, usize::MAX] {
                    let (mut transport, mut client) = pair(alpn);
                    handshake(&mut transport, &mut client, piece_bytes);
                    assert_eq!(transport.kind_name(), "tls");
                    // The request and two messages, each split over two TLS records.
                    let first = masked_binary(&payload[..10]);
                    let second = masked_binary(&payload[10..]);
                    for bytes in [UPGRADE, &first[..], &second[..]] {
                        let (a, b) = bytes.split_at(bytes.len() / 2);
                        client.writer().write_all(a).unwrap();
                        client.writer().write_all(b).unwrap();
                    }
                    let seen = to_server(&mut transport, &mut client, piece_bytes);
                    assert_eq!(seen, payload, "alpn {alpn:?} pieces {piece_bytes}");
                    assert_eq!(transport.kind_name(), "wss");
                    assert_eq!(transport.handshakes_done(), (true, true));
                    assert!(transport.has_wire_bytes(), "the 101 is queued");
                    let reply = to_client(&mut transport, &mut client, b"frames");
                    let text = String::from_utf8_lossy(&reply);
                    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
                    assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{text}");
                    assert!(reply.ends_with(b"\x82\x06frames"), "{reply:?}");
                    transport.close(CloseCause::GoingAway);
                    let close = to_client(&mut transport, &mut client, b"");
                    assert_eq!(&close[..4], &[0x88, close.len() as u8 - 2, 0x03, 0xe9]);
                    assert!(client.process_new_packets().unwrap().peer_has_closed());
                }
            }
        }

        #[test]
        fn holdfast_alpn_on_the_same_listener_stays_holdfast_frames() {
            let (mut transport, mut client) = pair(&[ALPN_HOLDFAST, ALPN_HTTP_1_1]);
            handshake(&mut transport, &mut client, usize::MAX);
            assert_eq!(client.alpn_protocol(), Some(ALPN_HOLDFAST));
            // Even bytes that look like an Upgrade are Holdfast bytes here.
            client.writer().write_all(UPGRADE).unwrap();
            assert_eq!(to_server(&mut transport, &mut client, 5), UPGRADE);
            assert_eq!(transport.kind_name(), "tls");
            assert_eq!(to_client(&mut transport, &mut client, b"frames"), b"frames");
        }

        #[test]
        fn no_alpn_and_holdfast_bytes_stay_holdfast_frames() {
            let (mut transport, mut client) = pair(&[]);
            handshake(&mut transport, &mut client, usize::MAX);
            let frame = [0x28, 0, 0, 0, 1, 2, 0, 0];
            client.writer().write_all(&frame).unwrap();
            assert_eq!(to_server(&mut transport, &mut client, 1), frame);
            assert_eq!(transport.kind_name(), "tls");
            // The choice is made once: later bytes that look like HTTP are still Holdfast's.
            client.writer().write_all(b"G").unwrap();
            client.writer().write_all(UPGRADE).unwrap();
            let mut expected = b"G".to_vec();
            expected.extend_from_slice(UPGRADE);
            assert_eq!(to_server(&mut transport, &mut client, usize::MAX), expected);
            assert_eq!(transport.kind_name(), "tls");
        }

        #[test]
        fn http_alpn_with_a_wrong_path_gets_an_http_error_inside_tls() {
            let (mut transport, mut client) = pair(&[ALPN_HTTP_1_1]);
            handshake(&mut transport, &mut client, usize::MAX);
            client
                .writer()
                .write_all(&UPGRADE.to_vec().splice(4..7, *b"/no").collect::<Vec<_>>())
                .unwrap();
            let mut ciphertext = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut ciphertext).unwrap();
            }
            let result = transport.on_received(&config(), &mut ciphertext, |_| {
                panic!("no plaintext reaches Holdfast")
            });
            assert!(matches!(result, Err(TransportError::Ws(_))), "{result:?}");
            let answer = to_client(&mut transport, &mut client, b"");
            assert!(
                answer.starts_with(b"HTTP/1.1 4"),
                "{}",
                String::from_utf8_lossy(&answer)
            );
        }
    }

    #[test]
    fn the_transport_enum_stays_two_words() {
        assert!(std::mem::size_of::<Transport>() <= 16);
    }
}
