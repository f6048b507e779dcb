//! The admin HTTP listener: `GET /metrics` (Prometheus text), `GET /healthz` (live),
//! `GET /readyz` (accepting, not draining), `POST /publish`. One thread of its own, off the data
//! path: it reaches shards only by putting messages in their inboxes and waiting (bounded) for
//! what they send back.
//!
//! - [`server`]: hyper's HTTP/1.1 on a current-thread tokio runtime on the admin thread: many
//!   connections at once (up to `admin_max_connections`), keep-alive, a header read timeout, a
//!   body timeout and size limit, a write timeout.
//! - [`http`]: the request and response the routes see (no hyper types in the routes).
//! - [`routes`]: the route table (method, path, handler); add new routes there.
//! - [`stats`]: ask every shard for its report, with a timeout.
//! - [`exposition`]: reports and probe snapshots as Prometheus text (prometheus-client).
//!
//! This module does not know how shards work inside, and a shard does not know this module
//! exists. Why hyper on one thread: an idle or slow client costs a task and a buffer, not a
//! thread, so 2,000 idle connections do not keep `/healthz` from answering; handlers that wait
//! on shards run on a small blocking pool so the accept loop and other connections go on.

pub mod exposition;
pub mod http;
pub mod publish;
pub mod publish_cmd;
mod routes;
mod server;
pub mod stats;
mod write_timeout;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use holdfast_ebpf::Probes;

use crate::config::Config;
use crate::mesh::Mesh;

/// Connections waiting in the kernel for the admin thread to accept them.
pub const ADMIN_LISTEN_BACKLOG: i32 = 1024;
/// How long stopping the admin thread waits for handlers still running (a publish waiting on a
/// shard) before it drops them.
pub const ADMIN_STOP_TIMEOUT_MS: u64 = 1_000;

/// Told by the signal thread when draining starts; read by `/readyz`. Cloneable and `Send`, the
/// one value the admin thread shares with another thread.
#[derive(Clone, Debug, Default)]
pub struct DrainNotice(Arc<AtomicBool>);

impl DrainNotice {
    pub fn draining_started(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What the admin thread owns: the mesh (the shards' inboxes), the probes if attached.
pub struct AdminState {
    pub mesh: Mesh,
    pub probes: Option<Arc<Probes>>,
    pub drain: DrainNotice,
    /// Bearer secret `POST /publish` requires, if set.
    pub publish_secret: Option<String>,
    /// Push frames (payload + topic + header) must fit in this.
    pub max_frame_bytes: u32,
}

/// The admin listener's HTTP limits (config keys `admin_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminLimits {
    pub max_connections: u32,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_body_bytes: u32,
    pub keep_alive: bool,
}

impl AdminLimits {
    pub fn from_config(config: &Config) -> AdminLimits {
        AdminLimits {
            max_connections: config.admin_max_connections,
            header_timeout: Duration::from_millis(config.admin_header_timeout_ms),
            body_timeout: Duration::from_millis(config.admin_body_timeout_ms),
            max_body_bytes: config.admin_max_body_bytes,
            keep_alive: config.admin_keep_alive,
        }
    }
}

/// The running admin thread.
pub struct AdminHandle {
    local_addr: SocketAddr,
    drain: DrainNotice,
    stop: tokio::sync::oneshot::Sender<()>,
    join: JoinHandle<()>,
}

impl AdminHandle {
    /// The bound address (the real port when `admin_listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle for the thread that learns about draining first.
    pub fn drain_notice(&self) -> DrainNotice {
        self.drain.clone()
    }

    /// Stops accepting, closes every admin connection and joins the thread (handlers still
    /// waiting on a shard get at most ADMIN_STOP_TIMEOUT_MS).
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.join.join();
    }
}

/// Binds `addr` and starts the admin thread. Fails only if the address cannot be bound or the
/// thread or its runtime cannot start.
pub fn spawn(
    addr: SocketAddr,
    state: AdminState,
    limits: AdminLimits,
) -> std::io::Result<AdminHandle> {
    let listener = server::bind(addr)?;
    let local_addr = listener.local_addr()?;
    let runtime = server::runtime()?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let drain = state.drain.clone();
    let join = std::thread::Builder::new()
        .name("holdfast-admin".into())
        .spawn(move || {
            runtime.block_on(server::serve(listener, Arc::new(state), limits, stopped));
            runtime.shutdown_timeout(Duration::from_millis(ADMIN_STOP_TIMEOUT_MS));
        })?;
    Ok(AdminHandle {
        local_addr,
        drain,
        stop,
        join,
    })
}
