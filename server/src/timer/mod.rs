//! Per-shard time: one hashed timer wheel and one tick for all connections.

pub mod wheel;

pub use wheel::TimerWheel;
