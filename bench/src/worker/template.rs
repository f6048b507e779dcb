//! The request frames a worker sends and the replies it expects, byte for byte. A payload is
//! the request id (8 bytes LE) followed by a fixed pattern, so every reply can be checked
//! without storing what was sent.

use bytes::BytesMut;
use holdfast_protocol::{encode_frame, payload, Header, Kind, HEADER_BYTES};

/// How requests are framed.
#[derive(Clone, Debug)]
pub struct Template {
    kind: Kind,
    method: String,
    /// `payload_bytes` of pattern; the first 8 (or fewer) are replaced by the id.
    pattern: Vec<u8>,
    max_frame_bytes: u32,
    /// Whether a Response body must equal the request body (method "echo").
    check_response_body: bool,
    scratch: BytesMut,
    /// push: the topic of the counted Push frames ("*" for broadcast).
    push_stream: Option<String>,
    /// events: the Event frame with id 0 (see [`crate::events::event_frame`]).
    event_frame: Vec<u8>,
}

const ID_BYTES: usize = 8;

/// push: bytes of the publish timestamp (CLOCK_MONOTONIC ns, u64 LE) at the start of a payload.
pub const PUSH_TIMESTAMP_BYTES: usize = 8;

/// The fixed byte pattern of request bodies and push payloads (`payload_bytes` long).
pub fn pattern(payload_bytes: usize) -> Vec<u8> {
    (0..payload_bytes)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(11))
        .collect()
}

/// push: the payload the publisher sends at `timestamp_ns`: the timestamp, then the pattern.
pub fn push_payload(payload_bytes: usize, timestamp_ns: u64) -> Vec<u8> {
    assert!(payload_bytes >= PUSH_TIMESTAMP_BYTES);
    let mut payload = pattern(payload_bytes);
    payload[..PUSH_TIMESTAMP_BYTES].copy_from_slice(&timestamp_ns.to_le_bytes());
    payload
}

impl Template {
    /// Echo frames (`kind` Echo) or Request frames to `method` (`kind` Request).
    pub fn new(kind: Kind, method: &str, payload_bytes: usize, max_frame_bytes: u32) -> Template {
        assert!(matches!(kind, Kind::Echo | Kind::Request));
        let pattern = pattern(payload_bytes);
        Template {
            kind,
            method: method.to_owned(),
            pattern,
            max_frame_bytes,
            check_response_body: method == "echo",
            scratch: BytesMut::with_capacity(HEADER_BYTES + payload_bytes + 256),
            push_stream: None,
            event_frame: Vec::new(),
        }
    }

    /// events: Event frames made from `frame` (id 0), each with its own id.
    pub fn events(frame: Vec<u8>, max_frame_bytes: u32) -> Template {
        Template {
            kind: Kind::Event,
            method: String::new(),
            pattern: Vec::new(),
            max_frame_bytes,
            check_response_body: false,
            scratch: BytesMut::new(),
            push_stream: None,
            event_frame: frame,
        }
    }

    /// push: count Push frames of topic `stream` (payloads of `payload_bytes`, see [`push_payload`]).
    pub fn with_push_stream(mut self, stream: &str) -> Template {
        self.push_stream = Some(stream.to_owned());
        self
    }

    pub fn push_stream(&self) -> Option<&str> {
        self.push_stream.as_deref()
    }

    /// push: the publish timestamp of a payload made by [`push_payload`], or None if the payload
    /// is not one (wrong length or pattern).
    pub fn push_timestamp(&self, payload: &[u8]) -> Option<u64> {
        let ok = payload.len() == self.pattern.len()
            && payload.len() >= PUSH_TIMESTAMP_BYTES
            && payload[PUSH_TIMESTAMP_BYTES..] == self.pattern[PUSH_TIMESTAMP_BYTES..];
        ok.then(|| {
            let mut ts = [0u8; PUSH_TIMESTAMP_BYTES];
            ts.copy_from_slice(&payload[..PUSH_TIMESTAMP_BYTES]);
            u64::from_le_bytes(ts)
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    fn id_prefix(&self, id: u64) -> ([u8; ID_BYTES], usize) {
        (id.to_le_bytes(), self.pattern.len().min(ID_BYTES))
    }

    /// Appends request `id` to `out`.
    pub fn write_request(&mut self, id: u64, out: &mut Vec<u8>) {
        let (id_bytes, prefix) = self.id_prefix(id);
        match self.kind {
            Kind::Echo => {
                let mut header = Header::new(Kind::Echo, 0, id);
                header.len = (HEADER_BYTES + self.pattern.len()) as u32;
                let mut header_bytes = [0u8; HEADER_BYTES];
                header.write(&mut header_bytes);
                out.extend_from_slice(&header_bytes);
                out.extend_from_slice(&id_bytes[..prefix]);
                out.extend_from_slice(&self.pattern[prefix..]);
            }
            Kind::Event => crate::events::write_event(&self.event_frame, id, out),
            _ => {
                let mut body = self.pattern.clone(); // Request frames: one small copy per request.
                body[..prefix].copy_from_slice(&id_bytes[..prefix]);
                let request = payload::Request {
                    method: &self.method,
                    body: &body,
                };
                self.scratch.clear();
                encode_frame(&mut self.scratch, 0, id, &request, self.max_frame_bytes)
                    .expect("request fits max_frame_bytes (checked at start)");
                out.extend_from_slice(&self.scratch);
            }
        }
    }

    /// events: bytes of one Event frame (0 for other kinds).
    pub fn event_frame_bytes(&self) -> usize {
        self.event_frame.len()
    }

    /// Whether `body` is the request body of `id`.
    pub fn body_matches(&self, id: u64, body: &[u8]) -> bool {
        let (id_bytes, prefix) = self.id_prefix(id);
        body.len() == self.pattern.len()
            && body[..prefix] == id_bytes[..prefix]
            && body[prefix..] == self.pattern[prefix..]
    }

    /// Whether an Echo reply is byte-identical to the Echo request `id` (`frame` is the whole frame).
    pub fn echo_matches(&self, id: u64, frame: &[u8]) -> bool {
        let mut header = Header::new(Kind::Echo, 0, id);
        header.len = (HEADER_BYTES + self.pattern.len()) as u32;
        let mut header_bytes = [0u8; HEADER_BYTES];
        header.write(&mut header_bytes);
        frame.len() == HEADER_BYTES + self.pattern.len()
            && frame[..HEADER_BYTES] == header_bytes
            && self.body_matches(id, &frame[HEADER_BYTES..])
    }

    /// Whether a Response body must be checked against the request body.
    pub fn checks_response_body(&self) -> bool {
        self.check_response_body
    }

    /// Bytes of one request frame (checked against max_frame_bytes at start).
    pub fn request_bytes(&mut self) -> usize {
        let mut out = Vec::new();
        self.write_request(0, &mut out);
        out.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_protocol::{next_frame, Payload, MAX_FRAME_BYTES_DEFAULT};

    #[test]
    fn echo_request_decodes_and_matches_only_its_own_id() {
        let mut t = Template::new(Kind::Echo, "echo", 48, MAX_FRAME_BYTES_DEFAULT);
        let mut out = Vec::new();
        t.write_request(77, &mut out);
        assert_eq!(out.len(), 64);
        let frame = next_frame(&out, MAX_FRAME_BYTES_DEFAULT).unwrap().unwrap();
        assert_eq!(frame.header.id, 77);
        assert!(matches!(frame.payload, Payload::Echo(p) if p.len() == 48));
        assert!(t.echo_matches(77, &out));
        assert!(!t.echo_matches(78, &out));
        out[40] ^= 1;
        assert!(!t.echo_matches(77, &out));
    }

    #[test]
    fn request_frame_carries_method_and_checkable_body() {
        let mut t = Template::new(Kind::Request, "echo", 5, MAX_FRAME_BYTES_DEFAULT);
        let mut out = Vec::new();
        t.write_request(9, &mut out);
        let frame = next_frame(&out, MAX_FRAME_BYTES_DEFAULT).unwrap().unwrap();
        let Payload::Request(request) = frame.payload else {
            panic!("not a Request")
        };
        assert_eq!(request.method.as_ref(), "echo");
        assert!(t.body_matches(9, &request.body));
        assert!(!t.body_matches(10, &request.body));
    }

    #[test]
    fn push_payload_carries_its_timestamp_and_is_checked() {
        let t =
            Template::new(Kind::Echo, "echo", 64, MAX_FRAME_BYTES_DEFAULT).with_push_stream("*");
        let mut p = push_payload(64, 123_456_789);
        assert_eq!(p.len(), 64);
        assert_eq!(t.push_timestamp(&p), Some(123_456_789));
        p[40] ^= 1;
        assert_eq!(t.push_timestamp(&p), None);
        assert_eq!(t.push_timestamp(&push_payload(63, 1)), None);
    }
}
