//! Connections: the per-shard slab of slots and the generational ids that name them.

pub mod id;
pub mod slab;

pub use id::{ConnId, ConnKey};
pub use slab::{Conn, ConnFlags, ConnSlab, SessionState};
