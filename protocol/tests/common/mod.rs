//! Shared by the integration tests: an owned model of every payload, encoding from it, and
//! decoding streams back into it so tests compare whole frames with `assert_eq!`.
#![allow(dead_code)] // each test binary uses a different part

use std::ops::ControlFlow;

use bytes::BytesMut;
use holdfast_protocol::{
    decode::Fed,
    payload::{
        ErrorBody, Event, Goodbye, Hello, Push, Request, Response, Subscribe, TopicName,
        Unsubscribe, Welcome,
    },
    DecodeError, Decoder, EncodeError, Frame, Header, Kind, Payload, HEADER_BYTES,
};

pub use holdfast_protocol::MAX_FRAME_BYTES_DEFAULT as MAX;

/// An owned copy of a payload, for building frames and comparing decoded ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    AnonymousHello,
    Hello {
        client_id: String,
        token: Vec<u8>,
        versions: Vec<u8>,
        heartbeat_ms: u32,
    },
    Welcome(Welcome),
    Ping,
    Pong,
    Echo(Vec<u8>),
    Request {
        method: String,
        body: Vec<u8>,
    },
    Response {
        body: Vec<u8>,
    },
    Event {
        topic: String,
        payload: Vec<u8>,
    },
    Push {
        topic: String,
        seq: u64,
        payload: Vec<u8>,
    },
    Subscribe(Vec<String>),
    Unsubscribe(Vec<String>),
    Ack,
    Error {
        code: u16,
        reason: String,
    },
    Goodbye {
        reason: String,
        reconnect_after_ms: u32,
    },
}

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Body::AnonymousHello | Body::Hello { .. } => Kind::Hello,
            Body::Welcome(_) => Kind::Welcome,
            Body::Ping => Kind::Ping,
            Body::Pong => Kind::Pong,
            Body::Echo(_) => Kind::Echo,
            Body::Request { .. } => Kind::Request,
            Body::Response { .. } => Kind::Response,
            Body::Event { .. } => Kind::Event,
            Body::Push { .. } => Kind::Push,
            Body::Subscribe(_) => Kind::Subscribe,
            Body::Unsubscribe(_) => Kind::Unsubscribe,
            Body::Ack => Kind::Ack,
            Body::Error { .. } => Kind::Error,
            Body::Goodbye { .. } => Kind::Goodbye,
        }
    }

    /// Appends this payload as one frame with the crate's encoder.
    pub fn encode(
        &self,
        out: &mut BytesMut,
        flags: u16,
        id: u64,
        max_frame_bytes: u32,
    ) -> Result<usize, EncodeError> {
        let kind = self.kind();
        let m = max_frame_bytes;
        match self {
            Body::AnonymousHello | Body::Ping | Body::Pong | Body::Ack => {
                holdfast_protocol::encode_raw(out, kind, flags, id, &[], m)
            }
            Body::Echo(bytes) => holdfast_protocol::encode_raw(out, kind, flags, id, bytes, m),
            Body::Hello {
                client_id,
                token,
                versions,
                heartbeat_ms,
            } => {
                let hello = Hello {
                    client_id,
                    token,
                    versions,
                    heartbeat_ms: *heartbeat_ms,
                };
                holdfast_protocol::encode_frame(out, flags, id, &hello, m)
            }
            Body::Welcome(welcome) => holdfast_protocol::encode_frame(out, flags, id, welcome, m),
            Body::Request { method, body } => {
                holdfast_protocol::encode_frame(out, flags, id, &Request { method, body }, m)
            }
            Body::Response { body } => {
                holdfast_protocol::encode_frame(out, flags, id, &Response { body }, m)
            }
            Body::Event { topic, payload } => {
                holdfast_protocol::encode_frame(out, flags, id, &Event { topic, payload }, m)
            }
            Body::Push {
                topic,
                seq,
                payload,
            } => {
                let push = Push {
                    topic,
                    seq: *seq,
                    payload,
                };
                holdfast_protocol::encode_frame(out, flags, id, &push, m)
            }
            Body::Subscribe(topics) => {
                let names: Vec<TopicName<'_>> =
                    topics.iter().map(|name| TopicName { name }).collect();
                holdfast_protocol::encode_frame(out, flags, id, &Subscribe { topics: &names }, m)
            }
            Body::Unsubscribe(topics) => {
                let names: Vec<TopicName<'_>> =
                    topics.iter().map(|name| TopicName { name }).collect();
                holdfast_protocol::encode_frame(out, flags, id, &Unsubscribe { topics: &names }, m)
            }
            Body::Error { code, reason } => {
                let error = ErrorBody {
                    code: *code,
                    reason,
                };
                holdfast_protocol::encode_frame(out, flags, id, &error, m)
            }
            Body::Goodbye {
                reason,
                reconnect_after_ms,
            } => {
                let goodbye = Goodbye {
                    reason,
                    reconnect_after_ms: *reconnect_after_ms,
                };
                holdfast_protocol::encode_frame(out, flags, id, &goodbye, m)
            }
        }
    }

    /// Copies a decoded, validated payload out of its receive buffer.
    pub fn from_payload(payload: &Payload<'_>) -> Body {
        let topics = |view: &holdfast_protocol::payload::TopicsView| -> Vec<String> {
            view.topics
                .iter()
                .map(|topic| topic.name.to_string())
                .collect()
        };
        match payload {
            Payload::Hello(None) => Body::AnonymousHello,
            Payload::Hello(Some(hello)) => Body::Hello {
                client_id: hello.client_id.to_string(),
                token: hello.token.to_vec(),
                versions: hello.versions.to_vec(),
                heartbeat_ms: hello.heartbeat_ms.to_native(),
            },
            Payload::Welcome(welcome) => Body::Welcome(Welcome {
                session_id: welcome.session_id.to_native(),
                heartbeat_ms: welcome.heartbeat_ms.to_native(),
                heartbeat_timeout_ms: welcome.heartbeat_timeout_ms.to_native(),
                max_frame_bytes: welcome.max_frame_bytes.to_native(),
                max_inflight_requests: welcome.max_inflight_requests.to_native(),
            }),
            Payload::Ping => Body::Ping,
            Payload::Pong => Body::Pong,
            Payload::Echo(bytes) => Body::Echo(bytes.to_vec()),
            Payload::Request(request) => Body::Request {
                method: request.method.to_string(),
                body: request.body.to_vec(),
            },
            Payload::Response(response) => Body::Response {
                body: response.body.to_vec(),
            },
            Payload::Event(event) => Body::Event {
                topic: event.topic.to_string(),
                payload: event.payload.to_vec(),
            },
            Payload::Push(push) => Body::Push {
                topic: push.topic.to_string(),
                seq: push.seq.to_native(),
                payload: push.payload.to_vec(),
            },
            Payload::Subscribe(view) => Body::Subscribe(topics(view)),
            Payload::Unsubscribe(view) => Body::Unsubscribe(topics(view)),
            Payload::Ack => Body::Ack,
            Payload::Error(error) => Body::Error {
                code: error.code.to_native(),
                reason: error.reason.to_string(),
            },
            Payload::Goodbye(goodbye) => Body::Goodbye {
                reason: goodbye.reason.to_string(),
                reconnect_after_ms: goodbye.reconnect_after_ms.to_native(),
            },
        }
    }
}

/// A decoded frame, copied out of the decoder's buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedFrame {
    pub header: Header,
    pub bytes: Vec<u8>,
    pub body: Body,
}

impl OwnedFrame {
    pub fn from_frame(frame: &Frame<'_>) -> OwnedFrame {
        assert_eq!(
            frame.bytes.len(),
            frame.header.len as usize,
            "frame bytes match header len"
        );
        OwnedFrame {
            header: frame.header,
            bytes: frame.bytes.to_vec(),
            body: Body::from_payload(&frame.payload),
        }
    }
}

/// One frame of every kind (both Hello forms), with non-empty out-of-line fields.
pub fn one_of_every_kind() -> Vec<Body> {
    let s = |text: &str| text.to_string();
    vec![
        Body::AnonymousHello,
        Body::Hello {
            client_id: s("client-7"),
            token: vec![0xab; 40],
            versions: vec![1, 2],
            heartbeat_ms: 5000,
        },
        Body::Welcome(Welcome {
            session_id: 0x0102_0304_0506_0708,
            heartbeat_ms: 5000,
            heartbeat_timeout_ms: 15_000,
            max_frame_bytes: MAX,
            max_inflight_requests: 64,
        }),
        Body::Ping,
        Body::Pong,
        Body::Echo((0..64).collect()),
        Body::Request {
            method: s("account.get"),
            body: b"{\"id\":1}".to_vec(),
        },
        Body::Response {
            body: b"{\"balance\":0}".to_vec(),
        },
        Body::Event {
            topic: s("clicks"),
            payload: vec![1, 2, 3],
        },
        Body::Push {
            topic: s("prices"),
            seq: u64::MAX - 1,
            payload: vec![0x5a; 1024],
        },
        Body::Subscribe(vec![s("prices"), s("news"), s("é")]),
        Body::Unsubscribe(vec![s("news")]),
        Body::Ack,
        Body::Error {
            code: 13,
            reason: s("no method account.put"),
        },
        Body::Goodbye {
            reason: s("shutting down"),
            reconnect_after_ms: 30_000,
        },
    ]
}

/// Encodes `bodies` back to back (flags alternate 0/ack-requested, ids count from 100).
pub fn encode_stream(bodies: &[Body]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for (index, body) in bodies.iter().enumerate() {
        body.encode(&mut out, (index % 2) as u16, 100 + index as u64, MAX)
            .expect("encodes");
    }
    out.to_vec()
}

/// Feeds `pieces` in order to a fresh decoder, checking after every feed that it holds fewer
/// than `max_frame_bytes` bytes; returns the frames and the error that ended the stream, if any.
pub fn decode_pieces<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
    max_frame_bytes: u32,
) -> (Vec<OwnedFrame>, Option<DecodeError>) {
    let mut decoder = Decoder::new(max_frame_bytes);
    let mut frames = Vec::new();
    for piece in pieces {
        let fed = decoder.feed(piece, |frame| {
            frames.push(OwnedFrame::from_frame(&frame));
            ControlFlow::Continue(())
        });
        match fed {
            Ok(Fed::All) => assert!(decoder.buffered_bytes() < max_frame_bytes as usize),
            Ok(Fed::Stopped { .. }) => unreachable!("the callback never stops"),
            Err(error) => return (frames, Some(error)),
        }
    }
    (frames, None)
}

/// Decodes a contiguous buffer with `next_frame` alone (the reference for split decoding).
pub fn decode_contiguous(
    mut buf: &[u8],
    max_frame_bytes: u32,
) -> (Vec<OwnedFrame>, Option<DecodeError>) {
    let mut frames = Vec::new();
    loop {
        match holdfast_protocol::next_frame(buf, max_frame_bytes) {
            Ok(Some(frame)) => {
                frames.push(OwnedFrame::from_frame(&frame));
                buf = &buf[frame.bytes.len()..];
            }
            Ok(None) => return (frames, None),
            Err(error) => return (frames, Some(error)),
        }
    }
}

/// A frame built by hand, so tests can put any value in any header field.
pub fn raw_frame(len: u32, version: u8, kind: u8, flags: u16, id: u64, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.push(version);
    bytes.push(kind);
    bytes.extend_from_slice(&flags.to_le_bytes());
    bytes.extend_from_slice(&id.to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// The payload bytes of `body` as the encoder writes them.
pub fn payload_bytes(body: &Body) -> Vec<u8> {
    let mut out = BytesMut::new();
    body.encode(&mut out, 0, 0, MAX).expect("encodes");
    out[HEADER_BYTES..].to_vec()
}
