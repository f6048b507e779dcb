//! What the client tells its user about the connection: the session [`Welcome`] opened
//! ([`SessionInfo`]), where the connection stands ([`ConnectionState`]) and running counts
//! ([`Stats`]).
//!
//! [`Welcome`]: holdfast_protocol::payload::Welcome

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::Error;

/// The session a Welcome opened, with the limits the server put in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The server's id for this session (opaque; changes on every connection).
    pub session_id: u64,
    /// Heartbeat interval in force: the client sends a Ping after this much silence.
    pub heartbeat_ms: u32,
    /// Silence after which the server closes the session. The client treats the same silence
    /// from the server as a dead connection and reconnects.
    pub heartbeat_timeout_ms: u32,
    /// Largest frame the server accepts.
    pub max_frame_bytes: u32,
    /// Requests the server lets this session have unanswered; the client never sends more.
    pub max_inflight_requests: u32,
}

/// Where the connection stands. Watch it with
/// [`Client::watch_state`](crate::Client::watch_state).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ConnectionState {
    /// A reconnect attempt is under way (the first attempt after a loss is 1).
    Connecting {
        /// Attempts since the connection was lost, this one included.
        attempt: u32,
        /// Why the client is reconnecting: the loss, or the last attempt's failure.
        cause: Error,
    },
    /// A session is open.
    Connected(SessionInfo),
    /// The connection was lost; the next attempt starts after `retry_in`.
    Disconnected {
        /// Why the connection was lost (or why the last attempt failed).
        cause: Error,
        /// Delay before the next attempt: a Goodbye's `reconnect_after_ms`, else backoff.
        retry_in: Duration,
    },
    /// The client is done: closed by its user (`cause` is `None`), or it gave up
    /// reconnecting (a permanent error, or `reconnect_max_attempts` reached).
    Closed {
        /// Why it gave up, if it did.
        cause: Option<Error>,
    },
}

impl ConnectionState {
    /// The open session, if there is one.
    pub fn session(&self) -> Option<SessionInfo> {
        match self {
            ConnectionState::Connected(info) => Some(*info),
            _ => None,
        }
    }

    /// True once the client is closed for good.
    pub fn is_closed(&self) -> bool {
        matches!(self, ConnectionState::Closed { .. })
    }
}

/// Running counts since the client was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Sessions opened (Welcomes received), the first one included.
    pub sessions_opened: u64,
    /// Goodbyes received from the server.
    pub goodbyes_received: u64,
    /// Pushes handed to the push stream.
    pub pushes_delivered: u64,
    /// Pushes dropped because the push stream was full (see
    /// [`ClientConfig::push_buffer_max_items`](crate::ClientConfig::push_buffer_max_items)).
    pub pushes_dropped: u64,
    /// Gaps reported on the push stream.
    pub gaps_reported: u64,
    /// Resubscribes after a reconnect that the server refused.
    pub resubscribe_failures: u64,
    /// SubscribeResumes refused with `unknown_kind` by a server that predates resume (kind
    /// 15); from then on this client subscribes with plain Subscribe, and what it missed while
    /// away shows up as a [`Gap`](crate::Gap) before the next push of each topic.
    pub resume_fallbacks: u64,
    /// Pushes dropped because they arrived while their topic's resume was asked again (the
    /// server answered it `epoch = 0`): the answer replays them or reports the gap.
    pub pushes_awaiting_resume: u64,
}

/// The shared counters behind [`Stats`], written by the connection task.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub sessions_opened: AtomicU64,
    pub goodbyes_received: AtomicU64,
    pub pushes_delivered: AtomicU64,
    pub pushes_dropped: AtomicU64,
    pub gaps_reported: AtomicU64,
    pub resubscribe_failures: AtomicU64,
    pub resume_fallbacks: AtomicU64,
    pub pushes_awaiting_resume: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            sessions_opened: read(&self.sessions_opened),
            goodbyes_received: read(&self.goodbyes_received),
            pushes_delivered: read(&self.pushes_delivered),
            pushes_dropped: read(&self.pushes_dropped),
            gaps_reported: read(&self.gaps_reported),
            resubscribe_failures: read(&self.resubscribe_failures),
            resume_fallbacks: read(&self.resume_fallbacks),
            pushes_awaiting_resume: read(&self.pushes_awaiting_resume),
        }
    }
}
