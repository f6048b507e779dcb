//! [`Client`]: the handle callers use. Cheap to clone; every clone talks to the same
//! connection task.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::backoff::Backoff;
use crate::config::ClientConfig;
use crate::driver::{self, AckReply, Command, Driver, Shared};
use crate::error::Error;
use crate::publish::{PublishTarget, Published, PUBLISH_METHOD};
use crate::pushes::PushStream;
use crate::state::{ConnectionState, Counters, SessionInfo, Stats};

/// A connection to a Holdfast server that stays connected: it reconnects with backoff,
/// honours the server's Goodbye, resubscribes, and keeps the session alive with heartbeats.
///
/// Made by [`Client::connect`], which also returns the [`PushStream`]. Clones share the
/// connection; it closes when [`Client::close`] is called or the last clone is dropped.
/// Needs a tokio runtime with the time and I/O drivers enabled.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<ClientConfig>,
    commands: mpsc::Sender<Command>,
    /// Dropping it (with the last handle) also closes the task.
    shutdown: watch::Sender<bool>,
    state: watch::Receiver<ConnectionState>,
    shared: Arc<Shared>,
    request_slots: Arc<Semaphore>,
    ack_slots: Arc<Semaphore>,
}

impl Client {
    /// Connects, sends Hello and waits for Welcome, then starts the connection task.
    ///
    /// This first attempt is not retried: an unreachable server, a refused token or a timeout
    /// comes back as the error (retry it yourself if that is what you want). From then on the
    /// client reconnects by itself.
    pub async fn connect(config: ClientConfig) -> Result<(Client, PushStream), Error> {
        config.validate()?;
        let connection = driver::handshake(&config)
            .await
            .map_err(|refused| refused.error)?;
        let config = Arc::new(config);
        let (commands_tx, commands_rx) = mpsc::channel(config.command_queue_max_items);
        let (pushes_tx, pushes_rx) = mpsc::channel(config.push_buffer_max_items);
        let (state_tx, state_rx) = watch::channel(ConnectionState::Connected(connection.info()));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared::default());
        Counters::bump(&shared.counters.sessions_opened);
        let driver = Driver {
            config: config.clone(),
            shared: shared.clone(),
            commands: commands_rx,
            pushes: pushes_tx,
            state: state_tx,
            shutdown: shutdown_rx,
            backoff: Backoff::new(
                config.reconnect_base_delay_ms,
                config.reconnect_max_delay_ms,
            ),
            queued: VecDeque::new(),
            resume_unsupported: false,
        };
        tokio::spawn(driver.run(connection));
        let client = Client {
            inner: Arc::new(Inner {
                request_slots: Arc::new(Semaphore::new(config.max_inflight_requests)),
                ack_slots: Arc::new(Semaphore::new(config.max_inflight_acks)),
                config,
                commands: commands_tx,
                shutdown: shutdown_tx,
                state: state_rx,
                shared,
            }),
        };
        Ok((client, PushStream { rx: pushes_rx }))
    }

    /// Calls `method` with `body` and returns the Response body, within
    /// [`ClientConfig::request_timeout_ms`].
    ///
    /// Errors: [`Error::Method`] when the handler refused or does not exist (the connection
    /// stays open), [`Error::Timeout`], [`Error::ConnectionLost`] if the connection dropped
    /// after the request was sent (it may have run), [`Error::FrameTooLarge`],
    /// [`Error::Closed`]. A request made while reconnecting waits for the new session.
    pub async fn request(&self, method: &str, body: impl Into<Bytes>) -> Result<Bytes, Error> {
        let timeout = Duration::from_millis(self.inner.config.request_timeout_ms);
        self.request_with_timeout(method, body, timeout).await
    }

    /// [`Client::request`] with its own timeout.
    pub async fn request_with_timeout(
        &self,
        method: &str,
        body: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Bytes, Error> {
        let method = method.to_owned();
        let body = body.into();
        let slots = self.inner.request_slots.clone();
        self.call(timeout, slots, move |reply, permit| Command::Request {
            method,
            body,
            reply,
            permit,
        })
        .await
    }

    /// Publishes `payload` to `target` from a publisher session (this client's id starts with
    /// the server's `publisher_client_id_prefix` and its token is checked), and returns what
    /// the server did with it once it knows: the sequence number a topic or broadcast publish
    /// took (in JetStream cluster mode: once the stream stored it), or the connections a
    /// connection or client publish was queued to.
    ///
    /// `msg_id` names the publish for a retry: in JetStream cluster mode a publish retried with
    /// the same `msg_id` (through any host, within the stream's duplicate window) is stored
    /// once and answered with its first number. Retry on [`Error::Unavailable`],
    /// [`Error::Timeout`] and [`Error::ConnectionLost`] with the same `msg_id`.
    ///
    /// Errors as for [`Client::request`], and: [`Error::Auth`] when this session may not
    /// publish, [`Error::Method`] for a target that does not exist or a bad topic,
    /// [`Error::Unavailable`] when the server took nothing or could not confirm it
    /// (`shutting_down`, `unavailable`), [`Error::Limit`] with too many publishes waiting for
    /// their answer, [`Error::Invalid`] for a `msg_id` the server would refuse.
    pub async fn publish(
        &self,
        target: PublishTarget,
        payload: impl AsRef<[u8]>,
        msg_id: Option<&str>,
    ) -> Result<Published, Error> {
        let body = crate::publish::encode(&target, payload.as_ref(), msg_id)?;
        let answer = self.request(PUBLISH_METHOD, body).await?;
        crate::publish::decode(&answer)
    }

    /// Sends an event and waits for the server's Ack: `Ok` once the event is in the server's
    /// pipeline. [`Error::Limit`] (`limit_exceeded`) means the pipeline was full and the event
    /// was dropped; the connection stays open.
    pub async fn event(&self, topic: &str, payload: impl Into<Bytes>) -> Result<(), Error> {
        let topic = topic.to_owned();
        let payload = payload.into();
        let timeout = Duration::from_millis(self.inner.config.request_timeout_ms);
        let slots = self.inner.ack_slots.clone();
        self.call(timeout, slots, move |tx, permit| Command::Event {
            topic,
            payload,
            ack: Some(AckReply {
                tx,
                _permit: permit,
            }),
        })
        .await
    }

    /// Queues an event without asking for an Ack: `Ok` once it is queued for the socket, not
    /// once the server has it. If the connection drops first it is lost, and if the server's
    /// pipeline is full it is dropped there, counted by the server and not reported.
    pub async fn event_unacked(&self, topic: &str, payload: impl Into<Bytes>) -> Result<(), Error> {
        let command = Command::Event {
            topic: topic.to_owned(),
            payload: payload.into(),
            ack: None,
        };
        let timeout_ms = self.inner.config.request_timeout_ms;
        match tokio::time::timeout(
            Duration::from_millis(timeout_ms),
            self.inner.commands.send(command),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout {
                waiting_for: "room in the command queue",
                after_ms: timeout_ms,
            }),
        }
    }

    /// Subscribes to `topics` and waits for the server's Ack. The client remembers them and
    /// subscribes again after every reconnect; pushes on them arrive on the [`PushStream`].
    ///
    /// It is sent as a SubscribeResume without a resume point: the Ack tells each topic's
    /// epoch and sequence number, from which a reconnect resumes. Topics already subscribed
    /// are not asked for again. `*` subscribes nothing (broadcasts come anyway) but makes them
    /// resume after a reconnect like a topic.
    ///
    /// [`Error::Limit`] when the server refuses (too many topics for it);
    /// [`Error::Invalid`] when it would exceed [`ClientConfig::max_topics`].
    /// If the connection drops before the Ack, the call fails with [`Error::ConnectionLost`]
    /// but the topics stay subscribed: the reconnect subscribes to them with the rest.
    pub async fn subscribe<I, S>(&self, topics: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let topics = topic_list(topics)?;
        self.ack_call(move |reply| Command::Subscribe { topics, reply })
            .await
    }

    /// Unsubscribes from `topics` and waits for the server's Ack. The client stops tracking
    /// them at once (pushes already on their way are still delivered).
    pub async fn unsubscribe<I, S>(&self, topics: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let topics = topic_list(topics)?;
        self.ack_call(move |reply| Command::Unsubscribe { topics, reply })
            .await
    }

    /// The subscribed topics, each with the last sequence number delivered on the push stream
    /// (`None` until the server's Ack tells where the topic stands), sorted by topic.
    pub fn subscriptions(&self) -> Vec<(String, Option<u64>)> {
        self.inner.shared.topics().subscriptions()
    }

    /// The last sequence number delivered on the push stream for `topic` (a subscribed topic,
    /// or `*` for broadcasts).
    pub fn last_seq(&self, topic: &str) -> Option<u64> {
        self.inner.shared.topics().last_seq(topic)
    }

    /// Where the connection stands now.
    pub fn state(&self) -> ConnectionState {
        self.inner.state.borrow().clone()
    }

    /// The open session, if connected.
    pub fn session(&self) -> Option<SessionInfo> {
        self.inner.state.borrow().session()
    }

    /// A receiver that sees every change of [`ConnectionState`] (the latest one, if several
    /// happened between two looks).
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.clone()
    }

    /// Counts since the client was created.
    pub fn stats(&self) -> Stats {
        self.inner.shared.counters.snapshot()
    }

    /// Closes the client: sends Goodbye, flushes (within
    /// [`ClientConfig::close_flush_timeout_ms`]) and stops reconnecting. Calls awaiting an
    /// answer fail with [`Error::Closed`]; the push stream ends after what it holds. Returns
    /// once the connection task is done.
    pub async fn close(&self) {
        self.inner.shutdown.send_replace(true);
        let mut state = self.inner.state.clone();
        // Err: the task is gone, which is closed too.
        let _ = state.wait_for(ConnectionState::is_closed).await;
    }

    async fn ack_call(&self, make: impl FnOnce(AckReply) -> Command) -> Result<(), Error> {
        let timeout = Duration::from_millis(self.inner.config.request_timeout_ms);
        let slots = self.inner.ack_slots.clone();
        self.call(timeout, slots, move |tx, permit| {
            make(AckReply {
                tx,
                _permit: permit,
            })
        })
        .await
    }

    /// Takes an in-flight slot, hands the command to the task and waits for its answer, all
    /// within `timeout`.
    async fn call<T, F>(
        &self,
        timeout: Duration,
        slots: Arc<Semaphore>,
        make: F,
    ) -> Result<T, Error>
    where
        F: FnOnce(oneshot::Sender<Result<T, Error>>, OwnedSemaphorePermit) -> Command,
    {
        let exchange = async move {
            let permit = slots.acquire_owned().await.map_err(|_| Error::Closed)?;
            let (tx, rx) = oneshot::channel();
            self.inner
                .commands
                .send(make(tx, permit))
                .await
                .map_err(|_| Error::Closed)?;
            // The task dropped the reply without answering: it closed.
            rx.await.map_err(|_| Error::Closed)?
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                waiting_for: "reply",
                after_ms: timeout.as_millis() as u64,
            }),
        }
    }
}

fn topic_list<I, S>(topics: I) -> Result<Vec<String>, Error>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let topics: Vec<String> = topics.into_iter().map(Into::into).collect();
    if topics.is_empty() {
        return Err(Error::Invalid("no topics given".to_owned()));
    }
    Ok(topics)
}
