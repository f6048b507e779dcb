//! The shard's tick: advances the timer wheel to the current time and acts on connections
//! whose deadline passed: hello timeout, heartbeat ping, heartbeat timeout, end of linger.

use crate::conn::{ConnFlags, ConnKey, SessionState};
use crate::metrics::CloseReason;
use crate::session;
use holdfast_protocol::ErrorCode;

use super::state::Shard;

/// Heartbeat Pings sent per round of the ring loop at most. A tick's due Pings (N / the
/// interval in ticks: ~1,700 per shard at 1M sessions on 2 shards) sent in one submission held
/// the ring for all of their sends (~6 us each on loopback, ~10 ms in all), and every other
/// connection's reply waited behind them; in rounds of 64 (~0.4 ms) replies are reaped and sent
/// between them.
pub(crate) const HEARTBEAT_PINGS_PER_ROUND_MAX: usize = 64;

/// What a connection's next deadline means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    HelloTimeout,
    Ping,
    HeartbeatTimeout,
    LingerOver,
    /// A draining session was quiet for close_linger_ms after its Goodbye.
    DrainQuiet,
}

impl Shard {
    /// Advances the wheel to the current time, handling every entry that comes due.
    pub(crate) fn on_timer(&mut self) {
        let elapsed_ms = self.started_at.elapsed().as_millis() as u64;
        let target_tick = (elapsed_ms / self.ticks.tick_ms) as u32;
        while self.wheel.now_tick() <= target_tick {
            let due = self.wheel.advance();
            for entry in &due {
                self.on_due(*entry);
            }
            self.wheel.recycle(due);
        }
        while self.frame_wheel.now_tick() <= target_tick {
            let due = self.frame_wheel.advance();
            for key in &due {
                self.on_frame_due(*key);
            }
            self.frame_wheel.recycle(due);
        }
        if target_tick >= self.next_trim_tick {
            self.give_back_burst_capacity();
            self.next_trim_tick =
                target_tick + (super::trim::TRIM_INTERVAL_MS / self.ticks.tick_ms).max(1) as u32;
        }
        self.arm_accept();
        self.expire_resumes();
        if let Some(deadline) = self.drain_deadline_tick {
            if self.now_tick() >= deadline {
                self.drain_deadline_passed();
            }
        }
    }

    /// A session's heartbeat interval in ticks: its own, agreed in Hello, or the default (0).
    fn heartbeat_interval(&self, own_ticks: u16) -> u32 {
        match own_ticks {
            0 => self.ticks.heartbeat_interval,
            own => u32::from(own),
        }
    }

    /// When a connection is next due and why. `heartbeat_interval_ticks` is the session's own
    /// (agreed in Hello), 0 for the shard default.
    fn deadline(
        &self,
        state: SessionState,
        flags: ConnFlags,
        last_activity_tick: u32,
        heartbeat_interval_ticks: u16,
    ) -> (u32, Due) {
        let ticks = &self.ticks;
        let heartbeat_interval = self.heartbeat_interval(heartbeat_interval_ticks);
        match state {
            SessionState::AwaitHello => (last_activity_tick + ticks.hello, Due::HelloTimeout),
            SessionState::Open if flags.has(ConnFlags::PINGED) => (
                last_activity_tick + ticks.heartbeat_timeout,
                Due::HeartbeatTimeout,
            ),
            SessionState::Open => (last_activity_tick + heartbeat_interval, Due::Ping),
            SessionState::Draining => (last_activity_tick + ticks.linger, Due::DrainQuiet),
            SessionState::Closing => (last_activity_tick + ticks.linger, Due::LingerOver),
            SessionState::Free => unreachable!("free slots have no deadline"),
        }
    }

    fn on_due(&mut self, entry: ConnKey) {
        let now = self.now_tick();
        let Some(conn) = self.conns.get_mut(entry) else {
            return;
        };
        let (state, flags, last_activity_tick, heartbeat_interval_ticks) = (
            conn.state,
            conn.flags,
            conn.last_activity_tick,
            conn.heartbeat_interval_ticks,
        );
        let (deadline, due) =
            self.deadline(state, flags, last_activity_tick, heartbeat_interval_ticks);
        if deadline > now {
            self.wheel.insert(entry, deadline);
            return;
        }
        match due {
            Due::Ping => {
                // Silent for heartbeat_interval_ms: no longer busy enough for a multishot recv.
                self.end_multishot_recv(entry.slot, true);
                // Due again at the timeout, or one interval from now if that is sooner: a Pong
                // clears PINGED and brings the next Ping's deadline back to one interval after
                // it, which the entry must not be later than.
                let interval = self.heartbeat_interval(heartbeat_interval_ticks);
                let deadline =
                    (last_activity_tick + self.ticks.heartbeat_timeout).min(now + interval);
                let conn = self.conns.get_live_mut(entry.slot).expect("checked above");
                conn.flags.set(ConnFlags::PINGED);
                self.wheel.insert(entry, deadline);
                // Sent from the ring loop, HEARTBEAT_PINGS_PER_ROUND_MAX per round.
                self.pings_due.push_back(entry);
            }
            Due::HelloTimeout => self.close_with_error(
                entry.slot,
                ErrorCode::HelloTimeout,
                "no Hello in time",
                CloseReason::HelloTimeout,
            ),
            Due::HeartbeatTimeout => self.close_with_error(
                entry.slot,
                ErrorCode::HeartbeatTimeout,
                "no frame within heartbeat_timeout_ms",
                CloseReason::HeartbeatTimeout,
            ),
            Due::LingerOver => self.close_now(entry.slot, None),
            Due::DrainQuiet => self.begin_close(entry.slot, CloseReason::Drain),
        }
    }

    /// Sends up to HEARTBEAT_PINGS_PER_ROUND_MAX of the Pings the wheel found due, oldest
    /// first. A session that sent a frame since (PINGED cleared), closed or left Open needs no
    /// Ping any more: its wheel entry already holds its next deadline.
    pub(super) fn send_due_pings(&mut self) {
        let mut sent = 0;
        while sent < HEARTBEAT_PINGS_PER_ROUND_MAX {
            let Some(key) = self.pings_due.pop_front() else {
                break;
            };
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.state != SessionState::Open || !conn.flags.has(ConnFlags::PINGED) {
                continue;
            }
            let (conns, mut cx) = self.session_parts(key.slot);
            let conn = conns.get_live_mut(key.slot).expect("checked above");
            session::queue_ping(conn, &mut cx);
            self.flush(key.slot);
            sent += 1;
        }
    }

    fn close_with_error(&mut self, slot: u32, code: ErrorCode, reason: &str, close: CloseReason) {
        let (conns, mut cx) = self.session_parts(slot);
        let conn = conns.get_live_mut(slot).expect("caller checked");
        session::queue_error(conn, &mut cx, code, 0, reason);
        self.begin_close(slot, close);
    }
}
