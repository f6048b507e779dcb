//! `POST /publish`: the backend's way in. JSON body:
//! `{"target": "topic", "topic": "news", "payload_base64": "..."}` (or `"payload"` for UTF-8
//! text); targets `topic`, `broadcast`, `conn` (with `conn_id`), `client` (with `client_id`).
//! With `publish_secret` set, `Authorization: Bearer <secret>` is required (compared in constant
//! time). The publish goes to the shard that owns its target, which answers: 202 `{"seq": N}`
//! for topic and broadcast, 200 `{"delivered": N}` for connection and client, 404 for a stale
//! or unknown connection id or a client with no session, 503 with `Retry-After` from the
//! moment draining starts (nothing is accepted that the draining sessions would not get).

use std::time::Duration;

use subtle::ConstantTimeEq;

use super::http::{Request, Response};
use super::AdminState;
use crate::mesh::ShardMsg;
use crate::mesh::{Publish, PublishOutcome};
use crate::push::request::{parse, ParsedPublish};

/// How long a publish waits for the owning shard's inbox and its answer.
pub const ADMIN_PUBLISH_TIMEOUT_MS: u64 = 5_000;
const _: () = assert!(crate::config::JETSTREAM_PUBLISH_TIMEOUT_MAX_MS < ADMIN_PUBLISH_TIMEOUT_MS);
/// `Retry-After` on a publish refused because the server is draining, in seconds.
pub const PUBLISH_DRAINING_RETRY_AFTER_S: u32 = 1;

/// 503 with Retry-After: from drain start nothing is accepted that the draining sessions
/// would not get.
fn draining() -> Response {
    Response {
        retry_after_s: Some(PUBLISH_DRAINING_RETRY_AFTER_S),
        ..error(
            503,
            "the server is draining: publish to another server or retry after restart",
        )
    }
}

fn json(status: u16, value: serde_json::Value) -> Response {
    Response {
        content_type: "application/json",
        ..Response::text(status, format!("{value}\n"))
    }
}

fn error(status: u16, message: &str) -> Response {
    json(status, serde_json::json!({ "error": message }))
}

fn authorized(state: &AdminState, request: &Request) -> bool {
    let Some(secret) = &state.publish_secret else {
        return true;
    };
    let presented = request
        .authorization
        .as_deref()
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("");
    presented.as_bytes().ct_eq(secret.as_bytes()).into()
}

pub fn publish(state: &AdminState, request: &Request) -> Response {
    if !authorized(state, request) {
        return error(401, "publish needs Authorization: Bearer <publish_secret>");
    }
    if state.drain.is_draining() {
        return draining();
    }
    let ParsedPublish {
        target,
        payload,
        shard,
        msg_id,
    } = match parse(&request.body, state.mesh.shards(), state.max_frame_bytes) {
        Ok(parsed) => parsed,
        Err(e) => return error(e.status, &e.message),
    };
    let (reply_tx, reply_rx) = flume::bounded(1);
    let timeout = Duration::from_millis(ADMIN_PUBLISH_TIMEOUT_MS);
    let message = ShardMsg::Publish(Publish {
        target,
        payload,
        msg_id,
        reply: Some(reply_tx),
    });
    if state.mesh.send_timeout(shard, message, timeout).is_err() {
        return error(503, "the owning shard did not take the publish in time");
    }
    match reply_rx.recv_timeout(timeout) {
        Ok(PublishOutcome::Sequenced { seq }) => json(202, serde_json::json!({ "seq": seq })),
        Ok(PublishOutcome::Delivered { connections }) => {
            json(200, serde_json::json!({ "delivered": connections }))
        }
        Ok(PublishOutcome::Draining) => draining(),
        Ok(PublishOutcome::Unavailable) => Response {
            retry_after_s: Some(PUBLISH_DRAINING_RETRY_AFTER_S),
            ..error(
                503,
                "the cluster stream did not confirm the publish within jetstream_publish_timeout_ms (NATS unreachable or busy); retry (with the same msg_id it is stored once)",
            )
        },
        Ok(PublishOutcome::NoSuchTarget) => {
            error(404, "no such connection or client (stale id or no session)")
        }
        // The publish is queued in the shard's inbox: it may still go out (and take its seq).
        Err(_) => error(
            503,
            "the owning shard did not answer in time; the publish may still be delivered",
        ),
    }
}
