//! The `publish` request of a publisher session (a session whose client id starts with the
//! server's `publisher_client_id_prefix` and whose token the server checked): where it goes,
//! how it is written (the JSON of the server's `POST /publish`, payload in base64) and what the
//! server answers once it knows the outcome (docs/PROTOCOL.md, "Requests, events, pushes").

use base64::Engine;
use bytes::Bytes;

use crate::error::Error;

/// Where a publish goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishTarget {
    /// Every subscriber of a topic; numbered in the topic's sequence.
    Topic(String),
    /// Every session of the server (or of the cluster); numbered in the broadcast sequence.
    Broadcast,
    /// One connection, by the id its Welcome carried.
    Connection(u64),
    /// Every session of one client id.
    Client(String),
}

/// What the server said of an accepted publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    /// A topic or broadcast publish took this sequence number (in JetStream cluster mode: the
    /// stream stored it).
    Sequenced {
        /// The number subscribers see on the push.
        seq: u64,
    },
    /// A connection or client publish was queued to this many connections.
    Delivered {
        /// Connections it was queued to.
        connections: u64,
    },
}

/// The request method a publisher session publishes with.
pub(crate) const PUBLISH_METHOD: &str = "publish";

/// Longest `msg_id` the server takes (its `PUBLISH_MSG_ID_MAX_BYTES`).
pub const PUBLISH_MSG_ID_MAX_BYTES: usize = 128;

/// The request body: `{"target": ..., "payload_base64": ..., "msg_id": ...}`.
pub(crate) fn encode(
    target: &PublishTarget,
    payload: &[u8],
    msg_id: Option<&str>,
) -> Result<Bytes, Error> {
    let mut body = serde_json::Map::new();
    let (kind, key, value) = match target {
        PublishTarget::Topic(topic) => ("topic", Some("topic"), Some(topic.as_str().into())),
        PublishTarget::Broadcast => ("broadcast", None, None),
        PublishTarget::Connection(id) => ("conn", Some("conn_id"), Some((*id).into())),
        PublishTarget::Client(id) => ("client", Some("client_id"), Some(id.as_str().into())),
    };
    body.insert("target".into(), kind.into());
    if let (Some(key), Some(value)) = (key, value) {
        body.insert(key.into(), value);
    }
    body.insert(
        "payload_base64".into(),
        base64::engine::general_purpose::STANDARD
            .encode(payload)
            .into(),
    );
    if let Some(msg_id) = msg_id {
        let printable = msg_id.bytes().all(|b| b.is_ascii_graphic());
        if msg_id.is_empty() || msg_id.len() > PUBLISH_MSG_ID_MAX_BYTES || !printable {
            return Err(Error::Invalid(format!(
                "msg_id must be 1..={PUBLISH_MSG_ID_MAX_BYTES} printable ASCII bytes"
            )));
        }
        body.insert("msg_id".into(), msg_id.into());
    }
    Ok(Bytes::from(serde_json::Value::Object(body).to_string()))
}

/// The server's answer to an accepted publish: `{"accepted":true,"seq":N}` or
/// `{"accepted":true,"delivered":N}`.
pub(crate) fn decode(answer: &[u8]) -> Result<Published, Error> {
    let unexpected = || {
        Error::Invalid(format!(
            "unexpected publish answer: {}",
            String::from_utf8_lossy(answer)
        ))
    };
    let value: serde_json::Value = serde_json::from_slice(answer).map_err(|_| unexpected())?;
    if value.get("accepted").and_then(|a| a.as_bool()) != Some(true) {
        return Err(unexpected());
    }
    if let Some(seq) = value.get("seq").and_then(|s| s.as_u64()) {
        return Ok(Published::Sequenced { seq });
    }
    if let Some(connections) = value.get("delivered").and_then(|d| d.as_u64()) {
        return Ok(Published::Delivered { connections });
    }
    Err(unexpected())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(bytes: Bytes) -> serde_json::Value {
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn each_target_is_written_as_the_server_reads_it() {
        let topic = encode(&PublishTarget::Topic("news".into()), b"hi", Some("m-1")).unwrap();
        assert_eq!(
            json(topic),
            serde_json::json!({"target": "topic", "topic": "news", "payload_base64": "aGk=", "msg_id": "m-1"})
        );
        let broadcast = encode(&PublishTarget::Broadcast, b"", None).unwrap();
        assert_eq!(
            json(broadcast),
            serde_json::json!({"target": "broadcast", "payload_base64": ""})
        );
        let conn = encode(&PublishTarget::Connection(4294967296007), b"x", None).unwrap();
        assert_eq!(
            json(conn),
            serde_json::json!({"target": "conn", "conn_id": 4294967296007u64, "payload_base64": "eA=="})
        );
        let client = encode(&PublishTarget::Client("device-1".into()), b"x", None).unwrap();
        assert_eq!(
            json(client),
            serde_json::json!({"target": "client", "client_id": "device-1", "payload_base64": "eA=="})
        );
    }

    #[test]
    fn a_msg_id_the_server_would_refuse_is_refused_before_sending() {
        let long = "m".repeat(PUBLISH_MSG_ID_MAX_BYTES + 1);
        for bad in ["", "has space", long.as_str()] {
            let refused = encode(&PublishTarget::Broadcast, b"", Some(bad)).unwrap_err();
            assert!(matches!(refused, Error::Invalid(_)), "{bad:?}: {refused}");
        }
    }

    #[test]
    fn answers_become_sequenced_or_delivered_and_anything_else_is_an_error() {
        assert_eq!(
            decode(br#"{"accepted":true,"seq":42}"#).unwrap(),
            Published::Sequenced { seq: 42 }
        );
        assert_eq!(
            decode(br#"{"accepted":true,"delivered":3}"#).unwrap(),
            Published::Delivered { connections: 3 }
        );
        for bad in [
            &br#"{"accepted":false}"#[..],
            b"{}",
            b"not json",
            b"{\"accepted\":true}",
        ] {
            assert!(matches!(decode(bad), Err(Error::Invalid(_))));
        }
    }
}
