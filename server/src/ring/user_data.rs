//! The 64-bit user_data of every request: `op:8 | generation:24 | slot:32`. A completion whose
//! generation does not match its slot's current generation belongs to a closed connection and
//! is ignored (its buffer, if any, still goes back to the ring).

/// Which operation a completion belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    Accept = 1,
    Poll = 2,
    Recv = 3,
    Send = 4,
    Cancel = 5,
    Close = 6,
    Shutdown = 7,
    /// A multishot recv on a provided-buffer ring (a busy connection's reads).
    RecvMulti = 8,
}

impl Op {
    fn from_u8(byte: u8) -> Option<Op> {
        Some(match byte {
            1 => Op::Accept,
            2 => Op::Poll,
            3 => Op::Recv,
            4 => Op::Send,
            5 => Op::Cancel,
            6 => Op::Close,
            7 => Op::Shutdown,
            8 => Op::RecvMulti,
            _ => return None,
        })
    }
}

/// Generation bits carried in user_data (the slab keeps 32; 24 are enough to tell a stale
/// completion from a live one: a slot would have to be reused 16M times while one request of
/// its old tenant is still pending).
pub const GENERATION_MASK: u32 = (1 << 24) - 1;

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
