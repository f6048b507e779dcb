//! Frames to and from the wire through holdfast-protocol: [`FrameReader`] turns received bytes
//! into owned [`Inbound`] frames (push payloads are slices of the receive buffer, not copies),
//! and the `encode_*` functions append outgoing frames to the write buffer.

use bytes::{Bytes, BytesMut};
use holdfast_protocol::decode::validate_payload;
use holdfast_protocol::header::MAX_FRAME_BYTES_CEILING;
use holdfast_protocol::payload::{
    Event, Goodbye, Hello, Request, ResumeTopic, Subscribe, SubscribeResume, TopicName, Unsubscribe,
};
use holdfast_protocol::{
    encode_frame, encode_raw, DecodeError, EncodeError, Header, Kind, Payload, FLAG_ACK_REQUESTED,
    HEADER_BYTES, VERSION,
};

use crate::error::Error;
use crate::pushes::Push;
use crate::state::SessionInfo;

/// A received frame's meaning, owned.
#[derive(Debug)]
pub(crate) enum Inbound {
    Welcome(SessionInfo),
    Ping,
    Pong,
    Response(Bytes),
    Push(Push),
    /// An Ack; the answer per topic when it answers a SubscribeResume (empty otherwise).
    Ack(Vec<ResumeAnswer>),
    /// An Error frame, classified.
    Error(Error),
    Goodbye {
        reason: String,
        reconnect_after_ms: u32,
    },
    /// A kind the server never sends to a client (Hello, Echo we did not ask for, Request, …).
    Unexpected(Kind),
}

/// What the server did with one topic of a SubscribeResume (a SubscribeAck entry, owned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ResumeAnswer {
    /// The topic's epoch now; 0 when the server could not look it up (ask again).
    pub(crate) epoch: u64,
    /// The topic's last seq at the seam: live pushes continue from `seq + 1`.
    pub(crate) seq: u64,
    /// Oldest seq the server still holds (0 if none).
    pub(crate) oldest_seq: u64,
    /// Every push after the resume point follows, replayed then live.
    pub(crate) recovered: bool,
}

/// One topic's resume point as sent in a SubscribeResume: epoch 0 means none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ResumePoint {
    pub(crate) name: String,
    pub(crate) epoch: u64,
    pub(crate) last_seq: u64,
}

/// Reassembles frames from the byte stream. Holds at most one incomplete frame plus one read's
/// worth of bytes; a header announcing more than `max_frame_bytes` is refused before its body.
#[derive(Debug)]
pub(crate) struct FrameReader {
    buf: BytesMut,
    max_frame_bytes: u32,
}

impl FrameReader {
    pub(crate) fn new(max_frame_bytes: u32) -> FrameReader {
        FrameReader {
            buf: BytesMut::new(),
            max_frame_bytes: clamp_frame_bytes(max_frame_bytes),
        }
    }

    /// The buffer to read into.
    pub(crate) fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Raises or lowers the largest frame accepted (Welcome tells the server's).
    pub(crate) fn set_max_frame_bytes(&mut self, max_frame_bytes: u32) {
        self.max_frame_bytes = clamp_frame_bytes(max_frame_bytes);
    }

    /// The next complete frame as `(id, meaning)`, `Ok(None)` when more bytes are needed.
    pub(crate) fn next(&mut self) -> Result<Option<(u64, Inbound)>, DecodeError> {
        let Some(header_bytes) = self.buf.first_chunk::<HEADER_BYTES>() else {
            return Ok(None);
        };
        let header = Header::parse(header_bytes, self.max_frame_bytes)?;
        if self.buf.len() < header.len as usize {
            return Ok(None);
        }
        let frame = self.buf.split_to(header.len as usize).freeze();
        let inbound = inbound(&frame, header.kind)?;
        Ok(Some((header.id, inbound)))
    }
}

/// Keeps a limit from the wire within what the decoder accepts (never panics on a bad Welcome).
fn clamp_frame_bytes(max_frame_bytes: u32) -> u32 {
    max_frame_bytes.clamp(HEADER_BYTES as u32, MAX_FRAME_BYTES_CEILING)
}

fn inbound(frame: &Bytes, kind: Kind) -> Result<Inbound, DecodeError> {
    Ok(match validate_payload(kind, &frame[HEADER_BYTES..])? {
        Payload::Welcome(welcome) => Inbound::Welcome(SessionInfo {
            session_id: welcome.session_id.to_native(),
            heartbeat_ms: welcome.heartbeat_ms.to_native(),
            heartbeat_timeout_ms: welcome.heartbeat_timeout_ms.to_native(),
            max_frame_bytes: welcome.max_frame_bytes.to_native(),
            max_inflight_requests: welcome.max_inflight_requests.to_native(),
        }),
        Payload::Ping => Inbound::Ping,
        Payload::Pong => Inbound::Pong,
        Payload::Response(response) => Inbound::Response(frame.slice_ref(&response.body)),
        Payload::Push(push) => Inbound::Push(Push {
            topic: push.topic.to_string(),
            seq: push.seq.to_native(),
            payload: frame.slice_ref(&push.payload),
        }),
        Payload::Ack => Inbound::Ack(Vec::new()),
        Payload::SubscribeAck(ack) => Inbound::Ack(
            ack.topics
                .iter()
                .map(|topic| ResumeAnswer {
                    epoch: topic.epoch.to_native(),
                    seq: topic.seq.to_native(),
                    oldest_seq: topic.oldest_seq.to_native(),
                    recovered: topic.recovered != 0,
                })
                .collect(),
        ),
        Payload::Error(error) => {
            Inbound::Error(Error::from_server(error.code.to_native(), &error.reason))
        }
        Payload::Goodbye(goodbye) => Inbound::Goodbye {
            reason: goodbye.reason.to_string(),
            reconnect_after_ms: goodbye.reconnect_after_ms.to_native(),
        },
        Payload::Hello(_)
        | Payload::Echo(_)
        | Payload::Request(_)
        | Payload::Event(_)
        | Payload::Subscribe(_)
        | Payload::Unsubscribe(_)
        | Payload::SubscribeResume(_) => Inbound::Unexpected(kind),
    })
}

fn flags(ack: bool) -> u16 {
    if ack {
        FLAG_ACK_REQUESTED
    } else {
        0
    }
}

fn too_large(max_frame_bytes: u32) -> impl Fn(EncodeError) -> Error {
    move |_| Error::FrameTooLarge { max_frame_bytes }
}

/// A Hello: anonymous (empty payload) when there is neither a client id nor a token.
pub(crate) fn encode_hello(
    out: &mut BytesMut,
    id: u64,
    client_id: &str,
    token: &[u8],
    heartbeat_ms: u32,
    max_frame_bytes: u32,
) -> Result<(), Error> {
    let result = if client_id.is_empty() && token.is_empty() && heartbeat_ms == 0 {
        encode_raw(out, Kind::Hello, 0, id, &[], max_frame_bytes)
    } else {
        let hello = Hello {
            client_id,
            token,
            versions: &[VERSION],
            heartbeat_ms,
        };
        encode_frame(out, 0, id, &hello, max_frame_bytes)
    };
    result.map(drop).map_err(too_large(max_frame_bytes))
}

pub(crate) fn encode_ping(out: &mut BytesMut, id: u64) {
    encode_raw(out, Kind::Ping, 0, id, &[], HEADER_BYTES as u32).expect("a Ping is a header");
}

pub(crate) fn encode_pong(out: &mut BytesMut, id: u64) {
    encode_raw(out, Kind::Pong, 0, id, &[], HEADER_BYTES as u32).expect("a Pong is a header");
}

pub(crate) fn encode_request(
    out: &mut BytesMut,
    id: u64,
    method: &str,
    body: &[u8],
    max_frame_bytes: u32,
) -> Result<(), Error> {
    let request = Request { method, body };
    encode_frame(out, 0, id, &request, max_frame_bytes)
        .map(drop)
        .map_err(too_large(max_frame_bytes))
}

pub(crate) fn encode_event(
    out: &mut BytesMut,
    id: u64,
    topic: &str,
    payload: &[u8],
    ack: bool,
    max_frame_bytes: u32,
) -> Result<(), Error> {
    let event = Event { topic, payload };
    encode_frame(out, flags(ack), id, &event, max_frame_bytes)
        .map(drop)
        .map_err(too_large(max_frame_bytes))
}

/// A frame that carries a list of topic names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TopicsFrame {
    /// A plain Subscribe (kind 10): for a server without SubscribeResume.
    Subscribe,
    /// An Unsubscribe (kind 11).
    Unsubscribe,
}

/// A Subscribe or Unsubscribe (`frame`) for `names`, with the ack flag.
pub(crate) fn encode_topics(
    out: &mut BytesMut,
    id: u64,
    frame: TopicsFrame,
    names: &[String],
    max_frame_bytes: u32,
) -> Result<(), Error> {
    let topics: Vec<TopicName<'_>> = names.iter().map(|name| TopicName { name }).collect();
    let topics = &topics;
    let encoded = match frame {
        TopicsFrame::Subscribe => encode_frame(
            out,
            FLAG_ACK_REQUESTED,
            id,
            &Subscribe { topics },
            max_frame_bytes,
        ),
        TopicsFrame::Unsubscribe => encode_frame(
            out,
            FLAG_ACK_REQUESTED,
            id,
            &Unsubscribe { topics },
            max_frame_bytes,
        ),
    };
    encoded.map(drop).map_err(too_large(max_frame_bytes))
}

/// A SubscribeResume (kind 15) for `points`, in order.
pub(crate) fn encode_subscribe_resume(
    out: &mut BytesMut,
    id: u64,
    points: &[ResumePoint],
    max_frame_bytes: u32,
) -> Result<(), Error> {
    let topics: Vec<ResumeTopic<'_>> = points
        .iter()
        .map(|point| ResumeTopic {
            name: &point.name,
            epoch: point.epoch,
            last_seq: point.last_seq,
        })
        .collect();
    let resume = SubscribeResume { topics: &topics };
    encode_frame(out, FLAG_ACK_REQUESTED, id, &resume, max_frame_bytes)
        .map(drop)
        .map_err(too_large(max_frame_bytes))
}

/// Bytes a SubscribeResume spends on one topic: its name and its 24-byte ResumeTopic.
pub(crate) fn resume_topic_frame_bytes(name: &str) -> usize {
    name.len() + 24
}

/// Bytes of a Subscribe frame beyond its topics: header and 8-byte root.
pub(crate) const TOPICS_FRAME_OVERHEAD_BYTES: usize = HEADER_BYTES + 8;

pub(crate) fn encode_goodbye(out: &mut BytesMut, reason: &str) {
    let goodbye = Goodbye {
        reason,
        reconnect_after_ms: 0,
    };
    // A short fixed reason always fits the smallest frame limit the server may have.
    if encode_frame(out, 0, 0, &goodbye, u32::from(u16::MAX)).is_err() {
        out.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_protocol::payload::Push as PushPayload;

    fn push_frame(topic: &str, seq: u64, payload: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        let push = PushPayload {
            topic,
            seq,
            payload,
        };
        encode_frame(&mut out, 0, 0, &push, 65_536).unwrap();
        out
    }

    #[test]
    fn frames_split_anywhere_come_out_whole_and_in_order() {
        let mut stream = BytesMut::new();
        for seq in 1..=20u64 {
            stream.extend_from_slice(&push_frame("news", seq, &seq.to_le_bytes()));
        }
        for chunk_bytes in [1, 7, 16, 33, 4_096] {
            let mut reader = FrameReader::new(65_536);
            let mut seqs = Vec::new();
            for chunk in stream.chunks(chunk_bytes) {
                reader.buf_mut().extend_from_slice(chunk);
                while let Some((_, frame)) = reader.next().unwrap() {
                    let Inbound::Push(push) = frame else {
                        panic!("not a push: {frame:?}")
                    };
                    assert_eq!(
                        push.payload,
                        Bytes::copy_from_slice(&push.seq.to_le_bytes())
                    );
                    seqs.push(push.seq);
                }
            }
            assert_eq!(
                seqs,
                (1..=20).collect::<Vec<_>>(),
                "chunks of {chunk_bytes}"
            );
        }
    }

    #[test]
    fn an_oversized_header_is_refused_before_its_body_arrives() {
        let mut reader = FrameReader::new(1_024);
        let frame = push_frame("t", 1, &[0; 2_000]);
        reader.buf_mut().extend_from_slice(&frame[..HEADER_BYTES]);
        assert!(matches!(
            reader.next(),
            Err(DecodeError::LengthTooLarge { .. })
        ));
    }

    #[test]
    fn a_welcome_with_absurd_limits_does_not_panic_the_reader() {
        let mut reader = FrameReader::new(0);
        reader.set_max_frame_bytes(u32::MAX);
        reader
            .buf_mut()
            .extend_from_slice(&push_frame("t", 1, b"x"));
        assert!(matches!(reader.next(), Ok(Some((_, Inbound::Push(_))))));
    }

    #[test]
    fn an_anonymous_hello_is_a_bare_header() {
        let mut out = BytesMut::new();
        encode_hello(&mut out, 1, "", &[], 0, 65_536).unwrap();
        assert_eq!(out.len(), HEADER_BYTES);
        out.clear();
        encode_hello(&mut out, 1, "alice", &[], 0, 65_536).unwrap();
        assert!(out.len() > HEADER_BYTES);
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_and_leaves_the_buffer_alone() {
        let mut out = BytesMut::from(&b"queued"[..]);
        let error = encode_request(&mut out, 1, "echo", &[0; 2_000], 1_024).unwrap_err();
        assert!(matches!(
            error,
            Error::FrameTooLarge {
                max_frame_bytes: 1_024
            }
        ));
        assert_eq!(&out[..], b"queued");
    }
}
