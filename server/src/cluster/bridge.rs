//! The bridge thread: one current-thread tokio runtime running the NATS client, the
//! subscriptions local interest asks for (one task each, delivering to the owner shard), and
//! the forwarding of local publishes. Reconnection and re-subscription after a NATS restart are
//! async-nats's; the bridge tracks the connection to count and report what may be missed.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, Event, HeaderMap, Subscriber};
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::{
    target_of, Control, Interest, Outgoing, ORIGIN_HEADER, PUBLISHED, PUBLISH_FAILED, RECEIVED,
    RECEIVE_DROPPED, SUBJECT_BROADCAST,
};
use crate::mesh::{Mesh, ShardMsg};
use crate::mesh::{Publish, Target};

/// Longest wait between reconnect attempts.
const RECONNECT_DELAY_MAX_MS: u64 = 1_000;

pub(super) struct Bridge {
    pub url: String,
    pub host: String,
    pub mesh: Mesh,
    pub control: flume::Receiver<Control>,
    pub outgoing: flume::Receiver<Outgoing>,
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
    pub fn run(self) {
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

    async fn serve(self) {
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
                return;
            }
        };
        let host: Arc<str> = self.host.as_str().into();
        let mut held: HashMap<String, Held> = HashMap::new();
        let mut link = Link {
            connected: false,
            ever_connected: false,
            down_since: Instant::now(),
            missed: 0,
        };
        // Broadcasts reach every host.
        let task = subscribe(&client, SUBJECT_BROADCAST, &host, &self.mesh).await;
        held.insert(SUBJECT_BROADCAST.to_owned(), Held { holders: 1, task });
        loop {
            tokio::select! {
                control = self.control.recv_async() => match control {
                    Ok(Control::Interest { interest, on }) => {
                        self.interest(&client, &mut held, &interest, on, &host).await
                    }
                    Err(_) => break,
                },
                outgoing = self.outgoing.recv_async() => match outgoing {
                    Ok(outgoing) => self.forward(&client, &mut link, outgoing).await,
                    Err(_) => break,
                },
                Some(event) = events.recv() => on_event(&mut link, event),
            }
        }
    }

    async fn interest(
        &self,
        client: &Client,
        held: &mut HashMap<String, Held>,
        interest: &Interest,
        on: bool,
        host: &Arc<str>,
    ) {
        let subject = interest.subject();
        match (on, held.get_mut(&subject)) {
            (true, Some(entry)) => entry.holders += 1,
            (true, None) => {
                let task = subscribe(client, &subject, host, &self.mesh).await;
                held.insert(subject, Held { holders: 1, task });
            }
            (false, Some(entry)) => {
                entry.holders -= 1;
                if entry.holders == 0 {
                    // Dropping the subscriber (with its task) unsubscribes.
                    if let Some(task) = held.remove(&subject).and_then(|entry| entry.task) {
                        task.abort();
                    }
                    tracing::debug!(subject, "cluster: unsubscribed");
                }
            }
            (false, None) => {}
        }
    }

    async fn forward(&self, client: &Client, link: &mut Link, outgoing: Outgoing) {
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        if !(link.connected && connected) {
            link.missed += 1;
            PUBLISH_FAILED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN_HEADER, self.host.as_str());
        match client
            .publish_with_headers(outgoing.subject, headers, outgoing.payload)
            .await
        {
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

fn on_event(link: &mut Link, event: Event) {
    match event {
        Event::Connected => {
            let down = link.down_since.elapsed();
            if !link.ever_connected {
                tracing::info!(
                    publishes_not_forwarded = link.missed,
                    "cluster: connected to NATS"
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
            if link.connected {
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
