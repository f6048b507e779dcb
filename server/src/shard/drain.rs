//! Graceful drain (SIGTERM/SIGINT): stop accepting, send every session a Goodbye with a
//! jittered reconnect hint, flush, close. Whatever is still queued at drain_timeout_ms is
//! counted and logged, never dropped silently.

use rand::Rng;

use holdfast_protocol::ErrorCode;

use crate::conn::{ConnFlags, SessionState};
use crate::metrics::CloseReason;
use crate::ring::user_data::{Op, UserData};
use crate::session;

use super::state::Shard;

impl Shard {
    /// Starts draining: no new connections; every live one gets Goodbye and a graceful close.
    pub(crate) fn start_drain(&mut self) {
        if self.drain_deadline_tick.is_some() {
            return;
        }
        self.drain_deadline_tick = Some(self.now_tick() + self.ticks.drain);
        for index in 0..self.listeners.len() {
            let cancel = UserData::new(Op::Cancel, index as u32, 0);
            if self.accept_armed[index] {
                self.ring
                    .cancel(UserData::new(Op::Accept, index as u32, 0), cancel);
            }
            if let (Some(_), Some(listener)) = (&self.slot_accepts, &self.listeners[index]) {
                use std::os::fd::AsRawFd;
                self.ring.cancel_accepts(listener.as_raw_fd(), cancel);
            }
            // The listener's file stays open until the cancelled accept completes; dropping
            // our descriptor now means the kernel routes no new connections here once it does.
            self.listeners[index] = None;
        }
        let live: Vec<u32> = self.conns.live_slots().collect();
        for slot in live {
            self.drain_one(slot);
        }
        tracing::info!(
            shard = self.index,
            sessions = self.conns.open_count(),
            "draining"
        );
    }

    /// Goodbye with a reconnect hint spread over reconnect_jitter_ms. An open session keeps
    /// being answered (Draining) until the client closes, is quiet for close_linger_ms, or the
    /// drain deadline passes: everything it sent before it saw the Goodbye gets its answer. A
    /// connection that never said Hello gets Error(shutting_down) with the Goodbye and is closed.
    pub(super) fn drain_one(&mut self, slot: u32) {
        let jitter = self.rng.gen_range(0..=self.config.reconnect_jitter_ms);
        let reconnect_after_ms = self.config.reconnect_after_ms.saturating_add(jitter);
        let now = self.now_tick();
        let linger = self.ticks.linger;
        let (conns, mut cx) = self.session_parts(slot);
        let Some(conn) = conns.get_live_mut(slot) else {
            return;
        };
        match conn.state {
            SessionState::Open => {
                session::queue_goodbye(conn, &mut cx, "server draining", reconnect_after_ms);
                conn.state = SessionState::Draining;
                conn.last_activity_tick = now;
                let key = self.conns.key(slot);
                self.wheel.insert(key, now + linger);
                self.flush(slot);
            }
            SessionState::AwaitHello => {
                let reason = "server shutting down: reconnect after the Goodbye's hint";
                session::queue_error(conn, &mut cx, ErrorCode::ShuttingDown, 0, reason);
                session::queue_goodbye(conn, &mut cx, "server draining", reconnect_after_ms);
                self.begin_close(slot, CloseReason::Drain);
            }
            SessionState::Draining | SessionState::Closing | SessionState::Free => {}
        }
    }

    /// A connection over max_connections_per_shard: Error(server_full) saying when to come
    /// back, a Goodbye with the same jittered hint (for clients that follow Goodbye), then a
    /// graceful close. Counted as refused, not as a session.
    pub(super) fn refuse_server_full(&mut self, slot: u32) {
        let jitter = self.rng.gen_range(0..=self.config.reconnect_jitter_ms);
        let reconnect_after_ms = self.config.reconnect_after_ms.saturating_add(jitter);
        let max_sessions = self.max_sessions;
        let (conns, mut cx) = self.session_parts(slot);
        let Some(conn) = conns.get_live_mut(slot) else {
            return;
        };
        let reason = format!(
            "server full ({max_sessions} sessions per shard): reconnect after \
             {reconnect_after_ms} ms or use another host"
        );
        conn.flags.set(ConnFlags::REFUSED);
        session::queue_error(conn, &mut cx, ErrorCode::ServerFull, 0, &reason);
        session::queue_goodbye(conn, &mut cx, "server_full", reconnect_after_ms);
        self.counters.refused_server_full += 1;
        self.refusals_live += 1;
        self.begin_close(slot, CloseReason::ServerFull);
    }

    /// The drain deadline passed: close what is left, counting bytes that never got out.
    pub(super) fn drain_deadline_passed(&mut self) {
        let live: Vec<u32> = self.conns.live_slots().collect();
        let mut unflushed_bytes = 0u64;
        for &slot in &live {
            let conn = self.conns.get_live_mut(slot).expect("listed as live");
            unflushed_bytes += conn
                .outbound
                .as_ref()
                .map_or(0, |out| out.total_bytes() as u64);
            let reason = (conn.state != SessionState::Closing).then_some(CloseReason::Drain);
            self.close_now(slot, reason);
        }
        self.counters.drain_unflushed_bytes += unflushed_bytes;
        if !live.is_empty() {
            tracing::warn!(
                shard = self.index,
                connections = live.len(),
                unflushed_bytes,
                "drain deadline passed: closed connections with bytes still queued"
            );
        }
    }

    /// Drained: nothing live and no send whose bytes the kernel may still read.
    pub(crate) fn drained(&self) -> bool {
        self.drain_deadline_tick.is_some()
            && self.conns.open_count() == 0
            && self.ring.sends_in_flight() == 0
    }
}
