//! The session layer: what each frame means in each state (docs/PROTOCOL.md, "Session state
//! machine"). It reads validated frames and writes replies into the connection's outbound
//! queue; it knows nothing about io_uring. It returns a [`Verdict`]; the shard acts on it.

pub(crate) mod auth;
pub(crate) mod push;

use std::ops::ControlFlow;
use std::time::Instant;

use bytes::Bytes;
use holdfast_protocol::payload::{ErrorBody, Goodbye, Welcome};
use holdfast_protocol::{encode_frame, encode_raw, EncodeFrame, ErrorCode, Frame, Kind, Payload};

use crate::conn::{Conn, ConnFlags, ConnId, SessionState};
use crate::handler::{Handler, Reply, Session};
use crate::metrics::{CloseReason, ShardCounters};
use crate::outbound::{Outbound, OutboundPool};

/// What the session layer needs from the config, in the units it uses.
#[derive(Clone, Debug)]
pub(crate) struct SessionLimits {
    pub max_frame_bytes: u32,
    pub max_outbound_bytes: usize,
    pub max_inflight_requests: u16,
    pub heartbeat_interval_ms: u32,
    pub heartbeat_min_interval_ms: u32,
    pub heartbeat_timeout_ms: u32,
    /// The shard's timer tick: per-session heartbeat intervals are kept in ticks.
    pub timer_tick_ms: u32,
    pub auth_secret: Option<Vec<u8>>,
    /// Sessions whose (token-verified) client id starts with this may publish.
    pub publisher_client_id_prefix: String,
}

/// Everything a frame may touch besides its own connection.
pub(crate) struct SessionCx<'a> {
    pub limits: &'a SessionLimits,
    pub handler: &'a mut dyn Handler,
    pub counters: &'a mut ShardCounters,
    pub pool: &'a mut OutboundPool,
    pub shard: usize,
    pub slot: u32,
    /// When the bytes being handled were received.
    pub received_at: Instant,
    /// Topics, client directory and the event pipeline of this shard.
    pub push: &'a mut crate::push::state::PushState,
}

/// The session layer's decision after a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Continue,
    /// Flush what is queued (an Error or Goodbye, usually), then close.
    Close(CloseReason),
}

impl Verdict {
    pub(crate) fn flow(self) -> ControlFlow<()> {
        match self {
            Verdict::Continue => ControlFlow::Continue(()),
            Verdict::Close(_) => ControlFlow::Break(()),
        }
    }
}

/// The connection's outbound queue, taken from the pool if it has none.
pub(crate) fn outbound<'c>(
    conn: &'c mut Conn,
    pool: &mut OutboundPool,
    received_at: Instant,
) -> &'c mut Outbound {
    let out = conn.outbound.get_or_insert_with(|| pool.take());
    out.queued_since.get_or_insert(received_at);
    out
}

impl SessionCx<'_> {
    /// Appends one frame to the connection's outbound queue (taken from the pool if it has
    /// none) and counts it: every frame the server sends goes through here.
    fn queue_with(&mut self, conn: &mut Conn, append: impl FnOnce(&mut Outbound, u32)) {
        let out = outbound(conn, self.pool, self.received_at);
        append(out, self.limits.max_frame_bytes);
        self.counters.frames_out += 1;
    }

    /// Queues a frame with an rkyv payload; its kind comes from the payload type. Server-built
    /// frames are bounded well below any `max_frame_bytes` config validation allows (Error
    /// reasons are cut to MAX_ERROR_REASON_BYTES), so encoding them cannot fail.
    pub(crate) fn queue_frame<P: EncodeFrame>(&mut self, conn: &mut Conn, id: u64, payload: &P) {
        self.queue_with(conn, |out, max_frame_bytes| {
            encode_frame(&mut out.queued, 0, id, payload, max_frame_bytes)
                .expect("server-built frames fit max_frame_bytes");
        });
    }

    /// Queues a frame with an empty payload (Ping, Pong, Ack).
    pub(crate) fn queue_empty(&mut self, conn: &mut Conn, kind: Kind, id: u64) {
        self.queue_with(conn, |out, max_frame_bytes| {
            encode_raw(&mut out.queued, kind, 0, id, &[], max_frame_bytes)
                .expect("an empty frame is a header");
        });
    }

    /// Queues a whole frame by copy (an Echo reply is the request's own bytes).
    pub(crate) fn queue_copy(&mut self, conn: &mut Conn, frame: &[u8]) {
        self.queue_with(conn, |out, _| out.queued.extend_from_slice(frame));
    }

    /// Queues a whole frame by reference (a push encoded once for every subscriber).
    pub(crate) fn queue_shared(&mut self, conn: &mut Conn, frame: Bytes) {
        self.queue_with(conn, |out, _| out.push_shared(frame));
    }
}

/// Cuts off a consumer whose outbound queue would pass `max_outbound_bytes`: what was queued
/// but not yet handed to the kernel is dropped (it could never be read in time), the drop is
/// counted, and an Error(slow_consumer) saying `reason` is queued. The caller closes with the
/// returned verdict.
pub(crate) fn cut_slow_consumer(conn: &mut Conn, cx: &mut SessionCx<'_>, reason: &str) -> Verdict {
    if let Some(out) = conn.outbound.as_mut() {
        out.discard_queued();
    }
    cx.counters.slow_consumers += 1;
    queue_error(conn, cx, ErrorCode::SlowConsumer, 0, reason);
    Verdict::Close(CloseReason::SlowConsumer)
}

/// Longest reason an Error frame carries; longer ones (some quote client input, e.g. a JSON
/// parse error) are cut at a character boundary.
pub(crate) const MAX_ERROR_REASON_BYTES: usize = 256;

/// Queues an Error frame. Never fails: the reason is cut to MAX_ERROR_REASON_BYTES, so the frame
/// fits in any max_frame_bytes config validation allows (>= 512).
pub(crate) fn queue_error(
    conn: &mut Conn,
    cx: &mut SessionCx<'_>,
    code: ErrorCode,
    id: u64,
    reason: &str,
) {
    let mut end = reason.len().min(MAX_ERROR_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let payload = &ErrorBody {
        code: code as u16,
        reason: &reason[..end],
    };
    cx.queue_frame(conn, id, payload);
    cx.counters.error_sent(code);
}

/// Queues a Goodbye frame.
pub(crate) fn queue_goodbye(
    conn: &mut Conn,
    cx: &mut SessionCx<'_>,
    reason: &str,
    reconnect_after_ms: u32,
) {
    let payload = &Goodbye {
        reason,
        reconnect_after_ms,
    };
    cx.queue_frame(conn, 0, payload);
}

/// The server's heartbeat Ping (id 0, empty payload): the same 16 bytes for every session, so
/// encoded once per process and queued by reference. A `'static` slice, not a shared `Bytes`:
/// its clones touch no reference count the shards would bounce between their caches.
fn ping_frame() -> &'static [u8] {
    static PING_FRAME: std::sync::OnceLock<Box<[u8]>> = std::sync::OnceLock::new();
    PING_FRAME.get_or_init(|| {
        let mut frame = bytes::BytesMut::new();
        encode_raw(&mut frame, Kind::Ping, 0, 0, &[], u32::MAX)
            .expect("an empty frame is a header");
        frame.to_vec().into_boxed_slice()
    })
}

/// Queues a heartbeat Ping from the server: by reference to the one prebuilt frame, so a
/// session with nothing else queued sends it without encoding or copying.
pub(crate) fn queue_ping(conn: &mut Conn, cx: &mut SessionCx<'_>) {
    cx.queue_shared(conn, Bytes::from_static(ping_frame()));
    cx.counters.heartbeat_pings_sent += 1;
}

/// Sends Error and closes: the reply to a frame we cannot accept.
fn refuse(
    conn: &mut Conn,
    cx: &mut SessionCx<'_>,
    code: ErrorCode,
    id: u64,
    reason: &str,
) -> Verdict {
    queue_error(conn, cx, code, id, reason);
    Verdict::Close(CloseReason::ProtocolError)
}

/// Replies push back: once a session's queue holds this share of max_outbound_bytes, its
/// socket is not read until the queue drains to REPLY_RESUME_PERCENT, so TCP flow control slows
/// a client that writes requests faster than it reads answers (Redis and nginx do the same).
pub(crate) const REPLY_PAUSE_PERCENT: usize = 50;
/// Reading resumes once the queue is back under this share of max_outbound_bytes.
pub(crate) const REPLY_RESUME_PERCENT: usize = 25;

/// Whether a session paused for its replies may be read again.
pub(crate) fn replies_drained(conn: &Conn, limits: &SessionLimits) -> bool {
    let queued_bytes = conn.outbound.as_ref().map_or(0, |out| out.total_bytes());
    queued_bytes < limits.max_outbound_bytes * REPLY_RESUME_PERCENT / 100
}

/// After anything was queued: replies past REPLY_PAUSE_PERCENT of max_outbound_bytes pause
/// reading (push back); past max_outbound_bytes itself (one reply larger than the rest of the
/// room) the session is a slow consumer: it loses what was queued but not yet handed to the
/// kernel (counted), gets Error(slow consumer), and is closed.
fn check_outbound(conn: &mut Conn, cx: &mut SessionCx<'_>) -> Verdict {
    let queued_bytes = conn.outbound.as_ref().map_or(0, |out| out.total_bytes());
    if queued_bytes > cx.limits.max_outbound_bytes {
        return cut_slow_consumer(conn, cx, "outbound queue full: read your replies");
    }
    if queued_bytes >= cx.limits.max_outbound_bytes * REPLY_PAUSE_PERCENT / 100 {
        conn.flags
            .set(ConnFlags::READ_PAUSED | ConnFlags::REPLIES_PAUSED);
    }
    Verdict::Continue
}

/// Handles one complete frame from the peer.
pub(crate) fn on_frame(
    conn: &mut Conn,
    cx: &mut SessionCx<'_>,
    frame: Frame<'_>,
    now_tick: u32,
) -> Verdict {
    cx.counters.frames_in += 1;
    conn.last_activity_tick = now_tick;
    conn.flags.clear(ConnFlags::PINGED);
    let id = frame.header.id;
    let verdict = match (conn.state, frame.payload) {
        (SessionState::Closing, _) => return Verdict::Continue,
        (SessionState::Free, _) => unreachable!("frames are only decoded for live slots"),
        (SessionState::AwaitHello, Payload::Hello(hello)) => on_hello(conn, cx, id, hello),
        (SessionState::AwaitHello, _) => {
            refuse(conn, cx, ErrorCode::UnexpectedFrame, id, "send Hello first")
        }
        (SessionState::Open | SessionState::Draining, payload) => {
            on_open_frame(conn, cx, frame, payload)
        }
    };
    match verdict {
        Verdict::Continue => check_outbound(conn, cx),
        close => close,
    }
}

fn on_hello(
    conn: &mut Conn,
    cx: &mut SessionCx<'_>,
    id: u64,
    hello: Option<&holdfast_protocol::payload::HelloView>,
) -> Verdict {
    let admitted = match auth::admit(hello, cx.limits.auth_secret.as_deref(), auth::now_unix_s()) {
        Ok(admitted) => admitted,
        Err((code, reason)) => return refuse(conn, cx, code, id, reason),
    };
    let limits = cx.limits;
    let heartbeat_ms = match admitted.requested_heartbeat_ms {
        0 => limits.heartbeat_interval_ms,
        asked => asked.clamp(
            limits.heartbeat_min_interval_ms,
            limits.heartbeat_interval_ms,
        ),
    };
    let payload = &Welcome {
        session_id: ConnId::new(cx.shard, cx.slot, conn.generation).0,
        heartbeat_ms,
        heartbeat_timeout_ms: limits.heartbeat_timeout_ms,
        max_frame_bytes: limits.max_frame_bytes,
        max_inflight_requests: u32::from(limits.max_inflight_requests),
    };
    cx.queue_frame(conn, id, payload);
    // The interval in force is the one Welcome announced (rounded up to whole ticks).
    let ticks = heartbeat_ms.div_ceil(limits.timer_tick_ms.max(1)).max(1);
    conn.heartbeat_interval_ticks = u16::try_from(ticks).unwrap_or(u16::MAX);
    cx.counters.sessions_opened += 1;
    conn.state = SessionState::Open;
    conn.flags.set(ConnFlags::BROADCAST_UNSEEN);
    if let Some(hello) = hello {
        push::register_client(conn, cx, &hello.client_id);
    }
    Verdict::Continue
}

fn on_open_frame(
    conn: &mut Conn,
    cx: &mut SessionCx<'_>,
    frame: Frame<'_>,
    payload: Payload<'_>,
) -> Verdict {
    let id = frame.header.id;
    match payload {
        Payload::Ping => {
            cx.queue_empty(conn, Kind::Pong, id);
            Verdict::Continue
        }
        Payload::Pong => Verdict::Continue,
        Payload::Echo(_) => {
            cx.queue_copy(conn, frame.bytes);
            Verdict::Continue
        }
        Payload::Request(request) => on_request(conn, cx, id, &request.method, &request.body),
        Payload::Goodbye(_) => Verdict::Close(CloseReason::PeerGoodbye),
        Payload::Error(_) => Verdict::Continue,
        Payload::Subscribe(topics) => push::on_topics(conn, cx, id, topics, true),
        Payload::Unsubscribe(topics) => push::on_topics(conn, cx, id, topics, false),
        Payload::SubscribeResume(resume) => push::on_subscribe_resume(conn, cx, id, resume),
        Payload::Event(event) => push::on_event(conn, cx, id, frame.header.ack_requested(), event),
        Payload::Hello(_) => refuse(
            conn,
            cx,
            ErrorCode::UnexpectedFrame,
            id,
            "session already open",
        ),
        Payload::Welcome(_)
        | Payload::Response(_)
        | Payload::Push(_)
        | Payload::Ack
        | Payload::SubscribeAck(_) => refuse(
            conn,
            cx,
            ErrorCode::UnexpectedFrame,
            id,
            "server-to-client frame kind sent by a client",
        ),
    }
}

fn on_request(
    conn: &mut Conn,
    cx: &mut SessionCx<'_>,
    id: u64,
    method: &str,
    body: &[u8],
) -> Verdict {
    cx.counters.requests += 1;
    if method == push::PUBLISH_METHOD {
        return push::on_publish_request(conn, cx, id, body);
    }
    if conn.inflight_requests >= cx.limits.max_inflight_requests {
        return refuse(
            conn,
            cx,
            ErrorCode::TooManyInflight,
            id,
            "too many requests in flight: read responses first",
        );
    }
    conn.inflight_requests += 1;
    let session = Session {
        id: ConnId::new(cx.shard, cx.slot, conn.generation),
    };
    let max_frame_bytes = cx.limits.max_frame_bytes;
    let out = outbound(conn, cx.pool, cx.received_at);
    let mut reply = Reply::new(&mut out.queued, id, max_frame_bytes);
    let result = cx.handler.call(session, method, body, &mut reply);
    let sent = reply.sent();
    match result {
        Ok(()) if sent => cx.counters.frames_out += 1,
        Ok(()) => queue_error(
            conn,
            cx,
            ErrorCode::HandlerFailed,
            id,
            "handler returned no response",
        ),
        Err(error) => queue_error(conn, cx, error.code, id, error.reason),
    }
    Verdict::Continue
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prebuilt_ping_is_one_valid_ping_frame_with_id_zero() {
        let frame = ping_frame();
        let mut encoded = bytes::BytesMut::new();
        encode_raw(&mut encoded, Kind::Ping, 0, 0, &[], u32::MAX).expect("a header");
        assert_eq!(
            frame,
            &encoded[..],
            "the bytes queue_empty would have encoded"
        );
        let mut frames = Vec::new();
        let fed = holdfast_protocol::Decoder::new(holdfast_protocol::MAX_FRAME_BYTES_DEFAULT).feed(
            frame,
            |frame| {
                frames.push((frame.header.id, matches!(frame.payload, Payload::Ping)));
                ControlFlow::Continue(())
            },
        );
        assert!(fed.is_ok(), "{fed:?}");
        assert_eq!(frames, vec![(0, true)]);
        assert!(
            std::ptr::eq(frame, ping_frame()),
            "encoded once, the same bytes for every session"
        );
    }
}
