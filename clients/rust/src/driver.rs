//! The connection task: one per client. It owns the socket and runs, in a loop, a session
//! (read frames, write queued frames, answer Pings, send heartbeats, notice a silent server)
//! and, when the session ends, the reconnect wait (Goodbye's hint, else backoff), a new
//! handshake and the resubscribe. Callers talk to it only through the command channel and
//! oneshot replies; it talks back through the push stream, the state watch and the counters.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use holdfast_protocol::{ErrorCode, Kind, MAX_FRAME_BYTES_DEFAULT};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};
use tokio::time::{sleep, sleep_until, Instant};

use crate::backoff::Backoff;
use crate::config::ClientConfig;
use crate::error::Error;
use crate::frames::{
    self, FrameReader, Inbound, ResumeAnswer, ResumePoint, TOPICS_FRAME_OVERHEAD_BYTES,
};
use crate::pushes::{Incoming, Push};
use crate::seq::{Gap, TopicSeqs};
use crate::state::{ConnectionState, Counters, SessionInfo};
use crate::transport::{self, Reader, Writer};

/// Bytes queued for the socket above which the task stops taking new calls until the
/// socket drains (the calls wait in the command channel, which is bounded too).
pub const WRITE_BUFFER_MAX_BYTES: usize = 256 * 1024;
/// Calls taken from the command channel per wake-up of the task (then it reads and writes
/// again, so a flood of calls cannot starve reading).
pub const COMMANDS_PER_WAKE_MAX: usize = 64;
/// Bytes reserved in the receive buffer before each read.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Floor on the heartbeat interval, whatever a Welcome says: a broken Welcome must not turn
/// the client into a Ping flood.
pub const HEARTBEAT_MIN_MS: u64 = 100;
/// Id of the Hello (and so of the Welcome); later frames count up from the next one.
const HELLO_ID: u64 = 1;
/// Times per session the client asks again for topics whose resume the server answered with
/// epoch 0 (an internal queue was full), before leaving them to the next reconnect.
pub const RESUME_RETRIES_PER_SESSION_MAX: u32 = 8;
/// Reason sent in the client's Goodbye on close.
const CLOSE_REASON: &str = "client closing";

/// A call from a [`Client`](crate::Client) handle.
pub(crate) enum Command {
    Request {
        method: String,
        body: Bytes,
        reply: oneshot::Sender<Result<Bytes, Error>>,
        permit: OwnedSemaphorePermit,
    },
    Event {
        topic: String,
        payload: Bytes,
        /// `None`: sent without the ack flag.
        ack: Option<AckReply>,
    },
    Subscribe {
        topics: Vec<String>,
        reply: AckReply,
    },
    Unsubscribe {
        topics: Vec<String>,
        reply: AckReply,
    },
}

/// Where an Ack (or the Error instead) goes, and the in-flight slot it holds until then.
pub(crate) struct AckReply {
    pub(crate) tx: oneshot::Sender<Result<(), Error>>,
    /// Held until the answer arrives (or the connection is lost), so the slot stays taken.
    pub(crate) _permit: OwnedSemaphorePermit,
}

/// State shared between the task and the handles.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    topics: Mutex<TopicSeqs>,
    pub(crate) counters: Counters,
}

impl Shared {
    /// The topics. Never poisoned in practice (nothing panics while holding it); if it were,
    /// the data is still consistent enough to read, so take it rather than panic.
    pub(crate) fn topics(&self) -> MutexGuard<'_, TopicSeqs> {
        self.topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An open session, from the handshake to the session loop.
pub(crate) struct Connection {
    reader: Reader,
    writer: Writer,
    frames: FrameReader,
    info: SessionInfo,
}

impl Connection {
    pub(crate) fn info(&self) -> SessionInfo {
        self.info
    }
}

fn closed_by_server() -> Error {
    Error::from(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the server closed the connection",
    ))
}

/// Why a handshake failed, and how long the server asked us to stay away.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) error: Error,
    /// A Goodbye's `reconnect_after_ms` (a server at its connection cap sends Error
    /// server_full, then Goodbye with the hint, then closes).
    pub(crate) reconnect_after: Option<Duration>,
}

impl From<Error> for Refused {
    fn from(error: Error) -> Refused {
        Refused {
            error,
            reconnect_after: None,
        }
    }
}

impl From<std::io::Error> for Refused {
    fn from(error: std::io::Error) -> Refused {
        Refused::from(Error::from(error))
    }
}

/// Connects, sends Hello and waits for Welcome. On a refusal it reads on until the server
/// closes (or the Hello deadline), so a Goodbye after the Error still yields its hint.
pub(crate) async fn handshake(config: &ClientConfig) -> Result<Connection, Refused> {
    let transport = transport::connect(
        &config.endpoint,
        config.source_addr,
        config.connect_timeout_ms,
    )
    .await?;
    let (mut reader, mut writer) = transport.split();
    let token = config
        .token
        .as_ref()
        .map(|source| source.token_for(&config.client_id))
        .unwrap_or_default();
    let mut hello = BytesMut::new();
    // Until Welcome tells the server's limit, frames stay within the protocol's default.
    frames::encode_hello(
        &mut hello,
        HELLO_ID,
        &config.client_id,
        &token,
        config.heartbeat_ms,
        MAX_FRAME_BYTES_DEFAULT,
    )?;
    let mut frames = FrameReader::new(MAX_FRAME_BYTES_DEFAULT);
    let deadline = Instant::now() + Duration::from_millis(config.hello_timeout_ms);
    let timed_out = || Error::Timeout {
        waiting_for: "welcome",
        after_ms: config.hello_timeout_ms,
    };
    match tokio::time::timeout_at(deadline, writer.write_all(&hello)).await {
        Ok(written) => written?,
        Err(_) => return Err(timed_out().into()),
    }
    // The Error frame that refused us, if one came.
    let mut refusal: Option<Error> = None;
    let info = 'welcome: loop {
        while let Some((id, inbound)) = frames.next().map_err(Error::Decode)? {
            match inbound {
                Inbound::Welcome(info) if refusal.is_none() => break 'welcome info,
                Inbound::Error(error) if refusal.is_none() => refusal = Some(error),
                Inbound::Goodbye {
                    reason,
                    reconnect_after_ms,
                } => {
                    return Err(Refused {
                        error: refusal.unwrap_or(Error::Goodbye {
                            reason,
                            reconnect_after_ms,
                        }),
                        reconnect_after: Some(Duration::from_millis(u64::from(reconnect_after_ms))),
                    })
                }
                other => {
                    return Err(refusal
                        .unwrap_or(Error::UnexpectedFrame {
                            kind: other.kind(),
                            id,
                        })
                        .into())
                }
            }
        }
        frames.buf_mut().reserve(READ_CHUNK_BYTES);
        let read = tokio::time::timeout_at(deadline, reader.read_buf(frames.buf_mut())).await;
        let ended = match read {
            Ok(Ok(0)) => closed_by_server(),
            Ok(Ok(_)) => continue,
            Ok(Err(error)) => error.into(),
            Err(_) => timed_out(),
        };
        return Err(refusal.unwrap_or(ended).into());
    };
    // The server never sends a frame larger than its own limit; accept at least the default.
    frames.set_max_frame_bytes(info.max_frame_bytes.max(MAX_FRAME_BYTES_DEFAULT));
    Ok(Connection {
        reader,
        writer,
        frames,
        info,
    })
}

/// A request not on the wire yet: waiting for a wire slot (Welcome's limit) or a connection.
pub(crate) struct QueuedRequest {
    method: String,
    body: Bytes,
    reply: oneshot::Sender<Result<Bytes, Error>>,
    permit: OwnedSemaphorePermit,
}

/// A frame on the wire awaiting its answer.
enum Pending {
    /// Kept after its caller timed out (reply closed): the server still counts it in flight.
    Request {
        reply: oneshot::Sender<Result<Bytes, Error>>,
        _permit: OwnedSemaphorePermit,
    },
    /// An acked event or an unsubscribe.
    Ack(AckReply),
    /// A SubscribeResume: the user's subscribe or the task's own resubscribe.
    Resume(ResumeJob),
}

/// A SubscribeResume to send: the server takes one at a time per session, so they queue.
struct ResumeJob {
    /// Topics to subscribe with their resume points (read when the frame is encoded).
    names: Vec<String>,
    /// The user's subscribe this answers; `None` for the resubscribe after a reconnect.
    user: Option<AckReply>,
}

impl ResumeJob {
    /// Fails the user's call, if it is one, forgetting its topics when `forget` (refused).
    fn fail(self, shared: &Shared, error: Error, forget: bool) {
        if let Some(reply) = self.user {
            if forget {
                shared.topics().unsubscribe(&self.names);
            }
            let _ = reply.tx.send(Err(error));
        }
    }
}

/// Per-session state of the loop.
struct Session {
    info: SessionInfo,
    out: BytesMut,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    /// Requests on the wire (answered or not by the caller's clock), at most Welcome's limit.
    wire_requests: usize,
    /// The last Error frame tied to no call, which the server follows with a close: the
    /// cause of the EOF.
    fatal_error: Option<Error>,
    /// SubscribeResumes waiting for the one on the wire to be answered.
    resume_queue: VecDeque<ResumeJob>,
    /// A SubscribeResume is on the wire, unanswered.
    resume_in_flight: bool,
    /// Topics asked again after an epoch-0 answer, this session.
    resume_retries: u32,
}

impl Session {
    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        // 0 is the server's id for errors tied to no frame; never use it.
        self.next_id = self.next_id.checked_add(1).unwrap_or(HELLO_ID + 1);
        id
    }

    fn wire_request_limit(&self) -> usize {
        (self.info.max_inflight_requests as usize).max(1)
    }

    /// Fails everything awaiting an answer with `error` (a fresh one per caller).
    /// A user's subscribe that did not get its answer keeps its topics: the next session
    /// subscribes to them with the rest.
    fn fail_pending(&mut self, error: impl Fn() -> Error) {
        for (_, pending) in self.pending.drain() {
            match pending {
                Pending::Request { reply, .. } => {
                    let _ = reply.send(Err(error()));
                }
                Pending::Ack(reply)
                | Pending::Resume(ResumeJob {
                    user: Some(reply), ..
                }) => {
                    let _ = reply.tx.send(Err(error()));
                }
                Pending::Resume(ResumeJob { user: None, .. }) => {}
            }
        }
        for job in self.resume_queue.drain(..) {
            if let Some(reply) = job.user {
                let _ = reply.tx.send(Err(error()));
            }
        }
        self.resume_in_flight = false;
        self.wire_requests = 0;
    }
}

/// How a session ended.
enum SessionEnd {
    /// The user closed the client.
    Shutdown,
    /// The connection is gone; reconnect no sooner than `reconnect_after` if the server said.
    Lost {
        cause: Error,
        reconnect_after: Option<Duration>,
    },
}

fn lost(cause: Error) -> SessionEnd {
    SessionEnd::Lost {
        cause,
        reconnect_after: None,
    }
}

/// Resolves once the user asked to close, or every handle is gone.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

pub(crate) struct Driver {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) pushes: mpsc::Sender<Incoming>,
    pub(crate) state: watch::Sender<ConnectionState>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) backoff: Backoff,
    /// Requests not on the wire yet. Kept across reconnects (they were never sent, so sending
    /// them later is safe); bounded by `max_inflight_requests` permits.
    pub(crate) queued: VecDeque<QueuedRequest>,
    /// The server refused a SubscribeResume as an unknown kind (it predates resume): subscribe
    /// with plain Subscribe from then on, this session and the next ones.
    pub(crate) resume_unsupported: bool,
}

impl Driver {
    /// Runs sessions and reconnects until the client is closed or gives up.
    pub(crate) async fn run(mut self, first: Connection) {
        let mut connection = first;
        loop {
            let (cause, reconnect_after) = match self.session(connection).await {
                SessionEnd::Shutdown => return self.close(None),
                SessionEnd::Lost {
                    cause,
                    reconnect_after,
                } => (cause, reconnect_after),
            };
            tracing::debug!(%cause, "holdfast connection lost");
            match self.reconnect(cause, reconnect_after).await {
                Some(next) => connection = next,
                None => return,
            }
        }
    }

    /// Closed for good: everything waiting fails with [`Error::Closed`] (the handles see the
    /// command channel and the push stream end when the task returns).
    fn close(&mut self, cause: Option<Error>) {
        self.queued.clear();
        self.commands.close();
        self.state.send_replace(ConnectionState::Closed { cause });
    }

    /// Waits (Goodbye's hint first, then backoff) and retries until a Welcome; `None` when
    /// the client closed or gave up meanwhile.
    async fn reconnect(
        &mut self,
        mut cause: Error,
        mut reconnect_after: Option<Duration>,
    ) -> Option<Connection> {
        let mut attempt = 0u32;
        loop {
            if let Some(most) = self.config.reconnect_max_attempts {
                if attempt >= most {
                    self.close(Some(cause));
                    return None;
                }
            }
            // The server already spread its hint with jitter: honour it as given (up to the
            // configured ceiling).
            let hint_ceiling = Duration::from_millis(self.config.reconnect_after_max_ms);
            let retry_in = match reconnect_after.take() {
                Some(hint) => hint.min(hint_ceiling),
                None => self.backoff.next_delay(),
            };
            self.state.send_replace(ConnectionState::Disconnected {
                cause: cause.clone(),
                retry_in,
            });
            tokio::select! {
                _ = sleep(retry_in) => {}
                _ = shutdown_requested(&mut self.shutdown) => {
                    self.close(None);
                    return None;
                }
            }
            attempt += 1;
            self.state.send_replace(ConnectionState::Connecting {
                attempt,
                cause: cause.clone(),
            });
            let result = tokio::select! {
                result = handshake(&self.config) => result,
                _ = shutdown_requested(&mut self.shutdown) => {
                    self.close(None);
                    return None;
                }
            };
            match result {
                Ok(connection) => {
                    Counters::bump(&self.shared.counters.sessions_opened);
                    self.backoff.reset();
                    return Some(connection);
                }
                Err(Refused { error, .. }) if error.is_permanent() => {
                    tracing::warn!(%error, "holdfast client stops reconnecting");
                    self.close(Some(error));
                    return None;
                }
                Err(refused) => {
                    reconnect_after = refused.reconnect_after;
                    cause = refused.error;
                }
            }
        }
    }

    /// One session, from Welcome to its end.
    async fn session(&mut self, connection: Connection) -> SessionEnd {
        let Connection {
            mut reader,
            mut writer,
            mut frames,
            info,
        } = connection;
        // The first session is already announced by `Client::connect`: no second change.
        self.state.send_if_modified(|state| match state {
            ConnectionState::Connected(announced) if *announced == info => false,
            _ => {
                *state = ConnectionState::Connected(info);
                true
            }
        });
        let mut session = Session {
            info,
            out: BytesMut::new(),
            pending: HashMap::new(),
            next_id: HELLO_ID + 1,
            wire_requests: 0,
            fatal_error: None,
            resume_queue: VecDeque::new(),
            resume_in_flight: false,
            resume_retries: 0,
        };
        self.shared.topics().forget_awaited_resumes();
        self.resubscribe(&mut session);
        let heartbeat = Duration::from_millis(u64::from(info.heartbeat_ms).max(HEARTBEAT_MIN_MS));
        // The server answers a Ping at once and pings a silent client itself, so a live server
        // is never silent for long; its own timeout for us is the fair bound for it.
        let dead_after_ms =
            u64::from(info.heartbeat_timeout_ms).max(2 * heartbeat.as_millis() as u64);
        let dead_after = Duration::from_millis(dead_after_ms);
        let mut last_received = Instant::now();
        let mut last_sent = Instant::now();
        // Frames that arrived with the Welcome (a Ping, a push) are already buffered: handle
        // them now, not when the next read happens to complete.
        let mut early_end = self.on_frames(&mut frames, &mut session);
        let end = loop {
            if let Some(end) = early_end.take() {
                break Some(end);
            }
            self.send_queued_requests(&mut session);
            let buf = frames.buf_mut();
            if buf.capacity() - buf.len() < READ_CHUNK_BYTES / 4 {
                buf.reserve(READ_CHUNK_BYTES);
            }
            let out_open = session.out.len() < WRITE_BUFFER_MAX_BYTES;
            // A TLS or WebSocket layer may hold bytes a cancelled flush left behind.
            let to_write = !session.out.is_empty() || writer.needs_flush();
            tokio::select! {
                biased;
                _ = shutdown_requested(&mut self.shutdown) => break None,
                read = reader.read_buf(frames.buf_mut()) => match read {
                    Ok(0) => {
                        let cause = session.fatal_error.take();
                        break Some(lost(cause.unwrap_or_else(closed_by_server)));
                    }
                    Ok(_) => {
                        last_received = Instant::now();
                        if let Some(end) = self.on_frames(&mut frames, &mut session) {
                            break Some(end);
                        }
                    }
                    Err(error) => break Some(lost(error.into())),
                },
                written = writer.write_buf(&mut session.out), if to_write => {
                    match written {
                        Ok(_) => last_sent = Instant::now(),
                        Err(error) => break Some(lost(error.into())),
                    }
                }
                command = self.commands.recv(), if out_open => match command {
                    Some(command) => {
                        self.on_command(command, &mut session);
                        // Take what else is already waiting, so a burst goes out in one write.
                        for _ in 1..COMMANDS_PER_WAKE_MAX {
                            if session.out.len() >= WRITE_BUFFER_MAX_BYTES {
                                break;
                            }
                            match self.commands.try_recv() {
                                Ok(command) => self.on_command(command, &mut session),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break None,
                },
                _ = sleep_until(last_sent + heartbeat), if session.out.is_empty() => {
                    let id = session.next_id();
                    frames::encode_ping(&mut session.out, id);
                }
                _ = sleep_until(last_received + dead_after) => {
                    break Some(lost(Error::Timeout {
                        waiting_for: "server heartbeat",
                        after_ms: dead_after_ms,
                    }));
                }
            }
        };
        match end {
            None => {
                frames::encode_goodbye(&mut session.out, CLOSE_REASON);
                let flush = async {
                    writer.write_all(&session.out).await?;
                    writer.shutdown().await
                };
                let limit = Duration::from_millis(self.config.close_flush_timeout_ms);
                let _ = tokio::time::timeout(limit, flush).await;
                session.fail_pending(|| Error::Closed);
                SessionEnd::Shutdown
            }
            Some(end) => {
                session.fail_pending(|| Error::ConnectionLost);
                end
            }
        }
    }

    /// Subscribes again to every topic after a reconnect, in as few SubscribeResumes as fit,
    /// each topic with its resume point (epoch and last seq delivered) so the server replays
    /// what was missed.
    fn resubscribe(&mut self, session: &mut Session) {
        let subscriptions = self.shared.topics().subscriptions();
        let budget_bytes =
            (session.info.max_frame_bytes as usize).saturating_sub(TOPICS_FRAME_OVERHEAD_BYTES);
        let mut chunk: Vec<String> = Vec::new();
        let mut chunk_bytes = 0;
        for (topic, _last_seq) in subscriptions {
            let bytes = frames::resume_topic_frame_bytes(&topic);
            if !chunk.is_empty() && chunk_bytes + bytes > budget_bytes {
                session.resume_queue.push_back(ResumeJob {
                    names: std::mem::take(&mut chunk),
                    user: None,
                });
                chunk_bytes = 0;
            }
            chunk_bytes += bytes;
            chunk.push(topic);
        }
        if !chunk.is_empty() {
            session.resume_queue.push_back(ResumeJob {
                names: chunk,
                user: None,
            });
        }
        self.send_next_resume(session);
    }

    /// Puts the next queued SubscribeResume on the wire unless one is awaiting its Ack.
    fn send_next_resume(&mut self, session: &mut Session) {
        while !session.resume_in_flight {
            let Some(job) = session.resume_queue.pop_front() else {
                return;
            };
            let points: Vec<ResumePoint> = self
                .shared
                .topics()
                .resume_points(&job.names)
                .into_iter()
                .map(|(name, epoch, last_seq)| ResumePoint {
                    name,
                    epoch,
                    last_seq,
                })
                .collect();
            if points.is_empty() {
                // Unsubscribed meanwhile: nothing to ask.
                if let Some(reply) = job.user {
                    let _ = reply.tx.send(Ok(()));
                }
                continue;
            }
            let id = session.next_id();
            let max_frame_bytes = session.info.max_frame_bytes;
            let encoded = if self.resume_unsupported {
                // Its Ack answers no topic: nothing is replayed, and a push after a skip in
                // numbers is preceded by its Gap (TopicSeqs::gap_before).
                let names: Vec<String> = points.iter().map(|point| point.name.clone()).collect();
                frames::encode_topics(
                    &mut session.out,
                    id,
                    frames::TopicsFrame::Subscribe,
                    &names,
                    max_frame_bytes,
                )
            } else {
                frames::encode_subscribe_resume(&mut session.out, id, &points, max_frame_bytes)
            };
            match encoded {
                Ok(()) => {
                    session.resume_in_flight = true;
                    session.pending.insert(id, Pending::Resume(job));
                }
                Err(error) => {
                    if job.user.is_none() {
                        Counters::bump(&self.shared.counters.resubscribe_failures);
                        tracing::warn!(%error, topics = points.len(), "holdfast resubscribe not sent");
                    }
                    job.fail(&self.shared, error, true);
                }
            }
        }
    }

    /// The SubscribeAck of `job`: learn each topic's epoch, report what could not be
    /// recovered, ask again for topics the server could not look up.
    fn on_resumed(&mut self, session: &mut Session, job: ResumeJob, answers: &[ResumeAnswer]) {
        session.resume_in_flight = false;
        if answers.len() != job.names.len() {
            tracing::debug!(
                asked = job.names.len(),
                answered = answers.len(),
                "holdfast SubscribeAck does not answer every topic"
            );
        }
        let mut again = Vec::new();
        for (name, answer) in job.names.iter().zip(answers) {
            if answer.epoch == 0 {
                again.push(name.clone());
                continue;
            }
            let gap =
                self.shared
                    .topics()
                    .resumed(name, answer.epoch, answer.seq, answer.recovered);
            if let Some(gap) = gap {
                tracing::debug!(
                    ?gap,
                    oldest_seq = answer.oldest_seq,
                    "holdfast resume lost pushes"
                );
                match self.pushes.try_send(Incoming::Gap(gap)) {
                    Ok(()) => Counters::bump(&self.shared.counters.gaps_reported),
                    // Stream full: put the base back, so the next push delivered on the topic
                    // reveals the same missed range (a reset cannot be deferred that way).
                    Err(TrySendError::Full(Incoming::Gap(Gap::Missed {
                        first_missed_seq,
                        ..
                    }))) => self.shared.topics().rebase(name, first_missed_seq - 1),
                    Err(error) => tracing::warn!(?error, "holdfast gap report not delivered"),
                }
            }
        }
        let retry = !again.is_empty() && session.resume_retries < RESUME_RETRIES_PER_SESSION_MAX;
        {
            let mut topics = self.shared.topics();
            for name in &again {
                topics.set_awaiting_resume(name, retry);
            }
        }
        if retry {
            session.resume_retries += 1;
            session.resume_queue.push_back(ResumeJob {
                names: again,
                user: None,
            });
        }
        if let Some(reply) = job.user {
            let _ = reply.tx.send(Ok(()));
        }
        self.send_next_resume(session);
    }

    /// Puts queued requests on the wire while Welcome's in-flight limit allows.
    fn send_queued_requests(&mut self, session: &mut Session) {
        while session.wire_requests < session.wire_request_limit()
            && session.out.len() < WRITE_BUFFER_MAX_BYTES
        {
            let Some(queued) = self.queued.pop_front() else {
                break;
            };
            if queued.reply.is_closed() {
                continue; // its caller gave up before it was sent: drop it, free its slot
            }
            let id = session.next_id();
            let max_frame_bytes = session.info.max_frame_bytes;
            match frames::encode_request(
                &mut session.out,
                id,
                &queued.method,
                &queued.body,
                max_frame_bytes,
            ) {
                Ok(()) => {
                    session.wire_requests += 1;
                    session.pending.insert(
                        id,
                        Pending::Request {
                            reply: queued.reply,
                            _permit: queued.permit,
                        },
                    );
                }
                Err(error) => {
                    let _ = queued.reply.send(Err(error));
                }
            }
        }
    }

    fn on_command(&mut self, command: Command, session: &mut Session) {
        let max_frame_bytes = session.info.max_frame_bytes;
        match command {
            Command::Request {
                method,
                body,
                reply,
                permit,
            } => self.queued.push_back(QueuedRequest {
                method,
                body,
                reply,
                permit,
            }),
            Command::Event {
                topic,
                payload,
                ack,
            } => {
                if ack.as_ref().is_some_and(|ack| ack.tx.is_closed()) {
                    return; // timed out while queued: not sent
                }
                let id = session.next_id();
                let encoded = frames::encode_event(
                    &mut session.out,
                    id,
                    &topic,
                    &payload,
                    ack.is_some(),
                    max_frame_bytes,
                );
                match (encoded, ack) {
                    (Ok(()), Some(ack)) => {
                        session.pending.insert(id, Pending::Ack(ack));
                    }
                    (Err(error), Some(ack)) => {
                        let _ = ack.tx.send(Err(error));
                    }
                    (Ok(()), None) => {}
                    (Err(error), None) => {
                        tracing::warn!(%error, %topic, "holdfast unacked event not sent");
                    }
                }
            }
            Command::Subscribe { topics, reply } => {
                if reply.tx.is_closed() {
                    return;
                }
                let added = {
                    let mut tracked = self.shared.topics();
                    let added = tracked.subscribe(&topics);
                    if tracked.subscribed_count() > self.config.max_topics {
                        tracked.unsubscribe(&added);
                        drop(tracked);
                        let _ = reply.tx.send(Err(Error::Invalid(format!(
                            "more than max_topics ({}) subscribed topics",
                            self.config.max_topics
                        ))));
                        return;
                    }
                    added
                };
                if added.is_empty() {
                    // Already subscribed (on this session, or asked for by a queued resume).
                    let _ = reply.tx.send(Ok(()));
                    return;
                }
                // A SubscribeResume with no resume point: the Ack tells each topic's epoch
                // and seq, what a resume after a reconnect continues from.
                session.resume_queue.push_back(ResumeJob {
                    names: added,
                    user: Some(reply),
                });
                self.send_next_resume(session);
            }
            Command::Unsubscribe { topics, reply } => {
                // Forget them now: pushes already on their way are delivered, untracked.
                self.shared.topics().unsubscribe(&topics);
                if reply.tx.is_closed() {
                    return;
                }
                let id = session.next_id();
                let unsubscribe = frames::TopicsFrame::Unsubscribe;
                match frames::encode_topics(
                    &mut session.out,
                    id,
                    unsubscribe,
                    &topics,
                    max_frame_bytes,
                ) {
                    Ok(()) => {
                        session.pending.insert(id, Pending::Ack(reply));
                    }
                    Err(error) => {
                        let _ = reply.tx.send(Err(error));
                    }
                }
            }
        }
    }

    /// Handles every complete frame received; `Some` when the session must end.
    fn on_frames(&mut self, frames: &mut FrameReader, session: &mut Session) -> Option<SessionEnd> {
        loop {
            let (id, inbound) = match frames.next() {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(error) => return Some(lost(Error::Decode(error))),
            };
            match inbound {
                Inbound::Ping => frames::encode_pong(&mut session.out, id),
                Inbound::Pong => {}
                Inbound::Push(push) => self.deliver(push),
                Inbound::Response(body) => match session.pending.remove(&id) {
                    Some(Pending::Request { reply, .. }) => {
                        session.wire_requests -= 1;
                        let _ = reply.send(Ok(body));
                    }
                    other => self.unmatched(session, id, Kind::Response, other),
                },
                Inbound::Ack(answers) => match session.pending.remove(&id) {
                    Some(Pending::Ack(reply)) => {
                        let _ = reply.tx.send(Ok(()));
                    }
                    Some(Pending::Resume(job)) => self.on_resumed(session, job, &answers),
                    other => self.unmatched(session, id, Kind::Ack, other),
                },
                Inbound::Error(error) => self.on_error(session, id, error),
                Inbound::Goodbye {
                    reason,
                    reconnect_after_ms,
                } => {
                    Counters::bump(&self.shared.counters.goodbyes_received);
                    return Some(SessionEnd::Lost {
                        cause: Error::Goodbye {
                            reason,
                            reconnect_after_ms,
                        },
                        reconnect_after: Some(Duration::from_millis(u64::from(reconnect_after_ms))),
                    });
                }
                Inbound::Welcome(_) | Inbound::Unexpected(_) => {
                    return Some(lost(Error::UnexpectedFrame {
                        kind: inbound.kind(),
                        id,
                    }));
                }
            }
        }
    }

    /// An Error frame: the answer to the frame with its id, if one awaits it.
    fn on_error(&mut self, session: &mut Session, id: u64, error: Error) {
        match session.pending.remove(&id) {
            Some(Pending::Request { reply, .. }) => {
                session.wire_requests -= 1;
                let _ = reply.send(Err(error));
            }
            Some(Pending::Ack(reply)) => {
                let _ = reply.tx.send(Err(error));
            }
            Some(Pending::Resume(job))
                if error.code() == Some(ErrorCode::UnknownKind) && !self.resume_unsupported =>
            {
                // A server without SubscribeResume: ask again with plain Subscribe (first in
                // line, so subscribes keep their order).
                tracing::info!("holdfast server has no SubscribeResume: using Subscribe");
                Counters::bump(&self.shared.counters.resume_fallbacks);
                self.resume_unsupported = true;
                session.resume_in_flight = false;
                session.resume_queue.push_front(job);
                self.send_next_resume(session);
            }
            Some(Pending::Resume(job)) => {
                session.resume_in_flight = false;
                if job.user.is_none() {
                    Counters::bump(&self.shared.counters.resubscribe_failures);
                    tracing::warn!(%error, topics = job.names.len(), "holdfast server refused a resubscribe");
                }
                job.fail(&self.shared, error, true);
                self.send_next_resume(session);
            }
            // Tied to no call (id 0: a timeout, a slow-consumer cut, …): the server closes
            // next, and this is why.
            None => {
                tracing::debug!(%error, id, "holdfast server error");
                session.fatal_error = Some(error);
            }
        }
    }

    /// An answer whose id awaits a different kind of answer, or nothing: put back what was
    /// taken and log (a server bug; the caller's timeout still applies).
    fn unmatched(&mut self, session: &mut Session, id: u64, kind: Kind, taken: Option<Pending>) {
        if let Some(pending) = taken {
            session.pending.insert(id, pending);
        }
        tracing::debug!(id, ?kind, "holdfast answer matches nothing awaiting it");
    }

    /// Hands a push to the stream, a gap report first when its topic skipped numbers; drops it
    /// (counted, reported as a gap later) when the stream is full.
    fn deliver(&mut self, push: Push) {
        let counters = &self.shared.counters;
        let mut topics = self.shared.topics();
        if topics.awaiting(&push.topic) {
            Counters::bump(&counters.pushes_awaiting_resume);
            return;
        }
        let gap = topics.gap_before(&push.topic, push.seq);
        let items = 1 + usize::from(gap.is_some());
        match self.pushes.try_reserve_many(items) {
            Ok(mut permits) => {
                if let Some(gap) = gap {
                    if let Some(permit) = permits.next() {
                        permit.send(Incoming::Gap(gap));
                        Counters::bump(&counters.gaps_reported);
                    }
                }
                topics.delivered(&push.topic, push.seq);
                if let Some(permit) = permits.next() {
                    permit.send(Incoming::Push(push));
                    Counters::bump(&counters.pushes_delivered);
                }
            }
            Err(TrySendError::Full(())) => {
                topics.dropped(&push.topic, push.seq);
                Counters::bump(&counters.pushes_dropped);
            }
            // Nobody reads pushes any more: keep the numbers current and move on.
            Err(TrySendError::Closed(())) => topics.delivered(&push.topic, push.seq),
        }
    }
}

impl Inbound {
    /// The kind of frame this came from.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Inbound::Welcome(_) => Kind::Welcome,
            Inbound::Ping => Kind::Ping,
            Inbound::Pong => Kind::Pong,
            Inbound::Response(_) => Kind::Response,
            Inbound::Push(_) => Kind::Push,
            Inbound::Ack(_) => Kind::Ack,
            Inbound::Error(_) => Kind::Error,
            Inbound::Goodbye { .. } => Kind::Goodbye,
            Inbound::Unexpected(kind) => *kind,
        }
    }
}
