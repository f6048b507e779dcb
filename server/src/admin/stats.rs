//! Asking every shard for its [`ShardReport`], with a bound on how long to wait.
//!
//! Shards share nothing: the only way to read one is to put a `ShardMsg::Stats` in its inbox
//! and wait for the copy it sends back ([`Mesh::poll_stats`]). A shard that does not answer in time (stuck, or its inbox
//! full) shows as `None`, which is what `/healthz` and `holdfast_shard_up` report.

use std::time::{Duration, Instant};

use crate::mesh::{Mesh, ShardReport};

/// How long the admin thread waits for all shards to answer a Stats message.
pub const ADMIN_STATS_TIMEOUT_MS: u64 = 1_000;

/// One answer per shard, by shard index; `None` = no answer within the timeout.
#[derive(Debug, Clone)]
pub struct ShardPoll {
    pub reports: Vec<Option<ShardReport>>,
    pub timeout_ms: u64,
}

impl ShardPoll {
    /// Shard indexes that did not answer.
    pub fn silent(&self) -> Vec<usize> {
        self.reports
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_none())
            .map(|(i, _)| i)
            .collect()
    }

    pub fn all_answered(&self) -> bool {
        self.reports.iter().all(Option::is_some)
    }

    pub fn any_draining(&self) -> bool {
        self.reports.iter().flatten().any(|r| r.draining)
    }
}

/// Asks every shard for its report through the mesh ([`Mesh::poll_stats`]) and waits at most
/// `timeout` for the answers.
pub fn poll_shards(mesh: &Mesh, timeout: Duration) -> ShardPoll {
    let poll = mesh.poll_stats(Instant::now() + timeout);
    ShardPoll {
        reports: poll.reports(),
        timeout_ms: timeout.as_millis() as u64,
    }
}
