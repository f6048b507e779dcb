//! Cluster mode over NATS: a bridge thread (async-nats on a current-thread tokio runtime) that
//! forwards this host's publishes to NATS and delivers other hosts' publishes to local shards.
//!
//! - **Interest-based.** The bridge subscribes only to `holdfast.topic.<topic>` for topics a
//!   local session holds, `holdfast.client.<client_id>` for client ids with a local session, and
//!   `holdfast.broadcast`. Shards tell it when a topic gains its first or loses its last
//!   subscriber on that shard, and when a client id gains its first or loses its last session
//!   (the directory's owner shard); the bridge counts shards per subject.
//! - **Messages only.** Shards reach the bridge through a [`Link`] (two channels); the bridge
//!   reaches shards through their inboxes (`ShardMsg::ClusterPublish` to the owner shard).
//! - **Origin.** A forwarded publish carries `Holdfast-Origin: <host id>`; the bridge connects
//!   with `no_echo` and also ignores its own origin. A message with any other origin, or none
//!   (published straight on NATS), is delivered locally and never forwarded again.
//! - **Sequence numbers are per host.** The owner shard of a topic on each host sequences
//!   everything delivered on that host (local and remote publishes alike), so a session sees
//!   gapless, increasing sequence numbers whoever published; the origin's number is not carried.
//!   What NATS loses (an outage) is not a sequence gap: the bridge counts and logs it.
//! - **Subjects.** A topic or client id that is not a plain NATS subject (empty token, space,
//!   `*`, `>`) goes as `holdfast.topic_hex.<hex>` / `holdfast.client_hex.<hex>`.
//! - **JetStream mode** (`cluster_mode = "jetstream"`): topics and broadcasts go through one
//!   stream instead (stream.rs: the stamp; jetstream.rs: publishers and consumer). A topic's
//!   sequence is then one sequence on every host, every host's history is filled from the
//!   stream, and a client resumes on any host. Client-id and connection targets stay on core
//!   NATS as above.

mod bridge;
mod jetstream;
pub(crate) mod stream;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::config::Config;
use crate::mesh::Mesh;
use crate::mesh::Target;

pub(crate) const SUBJECT_BROADCAST: &str = "holdfast.broadcast";
const TOPIC_PREFIX: &str = "holdfast.topic.";
const TOPIC_HEX_PREFIX: &str = "holdfast.topic_hex.";
const CLIENT_PREFIX: &str = "holdfast.client.";
const CLIENT_HEX_PREFIX: &str = "holdfast.client_hex.";
/// The header naming the host a message was first published on.
pub(crate) const ORIGIN_HEADER: &str = "Holdfast-Origin";
/// Publishes queued from the shards to the bridge; beyond this they are dropped and counted.
pub(crate) const OUTGOING_CAPACITY: usize = 65_536;

/// Process-wide cluster counters, read by the admin exposition (`/metrics`).
pub(crate) static ENABLED: AtomicBool = AtomicBool::new(false);
/// Local publishes that did not reach NATS (disconnected, send error, bridge queue full).
pub(crate) static PUBLISH_FAILED: AtomicU64 = AtomicU64::new(0);
/// Local publishes handed to NATS.
pub(crate) static PUBLISHED: AtomicU64 = AtomicU64::new(0);
/// Messages from NATS handed to a local shard.
pub(crate) static RECEIVED: AtomicU64 = AtomicU64::new(0);
/// Messages from NATS dropped because the owner shard's inbox was full.
pub(crate) static RECEIVE_DROPPED: AtomicU64 = AtomicU64::new(0);

/// JetStream mode: publishes that lost the race for their topic's next number to another
/// host's (each is retried).
pub(crate) static JS_PUBLISH_RACES_LOST: AtomicU64 = AtomicU64::new(0);
/// JetStream mode: messages in the stream without a Holdfast stamp (published straight on
/// NATS), not delivered.
pub(crate) static JS_UNSTAMPED: AtomicU64 = AtomicU64::new(0);
/// JetStream mode: messages whose numbers did not follow the last one a host had (they left
/// the stream before the host read them); the topic's history there starts again.
pub(crate) static JS_GAPS: AtomicU64 = AtomicU64::new(0);

/// What a subscription is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Interest {
    Topic(Arc<str>),
    Client(Box<str>),
}

impl Interest {
    pub(crate) fn subject(&self) -> String {
        match self {
            Interest::Topic(topic) => subject(TOPIC_PREFIX, TOPIC_HEX_PREFIX, topic),
            Interest::Client(client) => subject(CLIENT_PREFIX, CLIENT_HEX_PREFIX, client),
        }
    }
}

/// Shard -> bridge: one shard's interest changes since its last flush, coalesced: each interest
/// at most once, with its net change in holders (+1 first holder here, -1 last one gone). A
/// change that is undone before the flush (a subscribe then an unsubscribe) never travels.
#[derive(Debug, PartialEq, Eq)]
struct Control {
    changes: Vec<(Interest, i32)>,
}

/// Interest batches queued from the shards to the bridge. Full, a shard keeps its changes in
/// its pending set and tries again at its next flush: never blocked, never dropped.
pub(crate) const CONTROL_CAPACITY: usize = 1_024;

/// Shard -> bridge: a local publish to forward.
#[derive(Debug)]
enum Outgoing {
    /// Core NATS, fire and forget.
    Core { subject: String, payload: Bytes },
    /// JetStream mode: into the stream with the topic's next number, answered when stored.
    Stream(jetstream::Job),
}

/// A shard's way to the bridge. Each shard has its own (a clone starts with no pending
/// changes); the shard thread alone uses it.
#[derive(Debug)]
pub(crate) struct Link {
    control: flume::Sender<Control>,
    outgoing: flume::Sender<Outgoing>,
    /// Interest changes not yet handed to the bridge, net per interest (never 0).
    pending: RefCell<HashMap<Interest, i32>>,
    /// JetStream mode: the stream's run (`None`: core mode).
    stream_run: Option<u64>,
}

impl Clone for Link {
    fn clone(&self) -> Link {
        Link {
            control: self.control.clone(),
            outgoing: self.outgoing.clone(),
            pending: RefCell::default(),
            stream_run: self.stream_run,
        }
    }
}

impl Link {
    /// JetStream mode: the stream's run, from which every topic's first epoch derives.
    pub(crate) fn stream_run(&self) -> Option<u64> {
        self.stream_run
    }

    /// JetStream mode: hands a topic or broadcast publish to the bridge, which stamps it into
    /// the stream and answers `reply` once stored. Gives `reply` back if the bridge's queue is
    /// full (the caller refuses the publish).
    pub(crate) fn publish_to_stream(
        &self,
        target: &Target,
        payload: Bytes,
        msg_id: Option<Box<str>>,
        reply: Option<flume::Sender<crate::mesh::PublishOutcome>>,
    ) -> Result<(), Option<flume::Sender<crate::mesh::PublishOutcome>>> {
        let (Some(subject), Some(key)) =
            (stream::target_subject(target), stream::target_key(target))
        else {
            return Err(reply);
        };
        let job = jetstream::Job {
            subject,
            key: key.into(),
            payload,
            msg_id,
            reply,
        };
        match self.outgoing.try_send(Outgoing::Stream(job)) {
            Ok(()) => Ok(()),
            Err(e) => {
                PUBLISH_FAILED.fetch_add(1, Ordering::Relaxed);
                match e.into_inner() {
                    Outgoing::Stream(job) => Err(job.reply),
                    Outgoing::Core { .. } => Err(None),
                }
            }
        }
    }

    /// A topic gained its first (`on`) or lost its last local subscriber on this shard, or a
    /// client id its first or last session (on its directory owner shard). Recorded; the
    /// bridge hears of it at the next [`Link::flush`].
    pub(crate) fn interest(&self, interest: Interest, on: bool) {
        let mut pending = self.pending.borrow_mut();
        let net = pending.entry(interest).or_insert(0);
        *net += if on { 1 } else { -1 };
        if *net == 0 {
            pending.retain(|_, net| *net != 0);
        }
    }

    /// Hands the pending changes to the bridge as one batch, without blocking: if its channel
    /// is full they stay pending (and keep coalescing) until a later flush.
    pub(crate) fn flush(&self) {
        let mut pending = self.pending.borrow_mut();
        if pending.is_empty() || self.control.is_full() {
            return;
        }
        let changes: Vec<(Interest, i32)> = pending.drain().collect();
        match self.control.try_send(Control { changes }) {
            Ok(()) => {}
            // Another shard filled it first: keep them for the next flush.
            Err(flume::TrySendError::Full(Control { changes })) => pending.extend(changes),
            // The bridge has stopped (it logged why): no one is left to tell.
            Err(flume::TrySendError::Disconnected(_)) => {}
        }
    }

    /// Interest changes waiting for room in the bridge's channel.
    #[cfg(test)]
    pub(crate) fn pending_changes(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Forwards a publish that entered this host. Returns whether the target is one the
    /// cluster forwards (connection ids are host-local and are not).
    pub(crate) fn publish(&self, target: &Target, payload: &Bytes) -> bool {
        let subject = match target {
            Target::Topic(topic) => subject(TOPIC_PREFIX, TOPIC_HEX_PREFIX, topic),
            Target::Broadcast => SUBJECT_BROADCAST.to_owned(),
            Target::Client(client) => subject(CLIENT_PREFIX, CLIENT_HEX_PREFIX, client),
            Target::Conn(_) => return false,
        };
        let message = Outgoing::Core {
            subject,
            payload: payload.clone(),
        };
        if self.outgoing.try_send(message).is_err() {
            PUBLISH_FAILED.fetch_add(1, Ordering::Relaxed);
        }
        true
    }
}

/// A NATS subject for `name` under `plain` (or `hex` when `name` is not a plain token list).
fn subject(plain: &str, hex: &str, name: &str) -> String {
    let is_plain = !name.is_empty()
        && name.split('.').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>')
        });
    if is_plain {
        return format!("{plain}{name}");
    }
    let mut out = String::with_capacity(hex.len() + 2 * name.len());
    out.push_str(hex);
    for byte in name.bytes() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// The name a hex subject token spells (the inverse of [`subject`]'s hex form), if it is
/// UTF-8.
fn unhex(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// The target a subject from NATS stands for, if it is one of ours.
pub(crate) fn target_of(subject: &str) -> Option<Target> {
    if subject == SUBJECT_BROADCAST {
        return Some(Target::Broadcast);
    }
    let topic = match (
        subject.strip_prefix(TOPIC_PREFIX),
        subject.strip_prefix(TOPIC_HEX_PREFIX),
    ) {
        (Some(topic), _) => Some(topic.to_owned()),
        (None, Some(hex)) => Some(unhex(hex)?),
        _ => None,
    };
    if let Some(topic) = topic {
        return crate::mesh::valid_topic(&topic).then_some(Target::Topic(topic));
    }
    let client = match (
        subject.strip_prefix(CLIENT_PREFIX),
        subject.strip_prefix(CLIENT_HEX_PREFIX),
    ) {
        (Some(client), _) => client.to_owned(),
        (None, Some(hex)) => unhex(hex)?,
        _ => return None,
    };
    (!client.is_empty()).then_some(Target::Client(client))
}

/// A random host id (16 hex digits) when `cluster_host_id` is not set.
pub(crate) fn host_id(config: &Config) -> String {
    match &config.cluster_host_id {
        Some(id) => id.clone(),
        None => format!("{:016x}", rand::random::<u64>()),
    }
}

/// Starts the bridge thread when `nats_url` is set; returns the link shards are given. In
/// JetStream mode it first waits for the stream (created or opened, bounded by
/// `jetstream::STREAM_OPEN_TIMEOUT_MS`): shards need its run before they answer a subscribe.
pub(crate) fn start(config: &Config, mesh: Mesh) -> Result<Option<Link>, String> {
    let Some(url) = config.nats_url.clone() else {
        return Ok(None);
    };
    let host = host_id(config);
    let (control_tx, control_rx) = flume::bounded(CONTROL_CAPACITY);
    let (outgoing_tx, outgoing_rx) = flume::bounded(OUTGOING_CAPACITY);
    let (ready_tx, ready_rx) = flume::bounded(1);
    let stream = (config.cluster_mode == crate::config::ClusterMode::JetStream).then(|| {
        bridge::StreamSetup {
            limits: stream::StreamLimits {
                name: config.jetstream_stream.clone(),
                max_age: std::time::Duration::from_millis(config.jetstream_max_age_ms),
                max_messages: config.jetstream_max_messages,
                max_bytes: config.jetstream_max_bytes,
            },
            publish_timeout: std::time::Duration::from_millis(config.jetstream_publish_timeout_ms),
            replay_window: std::time::Duration::from_millis(config.history_max_age_ms),
            ready: ready_tx,
        }
    });
    let jetstream_mode = stream.is_some();
    let bridge = bridge::Bridge {
        url: url.clone(),
        host: host.clone(),
        mesh,
        control: control_rx,
        outgoing: outgoing_rx,
        stream,
    };
    std::thread::Builder::new()
        .name("holdfast-cluster".into())
        .spawn(move || bridge.run())
        .map_err(|e| format!("cannot start the cluster bridge thread: {e}"))?;
    let stream_run = if jetstream_mode {
        let wait = std::time::Duration::from_millis(jetstream::STREAM_OPEN_TIMEOUT_MS + 1_000);
        match ready_rx.recv_timeout(wait) {
            Ok(Ok(run)) => Some(run),
            Ok(Err(e)) => return Err(format!("cluster_mode = \"jetstream\": {e}")),
            Err(_) => {
                return Err(format!(
                    "cluster_mode = \"jetstream\": the JetStream stream {} was not open within {} ms (is nats-server running with -js at {url}?)",
                    config.jetstream_stream,
                    jetstream::STREAM_OPEN_TIMEOUT_MS
                ))
            }
        }
    } else {
        None
    };
    ENABLED.store(true, Ordering::Relaxed);
    tracing::info!(nats_url = %url, host_id = %host, mode = ?config.cluster_mode, "cluster mode: NATS bridge started");
    Ok(Some(Link {
        control: control_tx,
        outgoing: outgoing_tx,
        pending: RefCell::default(),
        stream_run,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(capacity: usize) -> (Link, flume::Receiver<Control>) {
        let (control, control_rx) = flume::bounded(capacity);
        let (outgoing, _) = flume::bounded(1);
        let link = Link {
            control,
            outgoing,
            pending: RefCell::default(),
            stream_run: None,
        };
        (link, control_rx)
    }

    fn topic(name: &str) -> Interest {
        Interest::Topic(name.into())
    }

    fn sorted(mut changes: Vec<(Interest, i32)>) -> Vec<(Interest, i32)> {
        changes.sort_by_key(|(interest, _)| interest.subject());
        changes
    }

    #[test]
    fn a_subscribe_undone_before_the_flush_sends_nothing() {
        let (link, control) = link(4);
        link.interest(topic("a"), true);
        link.interest(topic("a"), false);
        link.interest(Interest::Client("c".into()), false);
        link.interest(Interest::Client("c".into()), true);
        link.flush();
        assert!(control.try_recv().is_err(), "nothing to tell the bridge");
        assert_eq!(link.pending_changes(), 0);
    }

    #[test]
    fn one_flush_sends_one_batch_with_each_interest_once() {
        let (link, control) = link(4);
        link.interest(topic("a"), true);
        link.interest(topic("b"), true);
        link.interest(topic("b"), false);
        link.interest(topic("b"), true);
        link.interest(topic("c"), false);
        link.flush();
        let batch = control.try_recv().unwrap();
        assert_eq!(
            sorted(batch.changes),
            [(topic("a"), 1), (topic("b"), 1), (topic("c"), -1)]
        );
        assert!(control.try_recv().is_err(), "one batch");
    }

    #[test]
    fn a_full_channel_keeps_changes_pending_until_a_later_flush() {
        let (link, control) = link(1);
        link.interest(topic("first"), true);
        link.flush();
        // The channel is full: these wait, coalescing, in the shard's pending set.
        link.interest(topic("a"), true);
        link.interest(topic("b"), true);
        link.flush();
        assert_eq!(link.pending_changes(), 2);
        link.interest(topic("b"), false);
        link.interest(topic("c"), true);
        link.flush();
        assert_eq!(link.pending_changes(), 2, "a and c");
        // The bridge takes the first batch; the next flush delivers the rest.
        assert_eq!(control.try_recv().unwrap().changes, [(topic("first"), 1)]);
        link.flush();
        assert_eq!(link.pending_changes(), 0);
        assert_eq!(
            sorted(control.try_recv().unwrap().changes),
            [(topic("a"), 1), (topic("c"), 1)]
        );
    }

    #[test]
    fn a_clone_is_another_shards_link_with_its_own_pending_changes() {
        let (link, control) = link(4);
        link.interest(topic("a"), true);
        let other = link.clone();
        assert_eq!(other.pending_changes(), 0);
        other.interest(topic("a"), true);
        other.flush();
        link.flush();
        assert_eq!(control.try_recv().unwrap().changes, [(topic("a"), 1)]);
        assert_eq!(control.try_recv().unwrap().changes, [(topic("a"), 1)]);
    }

    #[test]
    fn subjects_round_trip_plain_and_hex() {
        for topic in ["news", "a.b", "with space", "a..b", "x*", ".lead", "ünï"] {
            let subject = Interest::Topic(topic.into()).subject();
            assert_eq!(
                target_of(&subject),
                Some(Target::Topic(topic.to_owned())),
                "{subject}"
            );
        }
        assert_eq!(
            Interest::Topic("news.eu".into()).subject(),
            "holdfast.topic.news.eu"
        );
        assert_eq!(
            Interest::Topic("a b".into()).subject(),
            "holdfast.topic_hex.612062"
        );
        let client = Interest::Client("alice".into()).subject();
        assert_eq!(client, "holdfast.client.alice");
        assert_eq!(target_of(&client), Some(Target::Client("alice".into())));
        assert_eq!(target_of(SUBJECT_BROADCAST), Some(Target::Broadcast));
        assert_eq!(target_of("other.subject"), None);
        assert_eq!(target_of("holdfast.topic_hex.zz"), None);
    }
}
