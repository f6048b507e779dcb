//! Operating Holdfast on a host: sizing and checking the host ([`tune`]) and living under
//! systemd ([`systemd`]: readiness, status, watchdog, socket activation).
//!
//! Boundary: nothing here touches a ring or a connection. It reads host facts (/proc, rlimits,
//! capabilities), talks to the service manager, and reaches shards only through their inboxes
//! ([`crate::mesh::ShardMsg`]).

pub mod systemd;
pub mod tune;
