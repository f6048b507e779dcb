//! `holdfast serve`: bind one listener per shard, start the shards, wait for a signal, drain.

use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::Config;
use crate::mesh::{Mesh, ShardMsg, SHARD_INBOX_CAPACITY};
use crate::metrics::ShardCounters;
use crate::shard::{self, ShardHandle};
use crate::socket;

/// How long `serve` waits for every shard to report it accepts.
pub const STARTUP_TIMEOUT_MS: u64 = 10_000;
/// Round trips through every shard's inbox between refusing publishes and sending Drain: one
/// for the owners to finish publishes already taken, one for their fan-out to be delivered.
pub const DRAIN_BARRIER_ROUNDS: usize = 2;
/// How long each of those round trips waits for the shards' answers.
pub const DRAIN_BARRIER_TIMEOUT_MS: u64 = 1_000;

/// Allows or forbids transparent huge pages for this process (prctl PR_SET_THP_DISABLE).
/// Forbidden, no fault maps a huge page and khugepaged leaves the process alone, even in
/// ranges the allocator advised MADV_HUGEPAGE (see `Config::heap_huge_pages`); huge pages
/// already mapped stay. Inherited by children. `main` forbids them before it allocates
/// anything much, `serve` sets what the config asks.
pub fn set_transparent_huge_pages(allowed: bool) -> std::io::Result<()> {
    let disable = libc::c_ulong::from(!allowed);
    // SAFETY: prctl with integer arguments only; PR_SET_THP_DISABLE touches no user memory.
    let result = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, disable, 0, 0, 0) };
    if result == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs the server until SIGTERM/SIGINT and a completed drain. Returns an error message if
/// startup failed or a shard died.
pub fn serve(config: Config) -> Result<ShardCounters, String> {
    // Handlers first: a SIGTERM that arrives while shards start (or right after the listening
    // line) is held and starts the drain, instead of killing the process.
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let shards = config.shard_count();
    let capacity = config.capacity_per_shard();
    config.check_ring_table()?;
    // Before the shards allocate their slabs and rings.
    set_transparent_huge_pages(config.heap_huge_pages).map_err(|e| {
        format!(
            "cannot set transparent huge pages (heap_huge_pages = {}): {e}",
            config.heap_huge_pages
        )
    })?;
    crate::ops::tune::warn_host_shortfalls(&config, shards, capacity);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let listeners = match crate::ops::systemd::inherited_listeners(shards)? {
        Some(inherited) => inherited,
        None => {
            socket::bind_listeners(config.listen, shards, config.listen_backlog).map_err(|e| {
                format!(
                    "cannot listen on {}: {e} (is another server on that port?)",
                    config.listen
                )
            })?
        }
    };
    // WebSocket listeners beside the plain ones, one per shard (SO_REUSEPORT).
    let mut ws_listeners: Vec<Option<socket2::Socket>> = match config.ws_listen {
        Some(ws_listen) => socket::bind_listeners(ws_listen, shards, config.listen_backlog)
            .map_err(|e| format!("cannot listen for WebSocket on {ws_listen}: {e}"))?
            .into_iter()
            .map(Some)
            .collect(),
        None => (0..shards).map(|_| None).collect(),
    };
    // TLS listeners likewise, with the certificate every shard reads (reloaded on SIGHUP).
    let tls_source = match (
        &config.tls_listen,
        &config.tls_cert_file,
        &config.tls_key_file,
    ) {
        (Some(_), Some(cert), Some(key)) => Some(crate::transport::tls::TlsConfigSource::new(
            crate::transport::tls::server_config_from_pem_files(cert, key)
                .map_err(|e| format!("cannot start the TLS listener: {e}"))?,
        )),
        _ => None,
    };
    let mut tls_listeners: Vec<Option<socket2::Socket>> = match (config.tls_listen, &tls_source) {
        (Some(tls_listen), Some(_)) => {
            socket::bind_listeners(tls_listen, shards, config.listen_backlog)
                .map_err(|e| format!("cannot listen for TLS on {tls_listen}: {e}"))?
                .into_iter()
                .map(Some)
                .collect()
        }
        _ => (0..shards).map(|_| None).collect(),
    };
    let tls_local = tls_listeners[0]
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .and_then(|a| a.as_socket());
    let ws_local = ws_listeners[0]
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .and_then(|a| a.as_socket());
    for listener in listeners.iter().chain(ws_listeners.iter().flatten()) {
        socket::limit_send_buffer(listener, config.socket_send_buffer_bytes)
            .map_err(|e| format!("cannot set socket_send_buffer_bytes: {e}"))?;
    }
    let local = listeners[0]
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("inet listener");
    if config.auth_secret.is_none() {
        tracing::warn!("auth is off: anonymous Hello accepted (set auth_secret to require tokens)");
    }

    let (ready_tx, ready_rx) = flume::unbounded();
    let mut handles: Vec<ShardHandle> = Vec::with_capacity(shards);
    let (mesh, mut inboxes_rx) = Mesh::new(shards, SHARD_INBOX_CAPACITY)
        .map_err(|e| format!("shard doorbells (eventfd): {e}"))?;
    // Cluster mode: the NATS bridge gets the mesh; the shards get its link.
    let cluster = crate::cluster::start(&config, mesh.clone())?;
    let (pipelines_tx, pipelines_rx): (Vec<_>, Vec<_>) = (0..shards)
        .map(|_| flume::bounded(config.event_pipeline_capacity))
        .unzip();
    for ((index, listener), events) in listeners.into_iter().enumerate().zip(pipelines_tx) {
        let spec = shard::ShardSpec {
            index,
            cpu: index % cpus,
            config: config.clone(),
            listener,
            ws_listener: ws_listeners[index].take(),
            tls_listener: tls_listeners[index].take().zip(tls_source.clone()),
            capacity,
            shards,
            events,
            inbox: inboxes_rx.remove(0),
            mesh: mesh.clone(),
            cluster: cluster.clone(),
        };
        let handle = shard::spawn(spec, ready_tx.clone())
            .map_err(|e| format!("cannot start shard {index}: {e}"))?;
        handles.push(handle);
    }
    for _ in 0..shards {
        match ready_rx.recv_timeout(Duration::from_millis(STARTUP_TIMEOUT_MS)) {
            Ok(Ok(_)) => {}
            Ok(Err(message)) => return Err(message),
            Err(_) => return Err("a shard did not start in time".to_owned()),
        }
    }
    let processor = spawn_processor(&config, pipelines_rx, mesh.clone())?;
    let probes = match config.probes {
        true => crate::probe::attach_own(local.port()),
        false => None,
    };
    let admin = match config.admin_enabled {
        true => Some(start_admin(&config, mesh.clone(), probes.clone())?),
        false => None,
    };
    tracing::info!(listen = %local, shards, max_connections_per_shard = capacity, max_frame_bytes = config.max_frame_bytes, "holdfast started");
    if let Some(ws_local) = ws_local {
        tracing::info!(ws_listen = %ws_local, ws_path = %config.ws_path, "WebSocket listener started");
        // Before the listening line, which stays the last start-up line.
        stdout_line(format_args!("holdfast ws on {ws_local}"));
    }
    if let Some(tls_local) = tls_local {
        tracing::info!(tls_listen = %tls_local, "TLS listener started");
        stdout_line(format_args!("holdfast tls on {tls_local}"));
    }
    // One machine-readable line on stdout for scripts and tests.
    stdout_line(format_args!(
        "holdfast listening on {local} shards={shards}"
    ));

    let drain_notice = admin.as_ref().map(|admin| admin.drain_notice());
    let signal_mesh = mesh.clone();
    let (reload_config, reload_source) = (config.clone(), tls_source.clone());
    std::thread::Builder::new()
        .name("holdfast-signals".into())
        .spawn(move || {
            let mut received = 0;
            for signal in signals.forever() {
                if signal == SIGHUP {
                    reload_tls(&reload_config, reload_source.as_deref());
                    continue;
                }
                received += 1;
                if received > 1 {
                    tracing::warn!(signal, "second signal: exiting without finishing the drain");
                    std::process::exit(130);
                }
                tracing::info!(signal, "signal received: draining");
                crate::ops::systemd::notify_stopping();
                if let Some(notice) = &drain_notice {
                    notice.draining_started();
                }
                // Publishes are refused from here on. Two round trips through every shard's
                // inbox before the Drain: the first lets each owner finish the publishes it
                // had already taken (their fan-out is then in the other shards' inboxes), the
                // second lets every shard deliver that fan-out. So a publish answered 202
                // before the drain reaches every session before its Goodbye.
                for _ in 0..DRAIN_BARRIER_ROUNDS {
                    let deadline =
                        std::time::Instant::now() + Duration::from_millis(DRAIN_BARRIER_TIMEOUT_MS);
                    let _ = signal_mesh.poll_stats(deadline);
                }
                signal_mesh.send_all_wait(|| ShardMsg::Drain);
            }
        })
        .map_err(|e| format!("cannot start signal thread: {e}"))?;
    crate::ops::systemd::notify_ready(shards);
    crate::ops::systemd::spawn_monitor(mesh.clone())
        .map_err(|e| format!("cannot start the systemd monitor thread: {e}"))?;

    let mut totals = ShardCounters::default();
    let mut failure = None;
    for handle in handles {
        match handle.join.join() {
            Ok(Ok(counters)) => totals.merge(&counters),
            Ok(Err(message)) => failure = Some(message),
            Err(e) => failure = Some(format!("shard {} panicked: {e}", handle.index)),
        }
    }
    // Every shard has exited and dropped its pipeline sender: the processor takes what is
    // still queued, then returns.
    match processor.join() {
        Ok(processed) => tracing::info!(events_processed = processed, "event processor finished"),
        Err(_) => failure = Some("event processor panicked".to_owned()),
    }
    if let Some(admin) = admin {
        admin.stop();
    }
    drop(probes);
    if let Some(message) = failure {
        return Err(message);
    }
    tracing::info!(
        accepted = totals.accepted,
        sessions_opened = totals.sessions_opened,
        slow_consumers = totals.slow_consumers,
        drain_unflushed_bytes = totals.drain_unflushed_bytes,
        "holdfast stopped"
    );
    Ok(totals)
}

/// Writes one start-up line on stdout. A reader that has gone (`holdfast serve | head -1`)
/// loses the line; the server keeps running (`println!` would panic on the closed pipe).
fn stdout_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_fmt(line);
    let _ = stdout.write_all(b"\n");
    let _ = stdout.flush();
}

/// Starts the admin listener with the mesh and prints its address on stdout
/// (`holdfast admin on ADDR`, before the listening line, which stays the last start-up line).
fn start_admin(
    config: &Config,
    mesh: Mesh,
    probes: Option<std::sync::Arc<holdfast_ebpf::Probes>>,
) -> Result<crate::admin::AdminHandle, String> {
    let state = crate::admin::AdminState {
        mesh,
        probes,
        drain: crate::admin::DrainNotice::default(),
        publish_secret: config.publish_secret.clone(),
        max_frame_bytes: config.max_frame_bytes,
    };
    let limits = crate::admin::AdminLimits::from_config(config);
    let admin = crate::admin::spawn(config.admin_listen, state, limits).map_err(|e| {
        format!(
            "cannot listen for admin on {}: {e} (set admin_listen, or admin_enabled = false)",
            config.admin_listen
        )
    })?;
    stdout_line(format_args!("holdfast admin on {}", admin.local_addr()));
    Ok(admin)
}

/// Starts the event processor thread over every shard's pipeline.
fn spawn_processor(
    config: &Config,
    pipelines: Vec<flume::Receiver<crate::events::OwnedEvent>>,
    mesh: Mesh,
) -> Result<std::thread::JoinHandle<u64>, String> {
    let processor = Box::new(crate::events::trending::Trending::new(
        config.trending_topic.clone(),
        config.trending_window_s,
        Duration::from_millis(config.trending_interval_ms),
        config.trending_top_k,
    ));
    std::thread::Builder::new()
        .name("holdfast-events".into())
        .spawn(move || crate::events::run_processor(pipelines, processor, mesh))
        .map_err(|e| format!("cannot start the event processor thread: {e}"))
}

/// SIGHUP: re-reads the TLS certificate and key. New handshakes use them; live sessions keep
/// theirs; on any error the current certificate stays and the error is logged.
fn reload_tls(config: &Config, source: Option<&crate::transport::tls::TlsConfigSource>) {
    let (Some(source), Some(cert), Some(key)) =
        (source, &config.tls_cert_file, &config.tls_key_file)
    else {
        tracing::info!("SIGHUP: no TLS listener, nothing to reload");
        return;
    };
    match source.reload_from_pem_files(cert, key) {
        Ok(()) => tracing::info!(
            generation = source.generation(),
            "SIGHUP: TLS certificate reloaded; new handshakes use it"
        ),
        Err(e) => {
            tracing::warn!("SIGHUP: TLS certificate not reloaded, the current one stays: {e}")
        }
    }
}
