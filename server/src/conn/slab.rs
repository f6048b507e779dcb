//! The per-shard connection slab. Slot `i` is direct descriptor `i` of the shard's ring: the
//! kernel allocates the index on accept (IORING_FILE_INDEX_ALLOC), so the slab needs no free
//! list of its own. Why not sharded-slab: a slot is touched only by its shard, so sharded-slab's
//! per-slot atomic lifecycle and its own index allocation would duplicate, at a cost, what the
//! fixed-file table already gives us (see docs/ARCHITECTURE.md).
//!
//! Invariants: a Free slot holds no buffers; `open_count` equals the number of non-Free slots;
//! a slot's generation changes on every free, so ids and completions of a closed connection
//! never match the next tenant.

use holdfast_protocol::Decoder;

use super::ConnKey;
use crate::outbound::Outbound;
use crate::ring::user_data::{UserData, GENERATION_MASK};

/// Where a connection is in its life (docs/PROTOCOL.md, "Session state machine").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum SessionState {
    #[default]
    Free,
    /// Accepted; Hello not yet received.
    AwaitHello,
    /// Welcome sent; frames flow.
    Open,
    /// The server is shutting down and sent Goodbye: requests still get their answers until
    /// the client closes, or is quiet for close_linger_ms, or the drain deadline passes.
    Draining,
    /// Last bytes queued; waiting for them to flush, then for the peer's EOF (bounded by
    /// close_linger_ms).
    Closing,
}

/// Small per-connection flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnFlags(u16);

impl ConnFlags {
    pub const RECV_IN_FLIGHT: u16 = 1 << 0;
    /// Readiness arrived while a recv was in flight: read again when it completes.
    pub const READ_AGAIN: u16 = 1 << 1;
    pub const SEND_IN_FLIGHT: u16 = 1 << 2;
    /// The server sent a heartbeat Ping since the last frame from the peer.
    pub const PINGED: u16 = 1 << 3;
    /// Write side shut down; only the peer's EOF or the linger deadline remain.
    pub const WRITE_SHUT: u16 = 1 << 4;
    /// The peer sent EOF; close once our queued bytes are flushed.
    pub const PEER_EOF: u16 = 1 << 5;
    /// Not read: its events are parked (backpressure) or its replies backed up
    /// (REPLIES_PAUSED); no recv until both clear.
    pub const READ_PAUSED: u16 = 1 << 6;
    /// Reads come from a multishot recv (a busy connection) instead of poll readiness + recv.
    pub const MULTISHOT_RECV: u16 = 1 << 7;
    /// Replies to this session's own requests backed up (REPLY_PAUSE_PERCENT of
    /// max_outbound_bytes): not read (READ_PAUSED) until they drain to REPLY_RESUME_PERCENT.
    pub const REPLIES_PAUSED: u16 = 1 << 8;
    /// Accepted over max_connections_per_shard only to be told server_full: holds a refusal
    /// slot, is not a session.
    pub const REFUSED: u16 = 1 << 9;
    /// Open, and no broadcast has reached it since its Hello nor has it resumed `"*"`: a
    /// resume of `"*"` now replays whole (push::broadcast_seen).
    pub const BROADCAST_UNSEEN: u16 = 1 << 10;
    /// Its multishot poll ended (a full completion queue ends multishot requests) while it had
    /// bytes to read: armed again once the recv that reads them completes
    /// (`Shard::rearm_ended_poll`), not at once.
    pub const POLL_ENDED: u16 = 1 << 11;

    pub fn has(self, flag: u16) -> bool {
        self.0 & flag != 0
    }

    pub fn set(&mut self, flag: u16) {
        self.0 |= flag;
    }

    pub fn clear(&mut self, flag: u16) {
        self.0 &= !flag;
    }
}

/// One connection slot: 32 bytes. Buffers are boxed and present only while in use.
#[derive(Debug, Default)]
pub struct Conn {
    pub generation: u32,
    pub state: SessionState,
    pub flags: ConnFlags,
    /// Requests answered since the outbound queue was last empty.
    pub inflight_requests: u16,
    /// The heartbeat interval this session agreed in Hello/Welcome, in timer ticks (0 until
    /// then: the shard's default applies). Fits the slot's padding: the slot stays 32 bytes.
    pub heartbeat_interval_ticks: u16,
    /// Tick of the last frame received (or of accept, or of the start of closing).
    pub last_activity_tick: u32,
    /// The listener's transport. Its state, if any (WebSocket), lives in the shard's side
    /// table keyed by slot, so this byte (in what was padding) keeps the slot at 32 bytes.
    pub transport: crate::transport::TransportKind,
    /// Held only while a partial frame is buffered.
    pub decoder: Option<Box<Decoder>>,
    /// Held only while bytes are queued or in flight.
    pub outbound: Option<Box<Outbound>>,
}

pub struct ConnSlab {
    slots: Vec<Conn>,
    open_count: usize,
}

impl ConnSlab {
    /// A slab of `capacity` slots, allocated up front.
    pub fn new(capacity: u32) -> ConnSlab {
        let slots = (0..capacity).map(|_| Conn::default()).collect();
        ConnSlab {
            slots,
            open_count: 0,
        }
    }

    pub fn capacity(&self) -> u32 {
        self.slots.len() as u32
    }

    pub fn open_count(&self) -> usize {
        self.open_count
    }

    /// Marks a free slot as a new connection and returns its key.
    pub fn open(&mut self, slot: u32, now_tick: u32) -> ConnKey {
        let conn = &mut self.slots[slot as usize];
        assert_eq!(
            conn.state,
            SessionState::Free,
            "kernel handed out a live slot"
        );
        assert!(conn.decoder.is_none() && conn.outbound.is_none());
        conn.state = SessionState::AwaitHello;
        conn.flags = ConnFlags::default();
        conn.inflight_requests = 0;
        conn.heartbeat_interval_ticks = 0;
        conn.last_activity_tick = now_tick;
        conn.transport = crate::transport::TransportKind::Plain;
        self.open_count += 1;
        ConnKey {
            slot,
            generation: conn.generation,
        }
    }

    /// The live connection `key` names (`None` once it closed, even if the slot is reused).
    pub fn get_mut(&mut self, key: ConnKey) -> Option<&mut Conn> {
        let conn = self.slots.get_mut(key.slot as usize)?;
        (conn.state != SessionState::Free && conn.generation == key.generation).then_some(conn)
    }

    /// The live connection a completion belongs to: its slot, if the generation bits the
    /// request carried (24 of the 32) still match; a completion of a closed one gets `None`.
    pub fn get_for(&mut self, user_data: UserData) -> Option<&mut Conn> {
        let conn = self.slots.get_mut(user_data.slot() as usize)?;
        (conn.state != SessionState::Free
            && conn.generation & GENERATION_MASK == user_data.generation_bits())
        .then_some(conn)
    }

    /// The live connection in `slot`, whatever its generation (for the owning shard's own
    /// bookkeeping, never for ids or completions from outside).
    pub fn get_live_mut(&mut self, slot: u32) -> Option<&mut Conn> {
        let conn = self.slots.get_mut(slot as usize)?;
        (conn.state != SessionState::Free).then_some(conn)
    }

    /// The key of `slot` with its current generation (live or free).
    pub fn key(&self, slot: u32) -> ConnKey {
        ConnKey {
            slot,
            generation: self.slots[slot as usize].generation,
        }
    }

    /// Frees a live slot, bumping its generation. Returns its buffers for the shard's pools.
    pub fn free(
        &mut self,
        slot: u32,
    ) -> (Option<Box<Decoder>>, Option<Box<crate::outbound::Outbound>>) {
        let conn = &mut self.slots[slot as usize];
        assert_ne!(conn.state, SessionState::Free);
        conn.state = SessionState::Free;
        conn.generation = conn.generation.wrapping_add(1);
        self.open_count -= 1;
        (conn.decoder.take(), conn.outbound.take())
    }

    /// Slots of every live connection (for drain and shutdown sweeps).
    pub fn live_slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, c)| c.state != SessionState::Free)
            .map(|(i, _)| i as u32)
    }

    /// Every session in the Open state (for broadcasts; O(capacity)).
    pub fn open_sessions(&self) -> impl Iterator<Item = ConnKey> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, c)| c.state == SessionState::Open)
            .map(|(i, c)| ConnKey {
                slot: i as u32,
                generation: c.generation,
            })
    }

    /// Every session in the Open state, like [`ConnSlab::open_sessions`], clearing `flag` on
    /// each and calling `had_flag` for those that had it (a broadcast's first reach).
    pub fn open_sessions_clearing<'a>(
        &'a mut self,
        flag: u16,
        mut had_flag: impl FnMut(ConnKey) + 'a,
    ) -> impl Iterator<Item = ConnKey> + 'a {
        self.slots
            .iter_mut()
            .enumerate()
            .filter(|(_, c)| c.state == SessionState::Open)
            .map(move |(i, c)| {
                let key = ConnKey {
                    slot: i as u32,
                    generation: c.generation,
                };
                if c.flags.has(flag) {
                    c.flags.clear(flag);
                    had_flag(key);
                }
                key
            })
    }

    /// Debug check of the open-count invariant (O(capacity)).
    pub fn assert_consistent(&self) {
        debug_assert_eq!(self.live_slots().count(), self.open_count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::user_data::Op;

    #[test]
    fn slot_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Conn>(), 32);
    }

    #[test]
    fn stale_generation_never_reaches_the_next_tenant() {
        let mut slab = ConnSlab::new(4);
        let first = slab.open(2, 0);
        assert!(slab.get_mut(first).is_some());
        slab.free(2);
        let second = slab.open(2, 5);
        assert_ne!(first, second);
        assert!(slab.get_mut(first).is_none(), "old id refused");
        assert!(slab.get_mut(second).is_some());
        assert!(
            slab.get_for(first.user_data(Op::Recv)).is_none(),
            "old completion refused"
        );
        assert!(slab.get_for(second.user_data(Op::Recv)).is_some());
        assert_eq!(slab.open_count(), 1);
        slab.assert_consistent();
    }

    #[test]
    fn free_slot_is_not_addressable() {
        let mut slab = ConnSlab::new(2);
        let key = |slot| ConnKey {
            slot,
            generation: 0,
        };
        assert!(slab.get_mut(key(0)).is_none());
        assert!(slab.get_mut(key(9)).is_none());
        assert!(slab.get_for(key(9).user_data(Op::Recv)).is_none());
    }
}
