//! The shard side of transports (`crate::transport`): which listener a connection came from,
//! received bytes through its transport before the decoder, outbound batches wrapped before
//! the send, and its closing bytes (a WebSocket close frame) after the last batch.
//!
//! A connection with a transport has `Conn::transport` set and its state in
//! `Shard::transports` (a side table by slot). Plain connections never touch either.

use crate::conn::{ConnFlags, SessionState};
use crate::metrics::CloseReason;
use crate::ring::user_data::{Op, UserData};
use crate::transport::{CloseCause, Outcome, TransportKind};

use super::io::Feed;
use super::state::Shard;

/// Listeners per shard: plain TCP (index 0), WebSocket (index 1) and TLS (index 2).
pub const LISTENER_COUNT: usize = 3;

/// The transport of connections accepted on listener `index`.
pub fn listener_kind(index: usize) -> TransportKind {
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
        let Some(transport) = self.transports.get_mut(&slot) else {
            debug_assert!(false, "a transport connection has its state");
            return;
        };
        let upgraded_before = transport.is_established();
        let bytes = self.bufs.filled_mut(buffer_id, len);
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
        if !upgraded_before && transport.is_established() {
            match transport.kind_name() {
                "tls" => self.counters.tls_handshakes += 1,
                _ => self.counters.ws_upgrades += 1,
            }
        }
        if !upgraded_before && matches!(outcome, Err(crate::transport::TransportError::Tls(_))) {
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
        self.after_feed(slot, generation, decoder, result);
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
