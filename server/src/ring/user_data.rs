//! The 64-bit user_data of every request: `op:8 | generation:24 | slot:32`. A completion whose
//! generation does not match its slot's current generation belongs to a closed connection and
//! is ignored (its buffer, if any, still goes back to the ring).

holdfast_protocol::wire_codes! {
    /// Which operation a completion belongs to (the top byte of its user_data).
    pub enum Op: u8, from_u8 {
        Accept = 1 => "accept",
        Poll = 2 => "poll",
        Recv = 3 => "recv",
        Send = 4 => "send",
        Cancel = 5 => "cancel",
        Close = 6 => "close",
        Shutdown = 7 => "shutdown",
        /// A multishot recv on a provided-buffer ring (a busy connection's reads).
        RecvMulti = 8 => "recv_multi",
        /// A one-shot accept into a slot the shard named (a shard of several rings); the
        /// listener's index rides in the generation bits.
        AcceptSlot = 9 => "accept_slot",
        /// The read of the shard's doorbell eventfd (mesh/doorbell.rs): an inbox message
        /// while the shard sleeps in its ring.
        Doorbell = 10 => "doorbell",
    }
}

/// Generation bits carried in user_data (the slab keeps 32; 24 are enough to tell a stale
/// completion from a live one: a slot would have to be reused 16M times while one request of
/// its old tenant is still pending).
pub(crate) const GENERATION_MASK: u32 = (1 << 24) - 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UserData(pub u64);

impl UserData {
    pub fn new(op: Op, slot: u32, generation: u32) -> UserData {
        let generation = u64::from(generation & GENERATION_MASK);
        UserData((op as u64) << 56 | generation << 32 | u64::from(slot))
    }

    pub fn op(self) -> Option<Op> {
        Op::from_u8((self.0 >> 56) as u8)
    }

    pub fn slot(self) -> u32 {
        self.0 as u32
    }

    /// The low 24 bits of the generation the request was issued under.
    pub fn generation_bits(self) -> u32 {
        (self.0 >> 32) as u32 & GENERATION_MASK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips_op_slot_and_generation_bits() {
        let ud = UserData::new(Op::Recv, 0xdead_beef, 0x1234_5678);
        assert_eq!(ud.op(), Some(Op::Recv));
        assert_eq!(ud.slot(), 0xdead_beef);
        assert_eq!(ud.generation_bits(), 0x34_5678);
    }
}
