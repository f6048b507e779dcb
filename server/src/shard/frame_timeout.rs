//! A deadline for a frame in progress (`frame_timeout_ms`): a connection whose incomplete frame
//! has not completed that long after it began gets Error(limit_exceeded) and is closed, so a
//! trickle of bytes cannot hold a partial frame (and its share of the shard's partial-frame
//! budget) for as long as heartbeats allow.
//!
//! Only connections holding a partial frame are tracked: `frame_started` maps their slot to
//! (generation, tick the current partial began, or None once it completed), and each such
//! connection has at most one entry in `frame_wheel`, which re-arms itself while the frame is
//! in progress and removes the record when it finds the frame completed.

use holdfast_protocol::{Decoder, ErrorCode};

use super::state::Shard;
use crate::conn::ConnKey;
use crate::metrics::CloseReason;
use crate::session::{self, Verdict};

/// What the shard remembers about a connection's frame in progress.
#[derive(Clone, Copy, Debug)]
pub(super) struct FrameStarted {
    generation: u32,
    /// The tick the current partial frame began; None once it completed (the wheel entry is
    /// still pending and removes this record when it comes due).
    started_tick: Option<u32>,
}

impl Shard {
    /// After bytes were fed: keep the decoder in the slot while it holds a partial frame
    /// (within the shard's budget, with its frame deadline armed), else give it back; then
    /// send or close. `frame_completed`: at least one whole frame was decoded from this input,
    /// so any partial left is a new frame whose clock starts now.
    pub(super) fn settle_decoder(
        &mut self,
        slot: u32,
        decoder: Box<Decoder>,
        mut verdict: Verdict,
        frame_completed: bool,
    ) {
        let partial_bytes = decoder.buffered_bytes() as u64;
        if verdict == Verdict::Continue
            && self.partial_frame_bytes + partial_bytes
                > self.config.max_partial_frame_bytes_per_shard
        {
            let (conns, mut cx) = self.session_parts(slot);
            let conn = conns.get_live_mut(slot).expect("still live");
            let reason =
                "incomplete frames on this server are over their memory budget: send whole frames";
            session::queue_error(conn, &mut cx, ErrorCode::LimitExceeded, 0, reason);
            self.counters.partial_frame_budget_refusals += 1;
            verdict = Verdict::Close(CloseReason::ProtocolError);
        }
        let key = self.conns.key(slot);
        if verdict == Verdict::Continue && partial_bytes > 0 {
            self.partial_frame_bytes += partial_bytes;
            self.conns.get_live_mut(slot).expect("still live").decoder = Some(decoder);
            self.frame_in_progress(key, frame_completed);
        } else {
            self.give_decoder(decoder);
            if let Some(record) = self.frame_started.get_mut(&slot) {
                record.started_tick = None;
            }
        }
        match verdict {
            Verdict::Continue => self.flush(slot),
            Verdict::Close(reason) => self.begin_close(slot, reason),
        }
    }

    /// A connection holds a partial frame: start its clock if it is a new frame, and make
    /// sure one frame-wheel entry watches it.
    fn frame_in_progress(&mut self, key: ConnKey, frame_completed: bool) {
        let now = self.now_tick();
        let deadline = now + self.ticks.frame;
        match self.frame_started.get_mut(&key.slot) {
            Some(record) if record.generation == key.generation => {
                if frame_completed || record.started_tick.is_none() {
                    record.started_tick = Some(now);
                }
            }
            _ => {
                self.frame_started.insert(
                    key.slot,
                    FrameStarted {
                        generation: key.generation,
                        started_tick: Some(now),
                    },
                );
                self.frame_wheel.insert(key, deadline);
            }
        }
    }

    /// Frame deadlines that came due (from the tick).
    pub(super) fn on_frame_due(&mut self, key: ConnKey) {
        let now = self.now_tick();
        let Some(record) = self.frame_started.get(&key.slot).copied() else {
            return;
        };
        if record.generation != key.generation {
            return;
        }
        let Some(started_tick) = record.started_tick else {
            // The frame completed and no other began: stop watching.
            self.frame_started.remove(&key.slot);
            return;
        };
        let deadline = started_tick + self.ticks.frame;
        if deadline > now {
            self.frame_wheel.insert(key, deadline);
            return;
        }
        self.frame_started.remove(&key.slot);
        let (conns, mut cx) = self.session_parts(key.slot);
        let Some(conn) = conns.get_mut(key) else {
            return;
        };
        let reason = "a frame was not completed within frame_timeout_ms: send whole frames";
        session::queue_error(conn, &mut cx, ErrorCode::LimitExceeded, 0, reason);
        self.begin_close(key.slot, CloseReason::FrameTimeout);
    }
}
