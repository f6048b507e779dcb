//! `POST /publish`: the backend's way in. JSON body:
//! `{"target": "topic", "topic": "news", "payload_base64": "..."}` (or `"payload"` for UTF-8
//! text); targets `topic`, `broadcast`, `conn` (with `conn_id`), `client` (with `client_id`).
//! With `publish_secret` set, `Authorization: Bearer <secret>` is required (compared in constant
//! time). The publish goes to the shard that owns its target, which answers: 202 `{"seq": N}`
//! for topic and broadcast, 200 `{"delivered": N}` for connection and client, 404 for a stale
//! or unknown connection id or a client with no session.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::http::{Request, Response};
use super::AdminState;
use crate::conn::ConnId;
use crate::push::{owner_shard, valid_topic, Publish, PublishOutcome, Target, BROADCAST_TOPIC};
use crate::shard::ShardMsg;

/// How long a publish waits for the owning shard's inbox and its answer.
pub const ADMIN_PUBLISH_TIMEOUT_MS: u64 = 2_000;
/// Bytes a Push frame adds around the payload and topic (header, archive fields).
pub const PUSH_FRAME_OVERHEAD_BYTES: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    target: String,
    topic: Option<String>,
    conn_id: Option<u64>,
    client_id: Option<String>,
    payload: Option<String>,
    payload_base64: Option<String>,
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
    let body: PublishBody = match serde_json::from_slice(&request.body) {
        Ok(body) => body,
        Err(e) => return error(400, &format!("body is not a publish request: {e}")),
    };
    let payload = match (&body.payload, &body.payload_base64) {
        (Some(text), None) => Bytes::from(text.clone().into_bytes()),
        (None, Some(encoded)) => match base64::engine::general_purpose::STANDARD.decode(encoded) {
            Ok(bytes) => Bytes::from(bytes),
            Err(_) => return error(400, "payload_base64 is not valid base64"),
        },
        (None, None) => Bytes::new(),
        (Some(_), Some(_)) => return error(400, "give payload or payload_base64, not both"),
    };
    let topic_len = body.topic.as_ref().map_or(0, String::len);
    if payload.len() + topic_len + PUSH_FRAME_OVERHEAD_BYTES > state.max_frame_bytes as usize {
        return error(413, "payload too large for max_frame_bytes");
    }
    let shards = state.inboxes.len();
    let (target, shard) = match body.target.as_str() {
        "topic" => match body.topic {
            Some(topic) if valid_topic(&topic) => {
                let shard = owner_shard(&topic, shards);
                (Target::Topic(topic), shard)
            }
            _ => {
                return error(
                    400,
                    "target topic needs \"topic\": 1..=128 bytes, not \"*\"",
                )
            }
        },
        "broadcast" => (Target::Broadcast, owner_shard(BROADCAST_TOPIC, shards)),
        "conn" => match body.conn_id.map(ConnId) {
            Some(id) if id.shard() < shards => (Target::Conn(id), id.shard()),
            Some(_) => return error(404, "no such connection"),
            None => return error(400, "target conn needs \"conn_id\""),
        },
        "client" => match body.client_id {
            Some(client) if !client.is_empty() => {
                let shard = owner_shard(&client, shards);
                (Target::Client(client), shard)
            }
            _ => return error(400, "target client needs \"client_id\""),
        },
        _ => return error(400, "unknown target: use topic, broadcast, conn or client"),
    };
    let (reply_tx, reply_rx) = flume::bounded(1);
    let timeout = Duration::from_millis(ADMIN_PUBLISH_TIMEOUT_MS);
    let message = ShardMsg::Publish(Publish {
        target,
        payload,
        reply: Some(reply_tx),
    });
    if state.inboxes[shard].send_timeout(message, timeout).is_err() {
        return error(503, "the owning shard did not take the publish in time");
    }
    match reply_rx.recv_timeout(timeout) {
        Ok(PublishOutcome::Sequenced { seq }) => json(202, serde_json::json!({ "seq": seq })),
        Ok(PublishOutcome::Delivered { connections }) => {
            json(200, serde_json::json!({ "delivered": connections }))
        }
        Ok(PublishOutcome::NoSuchTarget) => {
            error(404, "no such connection or client (stale id or no session)")
        }
        Err(_) => error(503, "the owning shard did not answer in time"),
    }
}
