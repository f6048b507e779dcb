//! A publish request as JSON, the same for `POST /publish` and for the `publish` method of a
//! publisher session: `{"target": "topic", "topic": "news", "payload_base64": "..."}` (or
//! `"payload"` for UTF-8 text); targets `topic`, `broadcast`, `conn` (with `conn_id`),
//! `client` (with `client_id`). An optional `"msg_id"` (1..=PUBLISH_MSG_ID_MAX_BYTES
//! printable ASCII bytes) names the publish for retries: in JetStream mode a publish retried
//! with the same `msg_id` within the stream's duplicate window is stored once.

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;

use crate::conn::ConnId;
use crate::mesh::{valid_topic, Target};

/// Bytes a Push frame adds around the payload and topic (header, archive fields).
pub(crate) const PUSH_FRAME_OVERHEAD_BYTES: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    target: String,
    topic: Option<String>,
    conn_id: Option<u64>,
    client_id: Option<String>,
    payload: Option<String>,
    payload_base64: Option<String>,
    msg_id: Option<String>,
}

/// Longest publisher-chosen `msg_id`.
pub(crate) const PUBLISH_MSG_ID_MAX_BYTES: usize = 128;

/// Why a publish request was refused; `status` is the HTTP status it maps to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RequestError {
    pub status: u16,
    pub message: String,
}

fn refuse(status: u16, message: &str) -> RequestError {
    RequestError {
        status,
        message: message.to_owned(),
    }
}

/// A checked publish: what, to whom, and which shard to hand it to.
#[derive(Debug)]
pub(crate) struct ParsedPublish {
    pub target: Target,
    pub payload: Bytes,
    pub shard: usize,
    /// The publisher's name for this publish, for retries (JetStream mode).
    pub msg_id: Option<Box<str>>,
}

/// Parses and checks a publish request against the frame limit and shard count.
pub(crate) fn parse(
    body: &[u8],
    shards: usize,
    max_frame_bytes: u32,
) -> Result<ParsedPublish, RequestError> {
    let body: PublishBody = serde_json::from_slice(body)
        .map_err(|e| refuse(400, &format!("body is not a publish request: {e}")))?;
    let payload = match (&body.payload, &body.payload_base64) {
        (Some(text), None) => Bytes::from(text.clone().into_bytes()),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map(Bytes::from)
            .map_err(|_| refuse(400, "payload_base64 is not valid base64"))?,
        (None, None) => Bytes::new(),
        (Some(_), Some(_)) => return Err(refuse(400, "give payload or payload_base64, not both")),
    };
    let msg_id = match body.msg_id {
        Some(id)
            if !id.is_empty()
                && id.len() <= PUBLISH_MSG_ID_MAX_BYTES
                && id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Some(id.into_boxed_str())
        }
        Some(_) => {
            return Err(refuse(
                400,
                "msg_id must be 1..=128 printable ASCII bytes without spaces",
            ))
        }
        None => None,
    };
    let topic_len = body.topic.as_ref().map_or(0, String::len);
    if payload.len() + topic_len + PUSH_FRAME_OVERHEAD_BYTES > max_frame_bytes as usize {
        return Err(refuse(413, "payload too large for max_frame_bytes"));
    }
    let target = match body.target.as_str() {
        "topic" => match body.topic {
            Some(topic) if valid_topic(&topic) => Target::Topic(topic),
            _ => {
                return Err(refuse(
                    400,
                    "target topic needs \"topic\": 1..=128 bytes, not \"*\"",
                ))
            }
        },
        "broadcast" => Target::Broadcast,
        "conn" => match body.conn_id.map(ConnId) {
            Some(id) if id.shard() < shards => Target::Conn(id),
            Some(_) => return Err(refuse(404, "no such connection")),
            None => return Err(refuse(400, "target conn needs \"conn_id\"")),
        },
        "client" => match body.client_id {
            Some(client) if !client.is_empty() => Target::Client(client),
            _ => return Err(refuse(400, "target client needs \"client_id\"")),
        },
        _ => {
            return Err(refuse(
                400,
                "unknown target: use topic, broadcast, conn or client",
            ))
        }
    };
    Ok(ParsedPublish {
        shard: target.owner_shard(shards),
        target,
        payload,
        msg_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::owner_shard;

    #[test]
    fn topic_publish_goes_to_the_topics_owner() {
        let parsed = parse(
            br#"{"target":"topic","topic":"news","payload":"x"}"#,
            4,
            65_536,
        )
        .unwrap();
        assert_eq!(parsed.target, Target::Topic("news".into()));
        assert_eq!(parsed.shard, owner_shard("news", 4));
        assert_eq!(&parsed.payload[..], b"x");
        assert_eq!(parsed.msg_id, None);
    }

    #[test]
    fn a_msg_id_is_kept_and_a_bad_one_refused() {
        let parsed = parse(
            br#"{"target":"topic","topic":"news","payload":"x","msg_id":"order-17"}"#,
            4,
            65_536,
        )
        .unwrap();
        assert_eq!(parsed.msg_id.as_deref(), Some("order-17"));
        let long = "m".repeat(PUBLISH_MSG_ID_MAX_BYTES + 1);
        for bad in ["", "has space", long.as_str()] {
            let body = format!(r#"{{"target":"broadcast","msg_id":"{bad}"}}"#);
            assert_eq!(
                parse(body.as_bytes(), 1, 65_536).unwrap_err().status,
                400,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_requests_map_to_http_statuses() {
        assert_eq!(parse(b"{}", 1, 65_536).unwrap_err().status, 400);
        assert_eq!(
            parse(
                br#"{"target":"conn","conn_id":72057594037927936}"#,
                1,
                65_536
            )
            .unwrap_err()
            .status,
            404
        );
        let big = format!(
            r#"{{"target":"broadcast","payload":"{}"}}"#,
            "x".repeat(100)
        );
        assert_eq!(parse(big.as_bytes(), 1, 128).unwrap_err().status, 413);
    }
}
