//! Frames that feed push and events: Subscribe / Unsubscribe (answered with Ack) and Event
//! (offered to the shard's event pipeline; Ack only once accepted).

use bytes::Bytes;
use holdfast_protocol::payload::{EventView, SubscribeResumeView, TopicsView};
use holdfast_protocol::{ErrorCode, Kind};

use super::{queue_error, SessionCx, Verdict};
use crate::conn::{Conn, ConnFlags, ConnId, ConnKey};
use crate::events::sink::Offer;
use crate::events::OwnedEvent;
use crate::mesh::ShardMsg;
use crate::mesh::{owner_shard, valid_topic, BROADCAST_TOPIC};
use crate::push::publish_answer::{PublishWait, WaitRefused};
use crate::push::resume::{PendingResume, RESUME_REPLY_TIMEOUT_MS};

/// Queues an Ack for frame `id`.
pub(crate) fn queue_ack(conn: &mut Conn, cx: &mut SessionCx<'_>, id: u64) {
    cx.queue_empty(conn, Kind::Ack, id);
}

/// Subscribe or Unsubscribe: all of the topics or none. A bad name anywhere in the list, or a
/// Subscribe that would pass max_topics_per_session, gets an Error and changes nothing.
pub(crate) fn on_topics(
    conn: &mut Conn,
    cx: &mut SessionCx<'_>,
    id: u64,
    topics: &TopicsView,
    subscribe: bool,
) -> Verdict {
    let key = ConnKey {
        slot: cx.slot,
        generation: conn.generation,
    };
    let names: Vec<&str> = topics.topics.iter().map(|topic| &*topic.name).collect();
    if !names.iter().all(|name| valid_topic(name)) {
        let reason = "topic names are 1..=128 bytes and not \"*\"; no topic was changed";
        queue_error(conn, cx, ErrorCode::LimitExceeded, id, reason);
        return Verdict::Continue;
    }
    if subscribe {
        let max = cx.push.max_topics_per_session;
        if cx.push.topics.subscribe_all(key, &names, max).is_err() {
            let reason = "too many topics for one session; no topic was subscribed";
            queue_error(conn, cx, ErrorCode::LimitExceeded, id, reason);
            return Verdict::Continue;
        }
    } else {
        for name in names {
            cx.push.topics.unsubscribe(key, name);
        }
    }
    queue_ack(conn, cx, id);
    Verdict::Continue
}

/// SubscribeResume: subscribes to every topic (all or none, like Subscribe; `"*"` names the
/// broadcasts, which every session gets anyway) and asks each topic's owner shard for what the
/// session missed. The Ack, with one result per topic, and the replayed Pushes follow once
/// every owner has answered (see push::resume). One SubscribeResume at a time per session.
pub(crate) fn on_subscribe_resume(
    conn: &mut Conn,
    cx: &mut SessionCx<'_>,
    id: u64,
    resume: &SubscribeResumeView,
) -> Verdict {
    let key = ConnKey {
        slot: cx.slot,
        generation: conn.generation,
    };
    let is_topic = |name: &str| valid_topic(name) || name == BROADCAST_TOPIC;
    if !resume.topics.iter().all(|topic| is_topic(&topic.name)) {
        let reason = "topic names are 1..=128 bytes (or \"*\" for broadcasts); nothing changed";
        queue_error(conn, cx, ErrorCode::LimitExceeded, id, reason);
        return Verdict::Continue;
    }
    if cx.push.resumes.is_pending(key) {
        let reason = "a SubscribeResume is still being answered; send the next after its Ack";
        queue_error(conn, cx, ErrorCode::LimitExceeded, id, reason);
        return Verdict::Continue;
    }
    let names: Vec<&str> = resume
        .topics
        .iter()
        .map(|topic| &*topic.name)
        .filter(|name| *name != BROADCAST_TOPIC)
        .collect();
    let max = cx.push.max_topics_per_session;
    if resume.topics.len() > max + 1 || cx.push.topics.subscribe_all(key, &names, max).is_err() {
        let reason = "too many topics for one session; no topic was subscribed";
        queue_error(conn, cx, ErrorCode::LimitExceeded, id, reason);
        return Verdict::Continue;
    }
    let conn_id = ConnId::new(cx.shard, cx.slot, conn.generation);
    for (index, topic) in resume.topics.iter().enumerate() {
        cx.push.outbox.push((
            owner_shard(&topic.name, cx.push.shards),
            ShardMsg::ResumeRequest {
                conn: conn_id,
                request_id: id,
                index,
                topic: (*topic.name).into(),
                epoch: topic.epoch.to_native(),
                last_seq: topic.last_seq.to_native(),
            },
        ));
    }
    let resumes_broadcasts = resume.topics.iter().any(|t| &*t.name == BROADCAST_TOPIC);
    let pending = PendingResume {
        generation: conn.generation,
        request_id: id,
        topics: resume.topics.iter().map(|t| (*t.name).into()).collect(),
        replies: resume.topics.iter().map(|_| None).collect(),
        deadline: cx.received_at + std::time::Duration::from_millis(RESUME_REPLY_TIMEOUT_MS),
        broadcast_live: resumes_broadcasts
            .then(|| {
                let unseen = conn.flags.has(ConnFlags::BROADCAST_UNSEEN);
                conn.flags.clear(ConnFlags::BROADCAST_UNSEEN);
                cx.push.broadcasts.take(key, unseen)
            })
            .flatten(),
    };
    if pending.complete() {
        // No topic: nothing to wait for.
        queue_frame_ack(conn, cx, id, &[]);
    } else {
        cx.push.resumes.start(key, pending);
    }
    Verdict::Continue
}

/// Queues the Ack of a SubscribeResume: one result per topic, in request order.
pub(crate) fn queue_frame_ack(
    conn: &mut Conn,
    cx: &mut SessionCx<'_>,
    id: u64,
    topics: &[holdfast_protocol::payload::TopicResumed],
) {
    cx.queue_frame(
        conn,
        id,
        &holdfast_protocol::payload::SubscribeAck { topics },
    );
}

pub(crate) fn on_event(
    conn: &mut Conn,
    cx: &mut SessionCx<'_>,
    id: u64,
    ack_requested: bool,
    event: &EventView,
) -> Verdict {
    let topic: &str = &event.topic;
    if topic.is_empty() || topic.len() > crate::mesh::MAX_TOPIC_BYTES {
        queue_error(
            conn,
            cx,
            ErrorCode::LimitExceeded,
            id,
            "event topic must be 1..=128 bytes",
        );
        return Verdict::Continue;
    }
    let owned = OwnedEvent {
        conn: ConnId::new(cx.shard, cx.slot, conn.generation),
        topic: topic.into(),
        payload: Bytes::copy_from_slice(&event.payload),
        received_at: cx.received_at,
    };
    let ack_id = ack_requested.then_some(id);
    match cx.push.events.offer(owned, ack_id) {
        Offer::Accepted => {
            cx.counters.events_accepted += 1;
            if ack_requested {
                queue_ack(conn, cx, id);
            }
        }
        offer @ (Offer::Dropped | Offer::Refused) => {
            // Counted always, told only to a client that asked for an Ack (an Error per
            // unacked event would flood a client that streams).
            cx.counters.events_dropped += 1;
            if ack_requested {
                let reason = match offer {
                    Offer::Dropped => "event dropped: pipeline full",
                    _ => "event refused: pipeline full or closed",
                };
                queue_error(conn, cx, ErrorCode::LimitExceeded, id, reason);
            }
        }
        Offer::Parked => {
            cx.counters.events_parked += 1;
            conn.flags.set(ConnFlags::READ_PAUSED);
        }
    }
    Verdict::Continue
}

/// A session said who it is: record it here and in the client directory's owner shard.
pub(crate) fn register_client(conn: &Conn, cx: &mut SessionCx<'_>, client_id: &str) {
    if client_id.is_empty() {
        return;
    }
    let id = ConnId::new(cx.shard, cx.slot, conn.generation);
    cx.push
        .client_ids
        .insert(cx.slot, (conn.generation, client_id.into()));
    let owner = owner_shard(client_id, cx.push.shards);
    cx.push.outbox.push((
        owner,
        ShardMsg::ClientRegister {
            client_id: client_id.into(),
            conn: id,
        },
    ));
}

/// The request method a publisher session publishes with (body: the JSON of `POST /publish`).
pub(crate) const PUBLISH_METHOD: &str = "publish";

/// `publish` from a session: allowed when auth is on and the session's verified client id
/// carries the publisher prefix. Handed to the owning shard with a reply channel; the session
/// is answered once the owner (in JetStream mode, the stream) says what became of it
/// (push::publish_answer), `{"accepted":true,"seq":N}` or an Error.
pub(crate) fn on_publish_request(
    conn: &mut Conn,
    cx: &mut SessionCx<'_>,
    id: u64,
    body: &[u8],
) -> Verdict {
    let is_publisher = cx.limits.auth_secret.is_some()
        && cx
            .push
            .client_ids
            .get(&cx.slot)
            .is_some_and(|(generation, client_id)| {
                *generation == conn.generation
                    && client_id.starts_with(&cx.limits.publisher_client_id_prefix)
            });
    if !is_publisher {
        queue_error(
            conn,
            cx,
            ErrorCode::AuthFailed,
            id,
            "publish needs a token for a publisher client id",
        );
        return Verdict::Continue;
    }
    let parsed = match crate::push::request::parse(body, cx.push.shards, cx.limits.max_frame_bytes)
    {
        Ok(parsed) => parsed,
        Err(e) => {
            queue_error(conn, cx, ErrorCode::HandlerFailed, id, &e.message);
            return Verdict::Continue;
        }
    };
    let (reply, outcome) = flume::bounded(1);
    let wait = PublishWait {
        key: ConnKey {
            slot: cx.slot,
            generation: conn.generation,
        },
        request_id: id,
        outcome,
    };
    match cx
        .push
        .publish_waits
        .start(wait, cx.limits.max_inflight_requests)
    {
        Ok(()) => {}
        Err(WaitRefused::ConnectionFull) => {
            queue_error(
                conn,
                cx,
                ErrorCode::TooManyInflight,
                id,
                "too many publishes waiting for their answer on this connection (max_inflight_requests); nothing was taken: read answers first",
            );
            return Verdict::Continue;
        }
        Err(WaitRefused::ShardFull) => {
            queue_error(
                conn,
                cx,
                ErrorCode::Unavailable,
                id,
                "too many publishes waiting for their outcome on this shard; nothing was taken, retry",
            );
            return Verdict::Continue;
        }
    }
    let publish = crate::mesh::Publish {
        target: parsed.target,
        payload: parsed.payload,
        msg_id: parsed.msg_id,
        reply: Some(reply),
    };
    cx.push
        .outbox
        .push((parsed.shard, ShardMsg::Publish(publish)));
    Verdict::Continue
}
