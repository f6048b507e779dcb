//! Living under systemd: the notify protocol (READY, STATUS, STOPPING, WATCHDOG) and socket
//! activation (LISTEN_FDS). Outside systemd (no NOTIFY_SOCKET, no LISTEN_FDS) all of it is a
//! no-op and `serve` binds its own listeners.
//!
//! Crates: `sd-notify` for both halves. It checks LISTEN_PID against our pid, marks the fds
//! close-on-exec and leaves the environment alone. `listenfd` was not taken: it also accepts a
//! missing LISTEN_PID (a protocol variant for development tools), it calls `env::remove_var`
//! from library code, which is unsound once other threads run, and `sd-notify` already covers
//! what it would add.
//!
//! Inherited listeners and shards: with SO_REUSEPORT the kernel spreads connections over the
//! listeners of a port, so each shard wants its own listening socket. holdfast.socket passes one
//! socket by default (the unit cannot know the host's core count); then every shard accepts
//! from a dup of that one socket: one accept queue, each shard's multishot accept takes from it.
//! A socket unit that lists the port once per shard (`ReusePort=yes`) gives one socket per shard
//! and the kernel's hashing instead. Holdfast never binds extra sockets next to inherited ones:
//! those would die with the process and reset the connections queued on them, which is exactly
//! what socket activation is there to prevent. More inherited sockets than shards is refused
//! (a socket nobody accepts from would hold connections forever).
//!
//! Watchdog: WATCHDOG=1 is sent only after every shard answered a `ShardMsg::Stats` within
//! the round. A shard's inbox is served by a task on the shard's own executor, so a shard whose
//! loop is stuck never answers and systemd restarts the service after WatchdogSec.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use socket2::{Domain, Socket, Type};

use crate::mesh::{Answer, Mesh};

/// STATUS= refresh period when systemd has no watchdog for us.
pub const STATUS_INTERVAL_MS: u64 = 5_000;
/// Shortest round of the monitor, whatever WATCHDOG_USEC says.
pub const MONITOR_ROUND_MIN_MS: u64 = 50;

/// Set when draining starts: shards that have finished may stop answering.
static DRAINING: AtomicBool = AtomicBool::new(false);

/// Listeners passed by the service manager (LISTEN_FDS, LISTEN_PID = our pid), one per shard:
/// `Ok(None)` without socket activation.
pub fn inherited_listeners(shards: usize) -> Result<Option<Vec<Socket>>, String> {
    let fds = sd_notify::listen_fds().map_err(|e| format!("LISTEN_FDS: {e}"))?;
    let inherited: Vec<Socket> = fds
        .map(|fd| {
            // SAFETY: sd_listen_fds(3): the service manager passed descriptors fd 3.. for this
            // pid (LISTEN_PID checked by listen_fds) and nothing else in the process owns
            // them; each is taken exactly once here.
            Socket::from(unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .collect();
    if inherited.is_empty() {
        return Ok(None);
    }
    for (i, socket) in inherited.iter().enumerate() {
        validate_listener(socket)
            .map_err(|problem| format!("LISTEN_FDS: inherited fd {}: {problem}", 3 + i))?;
    }
    let count = inherited.len();
    if count > shards {
        return Err(format!(
            "LISTEN_FDS passes {count} listeners but {shards} shards run: set shards = {count} or pass fewer sockets (a listener nobody accepts from holds its connections forever)"
        ));
    }
    let mut listeners = Vec::with_capacity(shards);
    for shard in 0..shards {
        let socket = inherited[shard % count]
            .try_clone()
            .map_err(|e| format!("dup inherited listener: {e}"))?;
        listeners.push(socket);
    }
    tracing::info!(
        inherited = count,
        shards,
        "socket activation: shards accept on inherited listeners (config key listen is ignored)"
    );
    Ok(Some(listeners))
}

/// An inherited fd must be a listening TCP socket; accepted sockets inherit TCP_NODELAY.
fn validate_listener(socket: &Socket) -> Result<(), String> {
    let domain = socket.domain().map_err(|e| format!("not a socket ({e})"))?;
    if domain != Domain::IPV4 && domain != Domain::IPV6 {
        return Err("not an IPv4/IPv6 socket (ListenStream= needs an address or port)".to_owned());
    }
    if socket.r#type().map_err(|e| e.to_string())? != Type::STREAM {
        return Err("not a stream socket".to_owned());
    }
    if !socket.is_listener().map_err(|e| e.to_string())? {
        return Err("not listening (Accept=no is required in holdfast.socket)".to_owned());
    }
    socket.set_nodelay(true).map_err(|e| e.to_string())
}

/// True when a service manager listens for our notifications.
pub fn notify_enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("sd_notify failed: {e}");
    }
}

/// READY=1 once every shard accepts, and a first STATUS=.
pub fn notify_ready(shards: usize) {
    let status = format!("accepting, shards={shards}, sessions=0");
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// STOPPING=1 when a drain starts.
pub fn notify_stopping() {
    DRAINING.store(true, Ordering::SeqCst);
    notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// What one monitor round learnt.
#[derive(Debug, PartialEq, Eq)]
pub enum Round {
    /// Every shard answered (or had finished its drain).
    Alive { sessions: u64, draining: bool },
    /// These shards did not answer in time: their loops are stuck or dead.
    Silent(Vec<usize>),
    /// Every shard has exited.
    AllGone,
}

/// Asks every shard for a report and waits until `deadline` for the answers. A shard that
/// has exited counts as silent unless the process is draining (then shards exit by design).
pub fn probe_shards(mesh: &Mesh, deadline: Instant) -> Round {
    let poll = mesh.poll_stats(deadline);
    if poll.all_gone() {
        return Round::AllGone;
    }
    let draining_process = DRAINING.load(Ordering::SeqCst);
    let (mut sessions, mut draining, mut silent) = (0, false, Vec::new());
    for (index, answer) in poll.answers.iter().enumerate() {
        match answer {
            Answer::Report(report) => {
                sessions += report.counters.open;
                draining |= report.draining;
            }
            Answer::Gone if draining_process => {}
            Answer::Gone | Answer::Silent => silent.push(index),
        }
    }
    if silent.is_empty() {
        Round::Alive { sessions, draining }
    } else {
        Round::Silent(silent)
    }
}

/// Starts the thread that keeps systemd informed: STATUS= every round, WATCHDOG=1 after rounds
/// in which every shard answered. Does nothing without NOTIFY_SOCKET. A round is half of
/// WatchdogSec (sd_watchdog_enabled(3)), else [`STATUS_INTERVAL_MS`].
pub fn spawn_monitor(mesh: Mesh) -> std::io::Result<()> {
    if !notify_enabled() {
        return Ok(());
    }
    let watchdog = sd_notify::watchdog_enabled();
    let round = watchdog
        .map(|usec| usec / 2)
        .unwrap_or(Duration::from_millis(STATUS_INTERVAL_MS))
        .max(Duration::from_millis(MONITOR_ROUND_MIN_MS));
    if let Some(timeout) = watchdog {
        tracing::info!(
            watchdog_ms = timeout.as_millis() as u64,
            round_ms = round.as_millis() as u64,
            "systemd watchdog on: pinged while every shard answers"
        );
    }
    std::thread::Builder::new()
        .name("holdfast-systemd".into())
        .spawn(move || loop {
            let start = Instant::now();
            match probe_shards(&mesh, start + round) {
                Round::Alive { sessions, draining } => {
                    let status = format!(
                        "{}, shards={}, sessions={sessions}",
                        if draining { "draining" } else { "accepting" },
                        mesh.shards()
                    );
                    let mut states = vec![NotifyState::Status(&status)];
                    if watchdog.is_some() {
                        states.push(NotifyState::Watchdog);
                    }
                    notify(&states);
                }
                Round::Silent(shards) => {
                    tracing::error!(
                        ?shards,
                        "shards did not answer within {} ms: withholding the watchdog ping",
                        round.as_millis()
                    );
                    let status = format!("shards {shards:?} not answering");
                    notify(&[NotifyState::Status(&status)]);
                }
                Round::AllGone => return,
            }
            std::thread::sleep(round.saturating_sub(start.elapsed()));
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::{ShardMsg, ShardReport};
    use crate::metrics::ShardCounters;

    fn report(index: usize, open: u64) -> ShardReport {
        ShardReport {
            index,
            counters: ShardCounters {
                open,
                ..ShardCounters::default()
            },
            reply_latency_us: hdrhistogram::Histogram::new(3).unwrap(),
            draining: false,
        }
    }

    /// A fake shard inbox: answers Stats with `open` sessions if `answers`, else holds the
    /// message and never replies (a stuck loop).
    fn fake_shard(
        index: usize,
        open: u64,
        answers: bool,
    ) -> (flume::Sender<ShardMsg>, std::thread::JoinHandle<()>) {
        let (tx, rx) = flume::bounded(4);
        let handle = std::thread::spawn(move || {
            let mut held = Vec::new();
            while let Ok(msg) = rx.recv() {
                match msg {
                    ShardMsg::Stats(reply) if answers => drop(reply.send(report(index, open))),
                    other => held.push(other),
                }
            }
        });
        (tx, handle)
    }

    #[test]
    fn every_shard_answering_is_alive_with_summed_sessions() {
        let (a, _ha) = fake_shard(0, 3, true);
        let (b, _hb) = fake_shard(1, 4, true);
        let round = probe_shards(
            &Mesh::from_inboxes(vec![a, b]).unwrap(),
            Instant::now() + Duration::from_secs(2),
        );
        assert_eq!(
            round,
            Round::Alive {
                sessions: 7,
                draining: false
            }
        );
    }

    #[test]
    fn a_stuck_shard_is_named_and_withholds_the_ping() {
        let (a, _ha) = fake_shard(0, 3, true);
        let (b, _hb) = fake_shard(1, 4, false);
        let round = probe_shards(
            &Mesh::from_inboxes(vec![a, b]).unwrap(),
            Instant::now() + Duration::from_millis(200),
        );
        assert_eq!(round, Round::Silent(vec![1]));
    }

    #[test]
    fn a_full_inbox_counts_as_silent() {
        let (tx, _rx) = flume::bounded::<ShardMsg>(1);
        tx.send(ShardMsg::Drain).unwrap();
        let round = probe_shards(
            &Mesh::from_inboxes(vec![tx]).unwrap(),
            Instant::now() + Duration::from_millis(50),
        );
        assert_eq!(round, Round::Silent(vec![0]));
    }

    #[test]
    fn all_shards_exited_ends_the_monitor() {
        let (tx, rx) = flume::bounded::<ShardMsg>(1);
        drop(rx);
        assert_eq!(
            probe_shards(&Mesh::from_inboxes(vec![tx]).unwrap(), Instant::now()),
            Round::AllGone
        );
    }
}
