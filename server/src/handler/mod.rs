//! Request handlers: one [`Handler`] instance per shard, called with the session and the
//! archived request (read in place), answering in place into the connection's outbound queue.
//! Handlers are synchronous and must not block; they know nothing about rings or sockets.

pub(crate) mod echo;
pub(crate) mod kv;

use bytes::BytesMut;
use holdfast_protocol::{encode_frame, payload::Response, ErrorCode};

use crate::conn::ConnId;

/// Who is asking.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Session {
    pub id: ConnId,
}

/// Why a request failed; sent back as an Error frame with the request's id. The connection
/// stays open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HandlerError {
    pub code: ErrorCode,
    pub reason: &'static str,
}

impl HandlerError {
    pub(crate) fn failed(reason: &'static str) -> HandlerError {
        HandlerError {
            code: ErrorCode::HandlerFailed,
            reason,
        }
    }
}

/// Where a handler writes its response: straight into the connection's outbound queue.
pub(crate) struct Reply<'a> {
    out: &'a mut BytesMut,
    id: u64,
    max_frame_bytes: u32,
    sent: bool,
}

impl<'a> Reply<'a> {
    pub(crate) fn new(out: &'a mut BytesMut, id: u64, max_frame_bytes: u32) -> Reply<'a> {
        Reply {
            out,
            id,
            max_frame_bytes,
            sent: false,
        }
    }

    /// Encodes a Response frame carrying `body`. At most one per request.
    pub(crate) fn body(&mut self, body: &[u8]) -> Result<(), HandlerError> {
        assert!(!self.sent, "one response per request");
        encode_frame(
            self.out,
            0,
            self.id,
            &Response { body },
            self.max_frame_bytes,
        )
        .map_err(|_| HandlerError::failed("response larger than max_frame_bytes"))?;
        self.sent = true;
        Ok(())
    }

    pub(crate) fn sent(&self) -> bool {
        self.sent
    }
}

pub(crate) trait Handler {
    /// Answers one request. Return Ok after writing exactly one response with `reply`, or Err
    /// (the shard sends the Error frame).
    fn call(
        &mut self,
        session: Session,
        method: &str,
        body: &[u8],
        reply: &mut Reply<'_>,
    ) -> Result<(), HandlerError>;

    /// The session ended; drop anything kept for it.
    fn on_close(&mut self, _session: Session) {}
}

/// The built-in handler set: routes by method name.
#[derive(Default)]
pub(crate) struct Router {
    kv: kv::KvHandler,
}

impl Handler for Router {
    fn call(
        &mut self,
        session: Session,
        method: &str,
        body: &[u8],
        reply: &mut Reply<'_>,
    ) -> Result<(), HandlerError> {
        match method {
            echo::METHOD => echo::call(body, reply),
            m if m.starts_with(kv::METHOD_PREFIX) => self.kv.call(session, method, body, reply),
            _ => Err(HandlerError {
                code: ErrorCode::UnknownMethod,
                reason: "unknown method: try echo, kv.set, kv.get, kv.del",
            }),
        }
    }

    fn on_close(&mut self, session: Session) {
        self.kv.on_close(session);
    }
}
