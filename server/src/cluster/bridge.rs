//! The bridge thread: one current-thread tokio runtime running the NATS client, the
//! subscriptions local interest asks for (one task each, delivering to the owner shard), and
//! the forwarding of local publishes. Reconnection and re-subscription after a NATS restart are
//! async-nats's; the bridge tracks the connection to count and report what may be missed.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, Event, HeaderMap, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::jetstream::{self, Publishers};
use super::stream::StreamLimits;
use super::{
    target_of, Control, Outgoing, CONTROL_CAPACITY, ORIGIN_HEADER, PUBLISHED, PUBLISH_FAILED,
    RECEIVED, RECEIVE_DROPPED, SUBJECT_BROADCAST,
};
use crate::mesh::{Mesh, PublishOutcome, ShardMsg};
use crate::mesh::{Publish, Target};

/// Longest wait between reconnect attempts.
const RECONNECT_DELAY_MAX_MS: u64 = 1_000;
/// NATS subscribes one batch of interest changes runs at once.
const SUBSCRIBES_IN_FLIGHT_MAX: usize = 64;

pub(super) struct Bridge {
    pub url: String,
    pub host: String,
    pub mesh: Mesh,
    pub control: flume::Receiver<Control>,
    pub outgoing: flume::Receiver<Outgoing>,
    /// JetStream mode: the stream to open, and where to say it is open (its run) or why not.
    pub stream: Option<StreamSetup>,
}

pub(super) struct StreamSetup {
    pub limits: StreamLimits,
    pub publish_timeout: Duration,
    /// How far back the consumer starts reading (`history_max_age_ms`).
    pub replay_window: Duration,
    pub ready: flume::Sender<Result<u64, String>>,
}

/// A subscription held for `holders` local holders (shards). `task` is `None` if subscribing
/// failed; the count is kept anyway so the holders' later releases still balance.
struct Held {
    holders: usize,
    task: Option<JoinHandle<()>>,
}

/// What the bridge knows of its NATS connection.
struct Link {
    connected: bool,
    ever_connected: bool,
    down_since: Instant,
    /// Local publishes not forwarded since the connection was lost.
    missed: u64,
}

impl Bridge {
    pub(super) fn run(self) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "cluster bridge: cannot build its runtime; running standalone");
                return;
            }
        };
        runtime.block_on(self.serve());
    }

    async fn serve(mut self) {
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let connect = ConnectOptions::new()
            .name(format!("holdfast {}", self.host))
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64 * 100).min(RECONNECT_DELAY_MAX_MS))
            })
            .event_callback(move |event| {
                let _ = events_tx.send(event);
                async {}
            })
            .connect(self.url.as_str())
            .await;
        let client = match connect {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(nats_url = %self.url, error = %e, "cluster bridge: cannot use NATS; running standalone");
                if let Some(setup) = self.stream.take() {
                    let _ = setup
                        .ready
                        .send(Err(format!("cannot use NATS at {}: {e}", self.url)));
                }
                return;
            }
        };
        let host: Arc<str> = self.host.as_str().into();
        // JetStream mode: the stream first (serve waits for its run), then its consumer.
        let mut publishers = None;
        let restart_consumer = Arc::new(tokio::sync::Notify::new());
        if let Some(setup) = self.stream.take() {
            let timeout = Duration::from_millis(jetstream::STREAM_OPEN_TIMEOUT_MS);
            match jetstream::open(&client, &setup.limits, setup.publish_timeout, timeout).await {
                Ok((js, stream, run)) => {
                    let opened =
                        Publishers::new(js, stream, run, host.clone(), setup.publish_timeout);
                    opened.consume(
                        self.mesh.clone(),
                        restart_consumer.clone(),
                        setup.replay_window,
                    );
                    publishers = Some(opened);
                    tracing::info!(
                        stream = setup.limits.name,
                        run,
                        "cluster: JetStream stream open; reading it from history_max_age_ms ago"
                    );
                    let _ = setup.ready.send(Ok(run));
                }
                Err(e) => {
                    let _ = setup.ready.send(Err(e));
                    return;
                }
            }
        }
        let mut held: HashMap<String, Held> = HashMap::new();
        let mut link = Link {
            connected: false,
            ever_connected: false,
            down_since: Instant::now(),
            missed: 0,
        };
        // Broadcasts reach every host (in JetStream mode through the stream).
        if publishers.is_none() {
            let task = subscribe(&client, SUBJECT_BROADCAST, &host, &self.mesh).await;
            held.insert(SUBJECT_BROADCAST.to_owned(), Held { holders: 1, task });
        }
        loop {
            tokio::select! {
                control = self.control.recv_async() => match control {
                    Ok(first) => {
                        // Everything queued now is one round: coalesced across shards.
                        let mut batches = vec![first];
                        while batches.len() < CONTROL_CAPACITY {
                            match self.control.try_recv() {
                                Ok(batch) => batches.push(batch),
                                Err(_) => break,
                            }
                        }
                        let plan = plan(|subject| held.get(subject).map_or(0, |h| h.holders), coalesce(batches));
                        apply(&client, &mut held, plan, &host, &self.mesh).await;
                    }
                    Err(_) => break,
                },
                outgoing = self.outgoing.recv_async() => match outgoing {
                    Ok(Outgoing::Core { subject, payload }) => {
                        self.forward(&client, &mut link, subject, payload).await
                    }
                    Ok(Outgoing::Stream(job)) => match publishers.as_mut() {
                        Some(publishers) => publishers.dispatch(job).await,
                        None => {
                            if let Some(reply) = job.reply {
                                let _ = reply.send(PublishOutcome::Unavailable);
                            }
                        }
                    },
                    Err(_) => break,
                },
                Some(event) = events.recv() => {
                    let back = matches!(event, Event::Connected) && link.ever_connected;
                    on_event(&mut link, event, publishers.is_some());
                    if back && publishers.is_some() {
                        restart_consumer.notify_one();
                    }
                }
            }
        }
    }

    async fn forward(&self, client: &Client, link: &mut Link, subject: String, payload: Bytes) {
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        if !(link.connected && connected) {
            link.missed += 1;
            PUBLISH_FAILED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN_HEADER, self.host.as_str());
        match client.publish_with_headers(subject, headers, payload).await {
            Ok(()) => {
                PUBLISHED.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                link.missed += 1;
                PUBLISH_FAILED.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "cluster: publish to NATS failed");
            }
        }
    }
}

/// Net change in holders per subject over `batches` (several shards' flushes); subjects whose
/// changes cancel out are left out.
fn coalesce(batches: Vec<Control>) -> HashMap<String, i64> {
    let mut net: HashMap<String, i64> = HashMap::new();
    for (interest, change) in batches.into_iter().flat_map(|batch| batch.changes) {
        *net.entry(interest.subject()).or_insert(0) += i64::from(change);
    }
    net.retain(|_, change| *change != 0);
    net
}

/// What one round of interest changes does to the bridge's subscriptions.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    /// New subjects, with their holder count.
    subscribe: Vec<(String, usize)>,
    /// Subjects whose last holder left.
    unsubscribe: Vec<String>,
    /// Subjects still held, with their new holder count.
    recount: Vec<(String, usize)>,
}

/// The plan for `net` changes given the holders each subject has now.
fn plan(holders: impl Fn(&str) -> usize, net: HashMap<String, i64>) -> Plan {
    let mut plan = Plan::default();
    for (subject, change) in net {
        let before = holders(&subject);
        let after = usize::try_from((before as i64).saturating_add(change)).unwrap_or(0);
        match (before, after) {
            (0, 0) => {}
            (0, _) => plan.subscribe.push((subject, after)),
            (_, 0) => plan.unsubscribe.push(subject),
            _ => plan.recount.push((subject, after)),
        }
    }
    plan
}

/// Carries out a plan: unsubscribes at once, subscribes concurrently (at most
/// SUBSCRIBES_IN_FLIGHT_MAX at a time).
async fn apply(
    client: &Client,
    held: &mut HashMap<String, Held>,
    plan: Plan,
    host: &Arc<str>,
    mesh: &Mesh,
) {
    for subject in plan.unsubscribe {
        // Dropping the subscriber (with its task) unsubscribes.
        if let Some(task) = held.remove(&subject).and_then(|entry| entry.task) {
            task.abort();
        }
        tracing::debug!(subject, "cluster: unsubscribed");
    }
    for (subject, holders) in plan.recount {
        if let Some(entry) = held.get_mut(&subject) {
            entry.holders = holders;
        }
    }
    let subscribed = concurrently(plan.subscribe, SUBSCRIBES_IN_FLIGHT_MAX, |subject| {
        let (client, host, mesh) = (client.clone(), host.clone(), mesh.clone());
        async move { subscribe(&client, &subject, &host, &mesh).await }
    })
    .await;
    for (subject, holders, task) in subscribed {
        held.insert(subject, Held { holders, task });
    }
}

/// Runs `run(subject)` for every item, at most `in_flight` at once; each result with its item.
async fn concurrently<T, F, Fut>(
    items: Vec<(String, usize)>,
    in_flight: usize,
    run: F,
) -> Vec<(String, usize, T)>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut done = Vec::with_capacity(items.len());
    let mut running = tokio::task::JoinSet::new();
    for (subject, holders) in items {
        if running.len() >= in_flight.max(1) {
            if let Some(Ok(result)) = running.join_next().await {
                done.push(result);
            }
        }
        let work = run(subject.clone());
        running.spawn(async move { (subject, holders, work.await) });
    }
    while let Some(result) = running.join_next().await {
        if let Ok(result) = result {
            done.push(result);
        }
    }
    done
}

/// `jetstream`: topics and broadcasts go through the stream (retried, then refused with 503,
/// and read back after a reconnect), so only client-id publishes are lost while NATS is down.
fn on_event(link: &mut Link, event: Event, jetstream: bool) {
    match event {
        Event::Connected => {
            let down = link.down_since.elapsed();
            if !link.ever_connected {
                tracing::info!(
                    publishes_not_forwarded = link.missed,
                    "cluster: connected to NATS"
                );
            } else if jetstream {
                tracing::warn!(
                    down_ms = down.as_millis() as u64,
                    client_publishes_not_forwarded = link.missed,
                    "cluster: NATS connection back; the JetStream consumer reads on from its last message (topic publishes were retried or refused with 503 meanwhile); {} client-id publishes were not forwarded",
                    link.missed
                );
            } else {
                tracing::warn!(
                    down_ms = down.as_millis() as u64,
                    publishes_not_forwarded = link.missed,
                    "cluster: NATS connection back (subscriptions restored); while it was down {} local publishes were not forwarded, and what other hosts published was not received",
                    link.missed
                );
            }
            link.connected = true;
            link.ever_connected = true;
            link.missed = 0;
        }
        Event::Disconnected => {
            if link.connected && jetstream {
                tracing::warn!("cluster: NATS connection lost; reconnecting (topic publishes wait up to jetstream_publish_timeout_ms, then get 503)");
            } else if link.connected {
                tracing::warn!("cluster: NATS connection lost; reconnecting (publishes are not forwarded meanwhile)");
            }
            link.connected = false;
            link.down_since = Instant::now();
        }
        Event::Closed => {
            link.connected = false;
            tracing::warn!("cluster: NATS client closed");
        }
        other => tracing::warn!(event = %other, "cluster: NATS event"),
    }
}

/// Subscribes to `subject` and starts the task that hands its messages to local shards.
async fn subscribe(
    client: &Client,
    subject: &str,
    host: &Arc<str>,
    mesh: &Mesh,
) -> Option<JoinHandle<()>> {
    let Some(target) = target_of(subject) else {
        tracing::warn!(subject, "cluster: not a subject of ours");
        return None;
    };
    let subscriber = match client.subscribe(subject.to_owned()).await {
        Ok(subscriber) => subscriber,
        Err(e) => {
            tracing::warn!(subject, error = %e, "cluster: subscribe failed");
            return None;
        }
    };
    tracing::debug!(subject, "cluster: subscribed");
    Some(tokio::spawn(deliver(
        subscriber,
        target,
        host.clone(),
        mesh.clone(),
    )))
}

/// Hands each message from another host (or straight from NATS) to the owner shard here.
async fn deliver(mut subscriber: Subscriber, target: Target, host: Arc<str>, mesh: Mesh) {
    let owner = target.owner_shard(mesh.shards());
    while let Some(message) = subscriber.next().await {
        let origin = message
            .headers
            .as_ref()
            .and_then(|h| h.get(ORIGIN_HEADER))
            .map(|v| v.as_str());
        if origin == Some(&*host) {
            continue;
        }
        let publish = Publish {
            target: target.clone(),
            payload: message.payload,
            msg_id: None,
            reply: None,
        };
        if mesh
            .try_send(owner, ShardMsg::ClusterPublish(publish))
            .is_ok()
        {
            RECEIVED.fetch_add(1, Ordering::Relaxed);
        } else {
            RECEIVE_DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Interest;

    fn batch(changes: &[(&str, i32)]) -> Control {
        Control {
            changes: changes
                .iter()
                .map(|(topic, change)| (Interest::Topic((*topic).into()), *change))
                .collect(),
        }
    }

    fn subject(topic: &str) -> String {
        Interest::Topic(topic.into()).subject()
    }

    #[test]
    fn batches_from_several_shards_coalesce_per_subject_and_cancelled_ones_vanish() {
        let net = coalesce(vec![
            batch(&[("a", 1), ("b", 1)]),
            batch(&[("a", 1), ("b", -1), ("c", -1)]),
        ]);
        let mut net: Vec<_> = net.into_iter().collect();
        net.sort();
        assert_eq!(net, [(subject("a"), 2), (subject("c"), -1)]);
    }

    #[test]
    fn plan_subscribes_new_subjects_unsubscribes_emptied_ones_and_recounts_the_rest() {
        let holders = |s: &str| match s {
            s if s == subject("held") => 2,
            s if s == subject("last") => 1,
            _ => 0,
        };
        let net = coalesce(vec![
            // Subscribed then unsubscribed within the round: nothing to do.
            batch(&[("flash", 1)]),
            batch(&[("flash", -1)]),
            batch(&[("new", 1), ("new2", 1), ("held", 1), ("last", -1)]),
            batch(&[("new", 1), ("never", -1)]),
        ]);
        let mut plan = plan(holders, net);
        plan.subscribe.sort();
        assert_eq!(
            plan,
            Plan {
                subscribe: vec![(subject("new"), 2), (subject("new2"), 1)],
                unsubscribe: vec![subject("last")],
                recount: vec![(subject("held"), 3)],
            }
        );
    }

    #[test]
    fn subscribes_of_one_round_run_concurrently_within_the_bound() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let items: Vec<(String, usize)> = (0..10).map(|i| (format!("s{i}"), 1)).collect();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut done = runtime.block_on(concurrently(items, 5, |subject| {
            let (running, most) = (running.clone(), most.clone());
            async move {
                let now = running.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                running.fetch_sub(1, SeqCst);
                subject.len()
            }
        }));
        done.sort();
        assert_eq!(done.len(), 10, "every subscribe ran");
        assert_eq!(done[0], ("s0".to_owned(), 1, 2));
        // One at a time would be 1; the bound is 5.
        assert_eq!(most.load(SeqCst), 5, "five in flight at once, no more");
    }
}
