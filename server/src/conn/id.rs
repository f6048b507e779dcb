//! Naming connections. Inside its shard a connection is a [`ConnKey`] (slot + generation);
//! across shards and to clients it is a [`ConnId`]: `shard:8 | slot:24 | generation:32`. Any
//! core can address a connection by id; the owning shard refuses a key whose generation is not
//! the slot's current one, so a stale id never reaches a newer connection in the same slot.

use crate::ring::user_data::{Op, UserData};

/// Most shards a process runs (8 bits of the id).
pub const MAX_SHARDS: usize = 256;
/// Most connection slots per shard (24 bits of the id).
pub const MAX_SLOTS_PER_SHARD: u32 = 1 << 24;

/// A connection within its shard: its slot (= direct descriptor) and the slot's generation
/// while it is open (mio's `Token`, quinn's `ConnectionHandle`, with the generation inside).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub slot: u32,
    pub generation: u32,
}

impl ConnKey {
    /// The id other shards and clients know this connection by.
    pub fn id(self, shard: usize) -> ConnId {
        ConnId::new(shard, self.slot, self.generation)
    }

    /// The user_data of a request `op` issued for this connection.
    pub fn user_data(self, op: Op) -> UserData {
        UserData::new(op, self.slot, self.generation)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    pub fn new(shard: usize, slot: u32, generation: u32) -> ConnId {
        assert!(shard < MAX_SHARDS);
        assert!(slot < MAX_SLOTS_PER_SHARD);
        ConnId((shard as u64) << 56 | u64::from(slot) << 32 | u64::from(generation))
    }

    pub fn shard(self) -> usize {
        (self.0 >> 56) as usize
    }

    pub fn slot(self) -> u32 {
        (self.0 >> 32) as u32 & (MAX_SLOTS_PER_SHARD - 1)
    }

    pub fn generation(self) -> u32 {
        self.0 as u32
    }

    /// The key of this connection inside its shard.
    pub fn key(self) -> ConnKey {
        ConnKey {
            slot: self.slot(),
            generation: self.generation(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_id_packs_shard_slot_and_generation() {
        let id = ConnId::new(3, 123_456, 0xffff_fff0);
        assert_eq!(
            (id.shard(), id.slot(), id.generation()),
            (3, 123_456, 0xffff_fff0)
        );
        assert_eq!(id.key().id(3), id);
    }
}
