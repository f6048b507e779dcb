//! Holdfast server. The data path, top to bottom, and where each step lives:
//!
//! 1. [`socket`]: one SO_REUSEPORT listener per shard.
//! 2. [`ring`]: the shard's io_uring: multishot accept into direct descriptors, multishot poll,
//!    recv from a provided-buffer ring, send. All `unsafe` of the data path is here.
//! 3. [`conn`]: the slab of connection slots (slot = direct descriptor) and generational ids.
//! 4. frames: `holdfast_protocol::Decoder` turns received bytes into validated frames in place
//!    (driven from [`shard`]'s recv handler).
//! 5. [`session`]: what each frame means in each state: Hello/auth, heartbeats, requests.
//! 6. [`handler`]: request handlers (one instance per shard).
//! 7. [`outbound`]: the bounded per-connection queue, coalesced into one send.
//! 8. back to [`ring`] for the send.
//!
//! [`push`] fans server messages out to sessions (topics, broadcast, connection and client
//! ids) across shards; [`events`] carries Event frames through a bounded pipeline to a
//! processor thread.
//!
//! [`shard`] ties these together per core; [`timer`] is its wheel; [`metrics`] its counters;
//! [`serve`] starts shards and drains them; [`config`] holds every limit.
//! [`ops`] sizes and checks the host (`holdfast tune`) and speaks systemd's notify and
//! socket-activation protocols.
//!
//! Off the data path: [`admin`] is the admin HTTP listener (`/metrics`, `/healthz`, `/readyz`)
//! on its own thread, reading shards only through their inboxes; [`probe`] attaches the eBPF
//! probes (`serve --probes`, `holdfast probe`).

#![warn(unreachable_pub)]

pub mod admin;
pub(crate) mod cluster;
pub mod config;
pub mod conn;
pub mod events;
pub(crate) mod handler;
pub(crate) mod mesh;
pub(crate) mod metrics;
pub mod ops;
pub(crate) mod outbound;
pub mod probe;
pub(crate) mod push;
pub(crate) mod ring;
pub mod serve;
pub(crate) mod session;
pub(crate) mod shard;
pub(crate) mod socket;
pub mod timer;
pub mod transport;
pub(crate) mod trim;
