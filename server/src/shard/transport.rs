//! The shard side of transports (`crate::transport`): which listener a connection came from,
//! received bytes through its transport before the decoder, outbound batches wrapped before
//! the send, and its closing bytes (a WebSocket close frame) after the last batch.
//!
//! A connection with a transport has `Conn::transport` set and its state in
//! `Shard::transports` (a side table by slot). Plain connections never touch either.

use std::ops::ControlFlow;

use bytes::BytesMut;
use holdfast_protocol::decode::Fed;
use holdfast_protocol::{DecodeError, Decoder};

use crate::conn::{Conn, ConnFlags, SessionState};
use crate::metrics::CloseReason;
use crate::ring::user_data::{Op, UserData};
use crate::session::{self, SessionCx, Verdict};
use crate::transport::{CloseCause, Outcome, TransportKind};

use super::state::Shard;

/// Listeners per shard: plain TCP (index 0), WebSocket (index 1) and TLS (index 2).
pub(super) const LISTENER_COUNT: usize = 3;

/// The transport of connections accepted on listener `index`.
pub(super) fn listener_kind(index: usize) -> TransportKind {
    match index {
        0 => TransportKind::Plain,
        1 => TransportKind::Ws,
        _ => TransportKind::Tls,
    }
}

/// The transport's closing bytes for a session that ends for `reason`.
fn close_cause(reason: CloseReason) -> CloseCause {
    match reason {
        CloseReason::PeerEof | CloseReason::PeerEofMidFrame | CloseReason::PeerGoodbye => {
            CloseCause::Normal
        }
        CloseReason::Drain => CloseCause::GoingAway,
        _ => CloseCause::SessionError,
    }
}

impl Shard {
    /// A connection was accepted on listener `listener`: give it its transport state. `false`:
    /// it could not start (counted and logged); the caller closes the connection.
    pub(super) fn start_transport(&mut self, slot: u32, listener: usize) -> bool {
        let kind = listener_kind(listener);
        if kind == TransportKind::Plain {
            return true;
        }
        // A TLS connection starts from the certificate current now (a reload since the last
        // accept is picked up here); live sessions keep the one they started with.
        let tls = self.tls_config.as_mut().map(|cache| cache.current());
        match kind.start(tls) {
            Ok(transport) => {
                if let Some(conn) = self.conns.get_live_mut(slot) {
                    conn.transport = kind;
                    self.transports.insert(slot, transport);
                }
                true
            }
            Err(error) => {
                tracing::warn!(
                    shard = self.index,
                    slot,
                    "cannot start the transport: {error}"
                );
                if kind == TransportKind::Tls {
                    self.counters.tls_handshake_failures += 1;
                }
                false
            }
        }
    }

    /// Tells the transport the session ends (before its last flush), so its closing bytes
    /// follow the last batch.
    pub(super) fn close_transport(&mut self, slot: u32, reason: CloseReason) {
        if let Some(transport) = self.transports.get_mut(&slot) {
            transport.close(close_cause(reason));
        }
    }

    /// Bytes a recv put in `buffer_id`, for a connection with a transport: the transport reads
    /// them in place (handshake, frames) and hands the plaintext to the decoder.
    pub(super) fn on_transport_bytes(&mut self, slot: u32, buffer_id: u16, len: usize) {
        let now = self.now_tick();
        let Some(conn) = self.conns.get_live_mut(slot) else {
            return;
        };
        let generation = conn.generation;
        let mut decoder = match conn.decoder.take() {
            Some(decoder) => decoder,
            None => self.take_decoder(),
        };
        // Counted again in after_feed if the connection keeps a partial frame.
        self.partial_frame_bytes -= decoder.buffered_bytes() as u64;
        let frames_in_before = self.counters.frames_in;
        let Some(transport) = self.transports.get_mut(&slot) else {
            debug_assert!(false, "a transport connection has its state");
            return;
        };
        let (tls_before, ws_before) = transport.handshakes_done();
        let bytes = self.ring.bufs_mut(slot).filled_mut(buffer_id, len);
        let (conns, cx) = super::state::split_for_session(
            &mut self.conns,
            &mut self.handler,
            &mut self.counters,
            &mut self.outbound_pool,
            &self.limits,
            &mut self.push,
            self.index,
            slot,
            self.reaped_at,
        );
        let conn = conns.get_live_mut(slot).expect("checked above");
        let mut feed = Feed::new(conn, cx, &mut decoder, now);
        let outcome = transport.on_received(&self.transport_config, bytes, |run| feed.feed(run));
        let mut result = feed.finish();
        // A wss connection can finish both handshakes in one read.
        let (tls_after, ws_after) = transport.handshakes_done();
        if !tls_before && tls_after {
            self.counters.tls_handshakes += 1;
        }
        if !ws_before && ws_after {
            self.counters.ws_upgrades += 1;
        }
        if !tls_before && matches!(outcome, Err(crate::transport::TransportError::Tls(_))) {
            self.counters.tls_handshake_failures += 1;
        }
        match outcome {
            Ok(Outcome::Continue | Outcome::SinkStopped) => {}
            Ok(Outcome::PeerClosed) => result.close_if_open(CloseReason::PeerEof),
            Err(error) => {
                if let Some(suppressed) = self.log_protocol_errors.allow(std::time::Instant::now())
                {
                    tracing::info!(
                        shard = self.index,
                        slot,
                        transport = transport.kind_name(),
                        suppressed,
                        "transport refused the peer: {error}"
                    );
                }
                result.close_if_open(CloseReason::TransportError);
            }
        }
        self.after_feed(slot, generation, decoder, result, frames_in_before);
    }

    /// After a transport's plaintext was fed (as the end of `on_bytes` does for plain input):
    /// log a decode error, hold what a pause left undecoded, keep the decoder only while it
    /// holds a partial frame (within the shard's budget), then send or close.
    fn after_feed(
        &mut self,
        slot: u32,
        generation: u32,
        decoder: Box<Decoder>,
        result: FeedResult,
        frames_in_before: u64,
    ) {
        if let Some(error) = result.error {
            if let Some(suppressed) = self.log_protocol_errors.allow(std::time::Instant::now()) {
                tracing::info!(
                    shard = self.index,
                    slot,
                    code = error.code().name(),
                    suppressed,
                    "bad input: {error}"
                );
            }
        }
        if !result.held.is_empty() && result.verdict == Verdict::Continue {
            self.held_input
                .entry(slot)
                .or_insert_with(|| (generation, BytesMut::new()))
                .1
                .extend_from_slice(&result.held);
            self.counters.held_input_copied_bytes += result.held.len() as u64;
        }
        let frame_completed = self.counters.frames_in > frames_in_before;
        self.settle_decoder(slot, decoder, result.verdict, frame_completed);
    }

    /// `flush` for a connection with a transport: the queued batch (if any) and the
    /// transport's own bytes become one send of wire bytes.
    pub(super) fn flush_transport(&mut self, slot: u32) {
        let Some(conn) = self.conns.get_live_mut(slot) else {
            return;
        };
        if conn.flags.has(ConnFlags::SEND_IN_FLIGHT) {
            return;
        }
        let ud = UserData::new(Op::Send, slot, conn.generation);
        if let Some(transport) = self.transports.get_mut(&slot) {
            let batch = conn.outbound.as_mut().and_then(|out| out.take_batch());
            if batch.is_some() || transport.has_wire_bytes() {
                let wire = transport.wrap_outbound(batch.unwrap_or_default());
                let out = conn
                    .outbound
                    .get_or_insert_with(|| self.outbound_pool.take());
                // The send carries the wire bytes; the queue counts them while in flight.
                out.in_flight_bytes = wire.len();
                if !wire.is_empty() {
                    conn.flags.set(ConnFlags::SEND_IN_FLIGHT);
                    self.ring.send(slot, ud, wire);
                    return;
                }
                // Nothing the peer can take (a batch before the upgrade or after a close).
                out.in_flight_since = None;
            }
        }
        if let Some(out) = conn.outbound.as_ref() {
            if out.is_idle() {
                conn.inflight_requests = 0;
                let idle = conn.outbound.take().expect("checked above");
                self.outbound_pool.give(idle);
            }
        }
        if conn.outbound.is_none() && conn.state == SessionState::Closing {
            self.after_final_flush(slot);
        }
    }
}

/// The plaintext a transport yields, into the decoder and the session, one run at a time,
/// borrowed apart from the ring and the receive buffers (the transport holds the buffer).
pub(super) struct Feed<'a> {
    conn: &'a mut Conn,
    cx: SessionCx<'a>,
    decoder: &'a mut Decoder,
    now: u32,
    result: FeedResult,
}

/// What feeding did: the session's verdict, a decode error (already answered with an Error
/// frame), and plaintext left undecoded by a pause (held until the parked event is taken).
pub(super) struct FeedResult {
    verdict: Verdict,
    error: Option<DecodeError>,
    held: Vec<u8>,
}

impl FeedResult {
    /// Closes for `reason` unless the session already decided to close.
    fn close_if_open(&mut self, reason: CloseReason) {
        if self.verdict == Verdict::Continue {
            self.verdict = Verdict::Close(reason);
        }
    }
}

impl<'a> Feed<'a> {
    fn new(conn: &'a mut Conn, cx: SessionCx<'a>, decoder: &'a mut Decoder, now: u32) -> Self {
        Feed {
            conn,
            cx,
            decoder,
            now,
            result: FeedResult {
                verdict: Verdict::Continue,
                error: None,
                held: Vec::new(),
            },
        }
    }

    /// Decodes `bytes` into the session. `Break` once the session closes (the rest of the
    /// stream is not read); a paused session holds the bytes instead.
    fn feed(&mut self, bytes: &[u8]) -> ControlFlow<()> {
        if self.result.verdict != Verdict::Continue {
            return ControlFlow::Break(());
        }
        if self.conn.flags.has(ConnFlags::READ_PAUSED) {
            self.result.held.extend_from_slice(bytes);
            return ControlFlow::Continue(());
        }
        let conn = &mut *self.conn;
        let cx = &mut self.cx;
        let now = self.now;
        let verdict = &mut self.result.verdict;
        let fed = self.decoder.feed(bytes, |frame| {
            *verdict = session::on_frame(conn, cx, frame, now);
            if *verdict == Verdict::Continue && conn.flags.has(ConnFlags::READ_PAUSED) {
                // Its event was parked: nothing more is decoded until it is taken.
                return ControlFlow::Break(());
            }
            verdict.flow()
        });
        match fed {
            Ok(Fed::All) => ControlFlow::Continue(()),
            Ok(Fed::Stopped { consumed }) if self.result.verdict == Verdict::Continue => {
                self.result.held.extend_from_slice(&bytes[consumed..]);
                ControlFlow::Continue(())
            }
            Ok(Fed::Stopped { .. }) => ControlFlow::Break(()),
            Err(error) => {
                let reason = error.to_string();
                session::queue_error(
                    self.conn,
                    &mut self.cx,
                    error.code(),
                    error.frame_id(),
                    &reason,
                );
                self.result.verdict = Verdict::Close(CloseReason::ProtocolError);
                self.result.error = Some(error);
                ControlFlow::Break(())
            }
        }
    }

    fn finish(self) -> FeedResult {
        self.result
    }
}
