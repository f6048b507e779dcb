//! `kv.*`: a small per-session key-value store, kept per shard and dropped with the session.
//! Shows the handler trait carries state. Bodies: `kv.set` = key, 0x00, value; `kv.get` and
//! `kv.del` = key. Responses: `kv.get` returns the value; `kv.set`/`kv.del` return an empty body.

use std::collections::HashMap;

use super::{HandlerError, Reply, Session};
use crate::conn::ConnId;

pub(crate) const METHOD_PREFIX: &str = "kv.";
pub(crate) const KV_MAX_KEYS_PER_SESSION: usize = 64;
pub(crate) const KV_MAX_KEY_BYTES: usize = 128;
pub(crate) const KV_MAX_VALUE_BYTES: usize = 4096;

/// One session's keys and values.
type SessionStore = HashMap<Box<[u8]>, Box<[u8]>>;

#[derive(Default)]
pub(crate) struct KvHandler {
    sessions: HashMap<ConnId, SessionStore>,
}

impl KvHandler {
    pub(crate) fn call(
        &mut self,
        session: Session,
        method: &str,
        body: &[u8],
        reply: &mut Reply<'_>,
    ) -> Result<(), HandlerError> {
        match method {
            "kv.set" => {
                let Some(split) = body.iter().position(|&b| b == 0) else {
                    return Err(HandlerError::failed("kv.set body is key, 0x00, value"));
                };
                let (key, value) = (&body[..split], &body[split + 1..]);
                check_key(key)?;
                if value.len() > KV_MAX_VALUE_BYTES {
                    return Err(HandlerError::failed("kv value over 4096 bytes"));
                }
                let map = self.sessions.entry(session.id).or_default();
                if map.len() >= KV_MAX_KEYS_PER_SESSION && !map.contains_key(key) {
                    return Err(HandlerError::failed("kv store full: 64 keys per session"));
                }
                map.insert(key.into(), value.into());
                reply.body(&[])
            }
            "kv.get" => {
                check_key(body)?;
                let value = self.sessions.get(&session.id).and_then(|map| map.get(body));
                match value {
                    Some(value) => reply.body(value),
                    None => Err(HandlerError::failed("no such key")),
                }
            }
            "kv.del" => {
                check_key(body)?;
                if let Some(map) = self.sessions.get_mut(&session.id) {
                    map.remove(body);
                }
                reply.body(&[])
            }
            _ => Err(HandlerError {
                code: holdfast_protocol::ErrorCode::UnknownMethod,
                reason: "unknown kv method: kv.set, kv.get, kv.del",
            }),
        }
    }

    pub(crate) fn on_close(&mut self, session: Session) {
        self.sessions.remove(&session.id);
    }
}

fn check_key(key: &[u8]) -> Result<(), HandlerError> {
    if key.is_empty() || key.len() > KV_MAX_KEY_BYTES {
        return Err(HandlerError::failed("kv key must be 1..=128 bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use holdfast_protocol::{next_frame, Payload};

    fn call(
        kv: &mut KvHandler,
        id: u64,
        method: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, HandlerError> {
        let mut out = BytesMut::new();
        let mut reply = Reply::new(&mut out, 1, 65_536);
        kv.call(Session { id: ConnId(id) }, method, body, &mut reply)?;
        let frame = next_frame(&out, 65_536).unwrap().unwrap();
        let Payload::Response(response) = frame.payload else {
            panic!("not a response")
        };
        Ok(response.body.to_vec())
    }

    #[test]
    fn values_are_per_session_and_dropped_on_close() {
        let mut kv = KvHandler::default();
        call(&mut kv, 1, "kv.set", b"k\0v1").unwrap();
        assert_eq!(call(&mut kv, 1, "kv.get", b"k").unwrap(), b"v1");
        assert!(
            call(&mut kv, 2, "kv.get", b"k").is_err(),
            "other session sees nothing"
        );
        kv.on_close(Session { id: ConnId(1) });
        assert!(call(&mut kv, 1, "kv.get", b"k").is_err());
    }

    #[test]
    fn store_is_bounded_per_session() {
        let mut kv = KvHandler::default();
        for i in 0..KV_MAX_KEYS_PER_SESSION {
            call(&mut kv, 1, "kv.set", format!("k{i}\0v").as_bytes()).unwrap();
        }
        let err = call(&mut kv, 1, "kv.set", b"one-more\0v").unwrap_err();
        assert_eq!(err.reason, "kv store full: 64 keys per session");
    }
}
