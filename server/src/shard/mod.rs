//! Shards: one pinned glommio executor per core, each owning a listener, an io_uring ring, a
//! connection slab, a timer wheel and counters. Other threads reach a shard only through its
//! inbox ([`ShardMsg`]).
//!
//! Inside a shard four tasks share the state (`Rc<RefCell<Shard>>`, never borrowed across an
//! await): the ring driver (submit, reap, handle; sleeps on the ring's eventfd through glommio
//! when the ring is quiet), the ticker (timer wheel), the inbox, and the publish answers (one
//! small task per publisher session's publish, waiting for its outcome).

mod drain;
mod frame_timeout;
mod io;
mod push;
pub(crate) mod state;
mod timers;
mod transport;
mod trim;

use std::cell::RefCell;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::Duration;

use glommio::io::BufferedFile;
use glommio::{LocalExecutorBuilder, Placement};
use socket2::Socket;

use crate::config::Config;
use crate::metrics::ShardCounters;
pub(crate) use state::Shard;

use crate::mesh::{Mesh, ShardMsg, INBOX_BATCH_MAX};

/// A running shard as the main thread sees it.
pub(crate) struct ShardHandle {
    pub index: usize,
    pub join: glommio::ExecutorJoinHandle<Result<ShardCounters, String>>,
}

/// Starts shard `index` pinned to `cpu`. `ready` gets the shard index once it accepts.
/// Everything a shard is started with.
pub(crate) struct ShardSpec {
    pub index: usize,
    pub cpu: usize,
    pub config: Config,
    pub listener: Socket,
    /// This shard's WebSocket listener (`ws_listen`), if configured.
    pub ws_listener: Option<Socket>,
    /// This shard's TLS listener (`tls_listen`) and the certificate source it reads, if
    /// configured.
    pub tls_listener: Option<(
        Socket,
        std::sync::Arc<crate::transport::tls::TlsConfigSource>,
    )>,
    /// Connection slots (= fixed-file table size).
    pub capacity: u32,
    /// Shards in the process.
    pub shards: usize,
    /// This shard's end of its event pipeline.
    pub events: flume::Sender<crate::events::OwnedEvent>,
    /// This shard's inbox.
    pub inbox: flume::Receiver<ShardMsg>,
    /// Every shard's inbox (this one's included), known before any accept.
    pub mesh: Mesh,
    /// Cluster mode: the way to the NATS bridge (`None` when standalone).
    pub cluster: Option<crate::cluster::Link>,
}

pub(crate) fn spawn(
    spec: ShardSpec,
    ready: flume::Sender<Result<usize, String>>,
) -> std::io::Result<ShardHandle> {
    let ShardSpec {
        index,
        cpu,
        config,
        listener,
        ws_listener,
        tls_listener,
        capacity,
        shards,
        events,
        inbox: inbox_rx,
        mesh,
        cluster,
    } = spec;
    assert_eq!(mesh.shards(), shards);
    let join = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name(&format!("holdfast-shard-{index}"))
        .io_memory(config.glommio_io_memory_bytes)
        .spawn(move || async move {
            let (tls_listener, tls_config) = match tls_listener {
                Some((listener, source)) => (Some(listener), Some(source)),
                None => (None, None),
            };
            let listeners = [Some(listener), ws_listener, tls_listener];
            let shard = match Shard::new(index, config, listeners, tls_config, capacity, mesh, events) {
                Ok(mut shard) => {
                    shard.attach_cluster(cluster);
                    shard
                }
                Err(e) => {
                    let message = format!("shard {index}: ring setup failed: {e} (check RLIMIT_MEMLOCK, and that each ring's table fits RLIMIT_NOFILE: `holdfast check-config`)");
                    let _ = ready.send(Err(message.clone()));
                    return Err(message);
                }
            };
            run(shard, inbox_rx, ready).await.map_err(|e| format!("shard {index}: {e}"))
        })
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(ShardHandle { index, join })
}

async fn run(
    shard: Shard,
    inbox: flume::Receiver<ShardMsg>,
    ready: flume::Sender<Result<usize, String>>,
) -> std::io::Result<ShardCounters> {
    let tick = Duration::from_millis(shard.ticks.tick_ms);
    // glommio reads the eventfd through its own ring; it closes what it owns, so give it a dup.
    let eventfd = shard.ring.eventfd_dup()?.into_raw_fd();
    // SAFETY: `eventfd` is a fresh descriptor (dup'd above) that nothing else owns; glommio
    // takes ownership and closes it.
    let eventfd = unsafe { BufferedFile::from_raw_fd(eventfd) };
    let index = shard.index;
    // The loop's own handle on the mesh, for the doorbell it listens on while the shard is
    // borrowed or not.
    let mesh = shard.mesh.clone();
    let doorbell = mesh.doorbell(index);
    let shard = Rc::new(RefCell::new(shard));
    shard.borrow_mut().arm_accept();
    shard.borrow_mut().arm_doorbell();
    shard.borrow_mut().turn()?;
    let _ = ready.send(Ok(index));

    let ticker = glommio::spawn_local({
        let shard = shard.clone();
        let inbox = inbox.clone();
        async move {
            loop {
                glommio::timer::sleep(tick).await;
                let mut shard = shard.borrow_mut();
                // A backstop: whatever wakes the shard for its inbox (the doorbell, the inbox
                // task) failed, a message still waits at most a tick.
                take_inbox(&mut shard, &inbox);
                shard.on_timer();
                if let Err(e) = shard.turn() {
                    tracing::error!(shard = shard.index, "ring submit failed in tick: {e}");
                }
            }
        }
    })
    .detach();
    // The driver looks at the inbox before it waits in its ring or parks, and takes what is
    // there after either (the task below may take it while the driver is parked, the ticker
    // every tick).
    let inbox_probe = inbox.clone();
    let inbox_task = glommio::spawn_local({
        let shard = shard.clone();
        async move {
            while let Ok(msg) = inbox.recv_async().await {
                let mut shard = shard.borrow_mut();
                shard.on_message(msg);
                take_inbox(&mut shard, &inbox);
                if let Err(e) = shard.turn() {
                    tracing::error!(shard = shard.index, "ring submit failed in inbox: {e}");
                }
            }
        }
    })
    .detach();

    let answers_task = glommio::spawn_local(answer_publishes(shard.clone())).detach();

    shard.borrow_mut().ring.set_eventfd_notify(false);
    let mut parked_at = std::time::Instant::now();
    loop {
        let handled = shard.borrow_mut().turn()?;
        if shard.borrow().drained() {
            break;
        }
        if handled > 0 {
            glommio::yield_if_needed().await;
            continue;
        }
        // Quiet: wait in the ring itself if allowed, cheaper than a park when the next
        // completion is near, and up to the rest of the tick while the doorbell is read there
        // (an inbox message then ends the wait: mesh/doorbell.rs). Listening first, then
        // looking at the inbox: a message put there after the look rings the doorbell.
        // Parks at least once a tick, so the ticker (a glommio timer) runs on time.
        let since_park = parked_at.elapsed();
        if since_park < tick {
            let until_tick_us = (tick - since_park).as_micros() as u64;
            doorbell.listen();
            let woken =
                inbox_probe.is_empty() && shard.borrow_mut().wait_before_park(until_tick_us)?;
            doorbell.stop_listening();
            if !inbox_probe.is_empty() {
                take_inbox(&mut shard.borrow_mut(), &inbox_probe);
                continue;
            }
            if woken {
                continue;
            }
        }
        // Still quiet: ask for the eventfd signal, listen on the doorbell, re-check for
        // completions that landed before it was on and for inbox messages, then sleep until the
        // kernel signals. The doorbell's read completing in the ring is such a signal, so an
        // inbox message wakes the park too: the inbox task alone is not enough, because a
        // message the loop took from under its flume receiver leaves that receiver woken for
        // nothing, and flume re-registers such a receiver without looking at the queue again
        // (a send in that gap wakes nobody: seen as 5 s stalls of an idle shard in e2e tests).
        let quiet = {
            let mut shard = shard.borrow_mut();
            shard.ring.set_eventfd_notify(true);
            doorbell.listen();
            inbox_probe.is_empty()
                && !shard.ring.has_completions()
                && !shard.ring.needs_enter()
                && shard.pings_due.is_empty()
        };
        if quiet {
            shard.borrow_mut().counters.ring_sleeps += 1;
            let woken = eventfd.read_at(0, 8).await;
            woken.map_err(|e| std::io::Error::other(e.to_string()))?;
            parked_at = std::time::Instant::now();
        }
        doorbell.stop_listening();
        let mut shard_ref = shard.borrow_mut();
        shard_ref.ring.set_eventfd_notify(false);
        take_inbox(&mut shard_ref, &inbox_probe);
    }
    ticker.cancel();
    inbox_task.cancel();
    answers_task.cancel();
    let mut shard = shard.borrow_mut();
    let parked = shard.push.events.parked_len() as u64;
    if parked > 0 {
        // Parked events were never acked, so the clients know; still, say it.
        shard.counters.events_dropped += parked;
        tracing::warn!(
            shard = shard.index,
            parked,
            "events still parked at exit were not accepted"
        );
    }
    let counters = shard.counters();
    tracing::info!(
        shard = shard.index,
        accepted = counters.accepted,
        drain_unflushed_bytes = counters.drain_unflushed_bytes,
        "shard drained"
    );
    drop(eventfd);
    Ok(counters)
}

/// Handles what waits in the inbox, up to INBOX_BATCH_MAX (a broadcast is one message per
/// shard, a busy topic many): the next ring turn sends the replies of the whole batch.
fn take_inbox(shard: &mut Shard, inbox: &flume::Receiver<ShardMsg>) {
    for msg in inbox.try_iter().take(INBOX_BATCH_MAX) {
        shard.on_message(msg);
    }
}

/// Waits for each publisher session's publish to end (push::publish_answer), each in its own
/// task, and answers the session: the owner's outcome, or `unavailable` when the message was
/// dropped or no outcome came within PUBLISH_ANSWER_TIMEOUT_MS.
async fn answer_publishes(shard: Rc<RefCell<Shard>>) {
    use crate::push::publish_answer::{Waited, PUBLISH_ANSWER_TIMEOUT_MS};
    let Some(waits) = shard.borrow_mut().push.publish_waits.take_receiver() else {
        return;
    };
    let timeout = Duration::from_millis(PUBLISH_ANSWER_TIMEOUT_MS);
    while let Some(wait) = waits.recv().await {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let outcome =
                glommio::timer::timeout(timeout, async { Ok(wait.outcome.recv_async().await) })
                    .await;
            let waited = match outcome {
                Ok(Ok(outcome)) => Waited::Answered(outcome),
                Ok(Err(_)) => Waited::Dropped,
                Err(_) => Waited::TimedOut,
            };
            let mut shard = shard.borrow_mut();
            shard.answer_publish(wait.key, wait.request_id, waited);
            if let Err(e) = shard.turn() {
                tracing::error!(
                    shard = shard.index,
                    "ring submit failed in publish answer: {e}"
                );
            }
        })
        .detach();
    }
}
