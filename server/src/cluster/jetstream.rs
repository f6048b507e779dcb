//! JetStream mode's moving parts, on the bridge thread: the publishers that stamp each topic's
//! next number into the stream (one task per topic with publishes in flight, so a topic's
//! publishes from this host go one after another), and the consumer that reads the whole
//! stream in order and hands every message to its topic's owner shard here.
//!
//! Invariants:
//! - A publish is answered `Sequenced { seq }` only after JetStream acknowledged it: an
//!   accepted publish is in the stream, and every host delivers it (docs/ARCHITECTURE.md,
//!   "Cluster sequence").
//! - Every attempt of one publish carries the same `Nats-Msg-Id`: an attempt whose answer was
//!   lost and that is retried is stored once (JetStream's duplicate window), and its stamp is
//!   read back from the stream. Ids are unique per process (host id, a random nonce, a
//!   counter): a restarted host's publishes are never taken for its old ones.
//! - The consumer never drops: a full shard inbox makes it wait (the stream holds the rest).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{self, Context};
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::stream::{self, last_of, Stamp, StreamLimits, STREAM_SUBJECTS};
use super::{
    JS_PUBLISH_RACES_LOST, JS_UNSTAMPED, OUTGOING_CAPACITY, PUBLISHED, PUBLISH_FAILED, RECEIVED,
};
use crate::mesh::{Mesh, PublishOutcome, ShardMsg};

/// How long `serve` waits at start for the stream to be created or opened.
pub(crate) const STREAM_OPEN_TIMEOUT_MS: u64 = 10_000;
/// Pause between tries to open the stream, or to start the consumer again.
const RETRY_DELAY_MS: u64 = 200;
/// Longest pause between two attempts of one publish (full jitter below it).
const PUBLISH_BACKOFF_MAX_MS: u64 = 64;
/// A topic's publisher task ends after this long with nothing to publish.
const PUBLISHER_IDLE_MS: u64 = 5_000;
/// Topics whose last stamp the consumer remembers (to start a topic's new run after its
/// messages left the stream, and to save a publisher a read). Past it, new topics are not
/// remembered: their publishers read the stream instead.
const SEEN_TOPICS_MAX: usize = 1_000_000;

/// A publish for the stream, from a shard.
#[derive(Debug)]
pub(crate) struct Job {
    pub subject: String,
    pub key: Box<str>,
    pub payload: Bytes,
    /// The publisher's name for the publish: its `Nats-Msg-Id` (within the topic), so a retry
    /// after an unconfirmed attempt is stored once.
    pub msg_id: Option<Box<str>>,
    pub reply: Option<flume::Sender<PublishOutcome>>,
}

/// Per stream subject, the last stamp and stream sequence the consumer read.
type Seen = Arc<Mutex<HashMap<String, (Stamp, u64)>>>;

/// Opens (or creates) the stream, retrying until `timeout`: NATS may still be starting.
pub(super) async fn open(
    client: &Client,
    limits: &StreamLimits,
    publish_timeout: Duration,
    timeout: Duration,
) -> Result<(Context, Stream, u64), String> {
    let js = jetstream::context::ContextBuilder::new()
        .timeout(publish_timeout)
        .build(client.clone());
    let deadline = Instant::now() + timeout;
    loop {
        match stream::open(&js, limits).await {
            Ok((stream, run)) => return Ok((js, stream, run)),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "cluster: JetStream stream not open yet; retrying");
                tokio::time::sleep(Duration::from_millis(RETRY_DELAY_MS)).await;
            }
        }
    }
}

/// The publishing side: hands each job to its topic's publisher task.
pub(super) struct Publishers {
    js: Context,
    stream: Stream,
    stream_run: u64,
    host: Arc<str>,
    publish_timeout: Duration,
    seen: Seen,
    tasks: HashMap<String, mpsc::UnboundedSender<(Job, OwnedSemaphorePermit, u64)>>,
    /// Jobs taken from the shards and not yet answered: at most OUTGOING_CAPACITY.
    permits: Arc<Semaphore>,
    next_job_id: u64,
    nonce: u64,
}

impl Publishers {
    pub(super) fn new(
        js: Context,
        stream: Stream,
        stream_run: u64,
        host: Arc<str>,
        publish_timeout: Duration,
    ) -> Publishers {
        Publishers {
            js,
            stream,
            stream_run,
            host,
            publish_timeout,
            seen: Seen::default(),
            tasks: HashMap::new(),
            permits: Arc::new(Semaphore::new(OUTGOING_CAPACITY)),
            next_job_id: 0,
            nonce: rand::random(),
        }
    }

    /// Queues `job` behind its topic's earlier publishes (waits while OUTGOING_CAPACITY jobs
    /// are unanswered: the shards' channel fills and they refuse publishes meanwhile).
    pub(super) async fn dispatch(&mut self, job: Job) {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        self.next_job_id += 1;
        let mut item = (job, permit, self.next_job_id);
        if let Some(task) = self.tasks.get(&item.0.subject) {
            match task.send(item) {
                Ok(()) => return,
                // That task just ended (idle): start another.
                Err(mpsc::error::SendError(back)) => item = back,
            }
        }
        if self.tasks.len() >= OUTGOING_CAPACITY {
            self.tasks.retain(|_, task| !task.is_closed());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let subject = item.0.subject.clone();
        let _ = tx.send(item);
        let publisher = Publisher {
            js: self.js.clone(),
            stream: self.stream.clone(),
            stream_run: self.stream_run,
            host: self.host.clone(),
            nonce: self.nonce,
            timeout: self.publish_timeout,
            seen: self.seen.clone(),
        };
        tokio::spawn(publisher.run(rx));
        self.tasks.insert(subject, tx);
    }

    /// Starts the consumer that delivers the stream to this host's shards, from `replay_window`
    /// ago (`history_max_age_ms`). `restart` makes it start again after the last message it
    /// read (the bridge rings it when the NATS connection comes back: the consumer's own
    /// missed-heartbeat check takes ~30 s).
    pub(super) fn consume(
        &self,
        mesh: Mesh,
        restart: Arc<tokio::sync::Notify>,
        replay_window: Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(consume(
            self.stream.clone(),
            mesh,
            self.seen.clone(),
            restart,
            replay_window,
        ))
    }
}

/// One topic's publisher: its publishes in order, each to the end.
struct Publisher {
    js: Context,
    stream: Stream,
    stream_run: u64,
    host: Arc<str>,
    /// Drawn once per process: a restarted host (same id, job numbers from 1 again) never
    /// reuses a message id JetStream still remembers, which it would take for a retry.
    nonce: u64,
    timeout: Duration,
    seen: Seen,
}

enum Failure {
    /// Another host took the number first.
    Lost,
    /// NATS did not answer, or answered with an error.
    Failed(String),
}

impl Publisher {
    async fn run(self, mut jobs: mpsc::UnboundedReceiver<(Job, OwnedSemaphorePermit, u64)>) {
        // The topic's last message as this task knows it (stamp, stream sequence).
        let mut last: Option<(Stamp, u64)> = None;
        loop {
            let next = tokio::time::timeout(Duration::from_millis(PUBLISHER_IDLE_MS), jobs.recv());
            let (job, permit, id) = match next.await {
                Ok(Some(item)) => item,
                Ok(None) => return,
                Err(_) => {
                    // Idle: refuse new jobs, finish the ones already queued, end.
                    jobs.close();
                    while let Ok((job, permit, id)) = jobs.try_recv() {
                        self.publish(&mut last, job, id).await;
                        drop(permit);
                    }
                    return;
                }
            };
            self.publish(&mut last, job, id).await;
            drop(permit);
        }
    }

    /// Publishes `job` with the topic's next number, retrying lost races and failures with
    /// jittered backoff until the publish timeout; answers whoever waits.
    async fn publish(&self, last: &mut Option<(Stamp, u64)>, job: Job, id: u64) {
        let deadline = Instant::now() + self.timeout;
        let message_id = match &job.msg_id {
            Some(msg_id) => format!("{}:{msg_id}", job.subject),
            None => format!("{}-{:016x}-{id}", self.host, self.nonce),
        };
        let mut attempt: u32 = 0;
        let outcome = loop {
            // Each attempt within what is left of the deadline (NATS may not answer at all).
            let left = deadline.saturating_duration_since(Instant::now());
            let attempted = tokio::time::timeout(left, self.attempt(last, &job, &message_id))
                .await
                .unwrap_or_else(|_| Err(Failure::Failed("no answer before the deadline".into())));
            match attempted {
                Ok(stamp) => {
                    PUBLISHED.fetch_add(1, Ordering::Relaxed);
                    break PublishOutcome::Sequenced { seq: stamp.seq };
                }
                Err(Failure::Lost) => {
                    JS_PUBLISH_RACES_LOST.fetch_add(1, Ordering::Relaxed);
                }
                Err(Failure::Failed(error)) => {
                    tracing::debug!(
                        subject = job.subject,
                        error,
                        "cluster: JetStream publish attempt failed"
                    );
                }
            }
            *last = None;
            attempt += 1;
            let ceiling_ms = PUBLISH_BACKOFF_MAX_MS.min(1 << attempt.min(16));
            let pause = Duration::from_millis(rand::random::<u64>() % (ceiling_ms + 1));
            if Instant::now() + pause >= deadline {
                PUBLISH_FAILED.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(subject = job.subject, attempts = attempt, "cluster: JetStream publish not taken within jetstream_publish_timeout_ms; refused");
                break PublishOutcome::Unavailable;
            }
            tokio::time::sleep(pause).await;
        };
        if let Some(reply) = job.reply {
            let _ = reply.send(outcome);
        }
    }

    async fn attempt(
        &self,
        last: &mut Option<(Stamp, u64)>,
        job: &Job,
        message_id: &str,
    ) -> Result<Stamp, Failure> {
        // Disconnected, the client would hold the message and send it once NATS is back,
        // where it could be stored after this publish was answered "unavailable". Only a
        // message sent while connected can be stored, and then within this attempt's wait or
        // as the duplicate its retry (same Nats-Msg-Id) finds.
        if self.js.client().connection_state() != async_nats::connection::State::Connected {
            return Err(Failure::Failed("NATS not connected".into()));
        }
        let seen = self
            .seen
            .lock()
            .ok()
            .and_then(|seen| seen.get(&job.subject).copied());
        let known = match last.take() {
            // Another host's later message, read by the consumer, saves a lost race.
            Some(cached) => Some(seen.filter(|s| s.1 > cached.1).unwrap_or(cached)),
            None => last_of(&self.stream, &job.subject)
                .await
                .map_err(Failure::Failed)?,
        };
        let fresh_run = match (known, seen) {
            // Its messages left the stream while we watched: a new run, never an old one.
            (None, Some((_, last_stream_seq))) => {
                stream::restart_run(self.stream_run, &job.key, last_stream_seq)
            }
            _ => stream::first_run(self.stream_run, &job.key),
        };
        let stamp = Stamp::next(known.map(|(stamp, _)| stamp), fresh_run);
        let mut headers = HeaderMap::new();
        for (name, value) in stamp.headers() {
            headers.insert(name, value);
        }
        let message = PublishMessage::build()
            .payload(job.payload.clone())
            .headers(headers)
            .message_id(message_id)
            .expected_last_subject_sequence(known.map_or(0, |(_, seq)| seq));
        let ack = self
            .js
            .send_publish(job.subject.clone(), message)
            .await
            .map_err(|e| Failure::Failed(e.to_string()))?
            .await;
        match ack {
            Ok(ack) if ack.duplicate => {
                // An earlier attempt of this publish is in the stream: its stamp counts.
                let stored = self
                    .stream
                    .get_raw_message(ack.sequence)
                    .await
                    .map_err(|e| Failure::Failed(e.to_string()))?;
                let stamp = Stamp::parse(|name| stored.headers.get(name).map(|v| v.as_str()))
                    .map_err(|e| Failure::Failed(e.to_string()))?;
                *last = Some((stamp, ack.sequence));
                Ok(stamp)
            }
            Ok(ack) => {
                *last = Some((stamp, ack.sequence));
                Ok(stamp)
            }
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Err(Failure::Lost),
            Err(e) => Err(Failure::Failed(e.to_string())),
        }
    }
}

/// Reads the stream from `replay_window` ago (the history's age bound: so this host's history
/// holds what the stream holds of that window), in order, and hands each message to its
/// topic's owner shard; starts again after the last message read if the consumer fails.
async fn consume(
    stream: Stream,
    mesh: Mesh,
    seen: Seen,
    restart: Arc<tokio::sync::Notify>,
    replay_window: Duration,
) {
    let mut next_stream_seq: u64 = 0;
    loop {
        let config = pull::OrderedConfig {
            filter_subject: STREAM_SUBJECTS.to_owned(),
            deliver_policy: if next_stream_seq == 0 {
                // What the history window could still hold; older would be evicted at once.
                let window =
                    time::Duration::try_from(replay_window).unwrap_or(time::Duration::ZERO);
                DeliverPolicy::ByStartTime {
                    start_time: time::OffsetDateTime::now_utc() - window,
                }
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: next_stream_seq,
                }
            },
            ..Default::default()
        };
        let messages = match stream.create_consumer(config).await {
            Ok(consumer) => consumer.messages().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match messages {
            Err(e) => tracing::warn!(
                error = e,
                "cluster: JetStream consumer did not start; retrying"
            ),
            Ok(mut messages) => loop {
                let message = tokio::select! {
                    message = messages.next() => message,
                    () = restart.notified() => {
                        tracing::info!(next_stream_seq, "cluster: NATS connection back; JetStream consumer starts again after the last message read");
                        break;
                    }
                };
                let Some(message) = message else {
                    break;
                };
                {
                    let message = match message {
                        Ok(message) => message,
                        Err(e) => {
                            tracing::warn!(error = %e, "cluster: JetStream consumer failed; starting it again after the last message read");
                            break;
                        }
                    };
                    let Ok(stream_seq) = message.info().map(|info| info.stream_sequence) else {
                        continue;
                    };
                    next_stream_seq = stream_seq + 1;
                    let subject = message.subject.as_str();
                    let stamp = message
                        .headers
                        .as_ref()
                        .ok_or(stream::StampError::Missing(stream::SEQ_HEADER))
                        .and_then(|h| Stamp::parse(|name| h.get(name).map(|v| v.as_str())));
                    let (Some(target), Ok(stamp)) = (stream::subject_target(subject), stamp) else {
                        // Published straight on NATS, not through a Holdfast host: no number.
                        JS_UNSTAMPED.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    if let Ok(mut seen) = seen.lock() {
                        if seen.len() < SEEN_TOPICS_MAX || seen.contains_key(subject) {
                            seen.insert(subject.to_owned(), (stamp, stream_seq));
                        }
                    }
                    let owner = target.owner_shard(mesh.shards());
                    let msg = ShardMsg::StreamPublish {
                        target,
                        stamp,
                        payload: message.message.payload.clone(),
                    };
                    if mesh.send_async(owner, msg).await.is_ok() {
                        RECEIVED.fetch_add(1, Ordering::Relaxed);
                    }
                }
            },
        }
        tokio::time::sleep(Duration::from_millis(RETRY_DELAY_MS)).await;
    }
}
