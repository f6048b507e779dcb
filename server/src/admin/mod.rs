//! The admin HTTP listener: `GET /metrics` (Prometheus text), `GET /healthz` (live),
//! `GET /readyz` (accepting, not draining). One thread of its own, one connection at a time, off
//! the data path: it reaches shards only by putting `ShardMsg::Stats` in their inboxes and
//! waiting (bounded) for the copies they send back.
//!
//! - [`http`]: read one request, write one response, with a bound on every size and wait.
//! - [`routes`]: the one `match` on (method, path); add new routes there.
//! - [`stats`]: ask every shard for its report, with a timeout.
//! - [`exposition`]: reports and probe snapshots as Prometheus text (prometheus-client).
//!
//! This module does not know how shards work inside, and a shard does not know this module
//! exists. Why not tiny_http: it starts a pool of at least four worker threads plus an accept
//! thread and adds a thread per concurrent connection without a cap or a read timeout, so a
//! handful of idle clients would cost unbounded threads. Here one thread serves one request at
//! a time, each within `ADMIN_REQUEST_TIMEOUT_MS`; scrapes and health checks are rare and cheap.

pub mod exposition;
pub mod http;
pub mod publish;
pub mod publish_cmd;
mod routes;
pub mod stats;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use holdfast_ebpf::Probes;

use crate::mesh::Mesh;

/// Pause after a failed accept (e.g. EMFILE) so the thread does not spin.
pub const ADMIN_ACCEPT_ERROR_BACKOFF_MS: u64 = 100;

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

/// The running admin thread.
pub struct AdminHandle {
    local_addr: SocketAddr,
    drain: DrainNotice,
    stop: Arc<AtomicBool>,
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

    /// Stops accepting and joins the thread (after at most the request in progress).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept with a connection of our own.
        let mut wake = self.local_addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(500));
        let _ = self.join.join();
    }
}

/// Binds `addr` and starts the admin thread. Fails only if the address cannot be bound.
pub fn spawn(addr: SocketAddr, state: AdminState) -> std::io::Result<AdminHandle> {
    let listener = TcpListener::bind(addr)?;
    let local_addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let drain = state.drain.clone();
    let join = std::thread::Builder::new()
        .name("holdfast-admin".into())
        .spawn({
            let stop = stop.clone();
            move || serve_admin(listener, &state, &stop)
        })?;
    Ok(AdminHandle {
        local_addr,
        drain,
        stop,
        join,
    })
}

fn serve_admin(listener: TcpListener, state: &AdminState, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        match stream {
            Ok(mut stream) => {
                let _ = stream.set_nodelay(true);
                let response = match http::read_request(&mut stream) {
                    Ok(request) => routes::route(state, &request),
                    Err(Some(response)) => response,
                    Err(None) => continue,
                };
                if let Err(e) = http::write_response(&mut stream, &response) {
                    tracing::debug!("admin response not delivered: {e}");
                }
            }
            Err(e) => {
                tracing::warn!("admin accept failed: {e}");
                std::thread::sleep(Duration::from_millis(ADMIN_ACCEPT_ERROR_BACKOFF_MS));
            }
        }
    }
}
