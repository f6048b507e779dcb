//! WebSocket (RFC 6455) server transport, sans-io: the shard hands it the bytes of a provided
//! receive buffer, it answers the HTTP/1.1 Upgrade and then unmasks frames *in that buffer*
//! and hands the payload bytes of binary messages to a sink as one byte stream. The Holdfast
//! decoder is a stream decoder, so WebSocket message and frame boundaries need not match
//! Holdfast frame boundaries, and a fragmented message needs no reassembly buffer: its frames'
//! payloads follow each other in the stream. Outbound, a batch of Holdfast frames becomes one
//! binary message (2..=10 header bytes in front; the server does not mask).
//!
//! The request is parsed with `httparse` and the accept key made with `sha1` + `base64`; the
//! frame layer is written here (docs/ARCHITECTURE.md, "WebSocket framing", says why no crate
//! fits). Every rule is checked as soon as the bytes that break it have arrived:
//!
//! | input | answer |
//! |---|---|
//! | request over [`WS_HANDSHAKE_MAX_BYTES`] or [`WS_HANDSHAKE_MAX_HEADERS`] | 431 |
//! | not GET | 405; path other than `path`: 404; `Origin` not allowed: 403 |
//! | no `Upgrade: websocket`, or `Sec-WebSocket-Version` not 13 | 426 |
//! | bad HTTP, no Host/`Connection: upgrade`/16-byte key, no `holdfast.v1` subprotocol | 400 |
//! | reserved bits or opcode, unmasked frame, fragmented or >125-byte control frame, continuation with no message, new message inside one, close payload of 1 byte or invalid code, 64-bit length with its top bit | close 1002 |
//! | text frame | close 1003 |
//! | close reason not UTF-8 | close 1007 |
//! | message over `max_message_bytes` | close 1009 |
//! | ping | pong with its payload (only the latest unanswered one) |
//! | close | close with its code, then the connection ends |
//!
//! After an error the answer (an HTTP response or a close frame) is waiting in the transport
//! ([`WsState::has_wire_bytes`]); the shard sends it and closes. Nothing more is read.

use std::ops::ControlFlow;

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use sha1::{Digest, Sha1};

/// The subprotocol a client must offer (`Sec-WebSocket-Protocol`).
pub const WS_SUBPROTOCOL: &str = "holdfast.v1";
/// Largest opening request (request line and headers). Browsers send 0.5-2 KiB plus cookies;
/// Node and nginx allow 16 KiB and 8 KiB per header line.
pub const WS_HANDSHAKE_MAX_BYTES: usize = 16 * 1024;
/// Most header lines in the opening request.
pub const WS_HANDSHAKE_MAX_HEADERS: usize = 64;
/// Largest control frame payload (RFC 6455 5.5).
pub const WS_CONTROL_PAYLOAD_MAX_BYTES: usize = 125;
/// Largest frame header: 2 bytes, a 64-bit extended length, a 4-byte mask.
const FRAME_HEADER_MAX_BYTES: usize = 14;
/// Largest header the server puts in front of an outbound message (unmasked, 64-bit length).
pub const WS_OUTBOUND_HEADER_MAX_BYTES: usize = 10;
/// The GUID of RFC 6455 4.2.2, appended to the client's key for the accept key.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Close codes (RFC 6455 7.4.1) the server sends.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;

    /// Whether a peer may send `code` in a close frame: the RFC's and IANA's defined codes
    /// (1004-1006 and 1015 are reserved for reporting, never sent) and the 3000-4999 ranges
    /// for libraries and applications.
    pub fn valid_from_peer(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

mod opcode {
    pub(super) const CONTINUATION: u8 = 0x0;
    pub(super) const TEXT: u8 = 0x1;
    pub(super) const BINARY: u8 = 0x2;
    pub(super) const CLOSE: u8 = 0x8;
    pub(super) const PING: u8 = 0x9;
    pub(super) const PONG: u8 = 0xA;
}

/// What a WebSocket listener accepts; one per shard, shared by its connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsConfig {
    /// The request path of the Upgrade (`ws_path`); a query string is ignored.
    pub path: String,
    /// `Origin` values allowed (`ws_allowed_origins`, compared ASCII case-insensitively);
    /// empty = any. A request with no `Origin` is not from a browser and is allowed: the
    /// header protects browsers' users from other sites, and any other client can forge it.
    pub allowed_origins: Vec<String>,
    /// Largest binary message, all fragments together (the server's `max_frame_bytes`).
    pub max_message_bytes: u32,
}

/// Why the connection ends; its answer is waiting in [`WsState::has_wire_bytes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    #[error("WebSocket handshake refused with HTTP {status}: {reason}")]
    Handshake { status: u16, reason: &'static str },
    #[error("WebSocket closed with code {code}: {reason}")]
    Protocol { code: u16, reason: &'static str },
}

/// What [`WsState::on_received`] did with its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsOutcome {
    /// All input was used; keep reading. There may be wire bytes to send (101, pong).
    Continue,
    /// The peer's close frame arrived and the echo is waiting: send it, then close.
    PeerClosed,
    /// The sink asked to stop; the rest of the input was dropped.
    SinkStopped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading the HTTP request.
    Handshake,
    /// Upgraded: reading frames.
    Open,
    /// A close frame was sent or received, or the handshake failed: input is ignored.
    Closed,
}

/// The frame whose payload is being read.
#[derive(Clone, Copy, Debug)]
struct FramePayload {
    opcode: u8,
    fin: bool,
    mask: [u8; 4],
    /// Payload bytes already read: the mask's phase is `read_bytes % 4`.
    read_bytes: u64,
    remaining_bytes: u64,
}

/// One connection's WebSocket state. Boxed in the transport (see [`super::Transport`]); an
/// idle connection holds this struct and no heap buffer.
#[derive(Debug)]
pub struct WsState {
    phase: Phase,
    /// Bytes of a frame header split across reads.
    header: [u8; FRAME_HEADER_MAX_BYTES],
    header_len: u8,
    /// Set between a complete header and the end of its payload.
    frame: Option<FramePayload>,
    /// A binary message whose final frame has not arrived yet.
    in_message: bool,
    /// Payload bytes of the current binary message so far (at most `max_message_bytes`).
    message_bytes: u32,
    /// The request while it arrives in pieces, then a control frame's payload (at most 125
    /// bytes) while it is read; empty and unallocated otherwise.
    scratch: Vec<u8>,
    /// Bytes to send before the next message: the HTTP answer, the latest pong.
    preface: Vec<u8>,
    /// Where the pong in `preface` starts (a newer ping replaces it).
    pong_at: Option<u16>,
    /// A close frame to send after the next message; `close_sent` once it was handed out.
    close: Option<(u16, &'static str)>,
    close_sent: bool,
    /// The 101 answer was queued.
    upgraded: bool,
    /// The close frame came from the peer.
    peer_closed: bool,
}

impl Default for WsState {
    fn default() -> Self {
        WsState::new()
    }
}

impl WsState {
    pub fn new() -> WsState {
        WsState {
            phase: Phase::Handshake,
            header: [0; FRAME_HEADER_MAX_BYTES],
            header_len: 0,
            frame: None,
            in_message: false,
            message_bytes: 0,
            scratch: Vec::new(),
            preface: Vec::new(),
            pong_at: None,
            close: None,
            close_sent: false,
            upgraded: false,
            peer_closed: false,
        }
    }

    /// Whether the Upgrade was answered with 101.
    pub fn is_upgraded(&self) -> bool {
        self.upgraded
    }

    /// Whether the transport has bytes of its own to send (HTTP answer, pong, close).
    pub fn has_wire_bytes(&self) -> bool {
        !self.preface.is_empty() || (self.close.is_some() && !self.close_sent)
    }

    /// Heap bytes held beyond the struct (0 for an idle connection).
    pub fn heap_bytes(&self) -> usize {
        self.scratch.capacity() + self.preface.capacity()
    }

    /// Reads `input` (a receive buffer the transport may change: payloads are unmasked in
    /// place) and hands the payload bytes of binary messages to `sink` in stream order.
    pub fn on_received<S>(
        &mut self,
        config: &WsConfig,
        input: &mut [u8],
        mut sink: S,
    ) -> Result<WsOutcome, WsError>
    where
        S: FnMut(&mut [u8]) -> ControlFlow<()>,
    {
        let mut pos = 0;
        if self.phase == Phase::Handshake {
            match self.handshake(config, input)? {
                Some(consumed) => pos = consumed,
                None => return Ok(WsOutcome::Continue),
            }
        }
        while pos < input.len() {
            if self.phase != Phase::Open {
                break;
            }
            let Some(frame) = self.frame.as_mut() else {
                pos += self.read_header(config, &input[pos..])?;
                continue;
            };
            let available = (input.len() - pos) as u64;
            let take = frame.remaining_bytes.min(available) as usize;
            let chunk = &mut input[pos..pos + take];
            unmask(chunk, frame.mask, frame.read_bytes);
            frame.read_bytes += take as u64;
            frame.remaining_bytes -= take as u64;
            pos += take;
            if frame.opcode >= opcode::CLOSE {
                self.scratch.extend_from_slice(chunk);
            } else if !chunk.is_empty() && sink(chunk).is_break() {
                return Ok(WsOutcome::SinkStopped);
            }
            if self.frame.is_some_and(|f| f.remaining_bytes == 0) {
                self.end_frame()?;
            }
        }
        Ok(if self.peer_closed {
            WsOutcome::PeerClosed
        } else {
            WsOutcome::Continue
        })
    }

    /// Queues a close frame (sent after the next message) and stops reading: the server ends
    /// the session (Goodbye, an Error, drain). Does nothing if a close was already queued or
    /// received, or before the upgrade (the peer is not a WebSocket yet).
    pub fn close(&mut self, code: u16, reason: &'static str) {
        match self.phase {
            Phase::Open => self.close = Some((code, reason)),
            Phase::Handshake => self.scratch = Vec::new(),
            Phase::Closed => {}
        }
        self.phase = Phase::Closed;
    }

    /// The wire bytes of one send: the preface (HTTP answer, pong), then `batch` (Holdfast
    /// frames) as one binary message, then a queued close. Before the upgrade and after a close
    /// frame, `batch` is dropped: the peer cannot take a message then.
    pub fn wrap_outbound(&mut self, batch: Bytes) -> Bytes {
        let send_batch = !batch.is_empty() && self.is_upgraded() && !self.close_sent;
        let close = self.close.filter(|_| !self.close_sent);
        if self.preface.is_empty() && close.is_none() && !send_batch {
            return Bytes::new();
        }
        let mut out = BytesMut::with_capacity(
            self.preface.len()
                + if send_batch {
                    WS_OUTBOUND_HEADER_MAX_BYTES + batch.len()
                } else {
                    0
                }
                + if close.is_some() {
                    2 + WS_CONTROL_PAYLOAD_MAX_BYTES
                } else {
                    0
                },
        );
        out.extend_from_slice(&self.preface);
        self.preface = Vec::new();
        self.pong_at = None;
        if send_batch {
            put_header(&mut out, opcode::BINARY, batch.len() as u64);
            out.extend_from_slice(&batch);
        }
        if let Some((code, reason)) = close {
            put_close(&mut out, code, reason);
            self.close_sent = true;
        }
        out.freeze()
    }

    /// Reads the opening request. `Ok(Some(n))`: answered with 101, the first `n` input bytes
    /// were the request's end. `Ok(None)`: more bytes are needed (kept in `scratch`).
    fn handshake(&mut self, config: &WsConfig, input: &[u8]) -> Result<Option<usize>, WsError> {
        let held = self.scratch.len();
        let parsed = if held == 0 {
            self.answer_request(config, input)
        } else {
            let take = input.len().min(WS_HANDSHAKE_MAX_BYTES - held);
            self.scratch.extend_from_slice(&input[..take]);
            let request = std::mem::take(&mut self.scratch);
            let parsed = self.answer_request(config, &request);
            self.scratch = request;
            parsed
        };
        match parsed {
            Ok(Some(request_bytes)) => {
                self.scratch = Vec::new();
                self.phase = Phase::Open;
                self.upgraded = true;
                Ok(Some(request_bytes - held))
            }
            Ok(None) if held + input.len() >= WS_HANDSHAKE_MAX_BYTES => self.refuse(
                431,
                "Request Header Fields Too Large",
                "the opening request is over 16 KiB",
            ),
            Ok(None) => {
                if held == 0 {
                    self.scratch.extend_from_slice(input);
                }
                Ok(None)
            }
            Err((status, status_text, reason)) => self.refuse(status, status_text, reason),
        }
    }

    /// Parses and checks a request; on success queues the 101 answer and returns the request's
    /// length in bytes. `Ok(None)` when incomplete.
    fn answer_request(
        &mut self,
        config: &WsConfig,
        bytes: &[u8],
    ) -> Result<Option<usize>, Refusal> {
        let mut headers = [httparse::EMPTY_HEADER; WS_HANDSHAKE_MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let request_bytes = match request.parse(bytes) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err((
                    431,
                    "Request Header Fields Too Large",
                    "the opening request has more than 64 header lines",
                ))
            }
            Err(_) => {
                return Err((
                    400,
                    "Bad Request",
                    "the opening request is not valid HTTP/1.1",
                ))
            }
        };
        if request_bytes > WS_HANDSHAKE_MAX_BYTES {
            return Err((
                431,
                "Request Header Fields Too Large",
                "the opening request is over 16 KiB",
            ));
        }
        let key = check_request(config, &request)?;
        let accept = accept_key(key);
        self.preface.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Protocol: holdfast.v1\r\nSec-WebSocket-Accept: ",
        );
        self.preface.extend_from_slice(accept.as_bytes());
        self.preface.extend_from_slice(b"\r\n\r\n");
        Ok(Some(request_bytes))
    }

    /// Queues an HTTP error answer and ends the connection.
    fn refuse<T>(
        &mut self,
        status: u16,
        status_text: &'static str,
        reason: &'static str,
    ) -> Result<T, WsError> {
        self.scratch = Vec::new();
        self.phase = Phase::Closed;
        let extra = match status {
            405 => "Allow: GET\r\n",
            426 => "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
            _ => "",
        };
        let answer = format!(
            "HTTP/1.1 {status} {status_text}\r\n{extra}Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{reason}\n",
            reason.len() + 1
        );
        self.preface.extend_from_slice(answer.as_bytes());
        Err(WsError::Handshake { status, reason })
    }

    /// Queues a close frame with `code` and ends the connection.
    fn fail<T>(&mut self, code: u16, reason: &'static str) -> Result<T, WsError> {
        self.close = Some((code, reason));
        self.phase = Phase::Closed;
        self.scratch = Vec::new();
        Err(WsError::Protocol { code, reason })
    }

    /// Takes header bytes from `input`; checks each rule as soon as its bytes are there.
    /// Returns the input bytes used.
    fn read_header(&mut self, config: &WsConfig, input: &[u8]) -> Result<usize, WsError> {
        let held = usize::from(self.header_len);
        let mut needed = if held < 2 {
            2
        } else {
            header_bytes(&self.header)
        };
        let mut taken = 0;
        loop {
            let held = usize::from(self.header_len);
            let more = (needed - held).min(input.len() - taken);
            self.header[held..held + more].copy_from_slice(&input[taken..taken + more]);
            self.header_len += more as u8;
            taken += more;
            if usize::from(self.header_len) < needed {
                return Ok(taken);
            }
            if needed == 2 {
                self.check_first_bytes()?;
                needed = header_bytes(&self.header);
                continue;
            }
            break;
        }
        self.start_frame(config)?;
        Ok(taken)
    }

    /// Rules that the first two header bytes decide.
    fn check_first_bytes(&mut self) -> Result<(), WsError> {
        use close_code::*;
        let [b0, b1] = [self.header[0], self.header[1]];
        let fin = b0 & 0x80 != 0;
        let code = b0 & 0x0F;
        let len7 = b1 & 0x7F;
        if b0 & 0x70 != 0 {
            return self.fail(PROTOCOL_ERROR, "reserved bits set: no extension was agreed");
        }
        let control = code >= opcode::CLOSE;
        if !matches!(
            code,
            opcode::CONTINUATION
                | opcode::TEXT
                | opcode::BINARY
                | opcode::CLOSE
                | opcode::PING
                | opcode::PONG
        ) {
            return self.fail(PROTOCOL_ERROR, "reserved opcode");
        }
        if control && !fin {
            return self.fail(PROTOCOL_ERROR, "control frames must not be fragmented");
        }
        if control && usize::from(len7) > WS_CONTROL_PAYLOAD_MAX_BYTES {
            return self.fail(PROTOCOL_ERROR, "control frame payload over 125 bytes");
        }
        if b1 & 0x80 == 0 {
            return self.fail(PROTOCOL_ERROR, "client frames must be masked");
        }
        match code {
            opcode::TEXT if !self.in_message => self.fail(
                UNSUPPORTED_DATA,
                "text messages are not accepted: send Holdfast frames in binary messages",
            ),
            opcode::TEXT | opcode::BINARY if self.in_message => self.fail(
                PROTOCOL_ERROR,
                "a new message started before the last one ended",
            ),
            opcode::CONTINUATION if !self.in_message => self.fail(
                PROTOCOL_ERROR,
                "continuation frame with no message to continue",
            ),
            _ => Ok(()),
        }
    }

    /// The header is complete: checks the length and starts reading the payload.
    fn start_frame(&mut self, config: &WsConfig) -> Result<(), WsError> {
        let header = self.header;
        self.header_len = 0;
        let len7 = header[1] & 0x7F;
        let (payload_bytes, mask_at) = match len7 {
            126 => (u64::from(u16::from_be_bytes([header[2], header[3]])), 4),
            127 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&header[2..10]);
                (u64::from_be_bytes(bytes), 10)
            }
            n => (u64::from(n), 2),
        };
        if payload_bytes >> 63 != 0 {
            return self.fail(
                close_code::PROTOCOL_ERROR,
                "64-bit payload length with its top bit set",
            );
        }
        let opcode = header[0] & 0x0F;
        let fin = header[0] & 0x80 != 0;
        if opcode < opcode::CLOSE {
            let total = u64::from(self.message_bytes) + payload_bytes;
            if total > u64::from(config.max_message_bytes) {
                return self.fail(
                    close_code::MESSAGE_TOO_BIG,
                    "message over max_frame_bytes: send smaller messages",
                );
            }
            self.message_bytes = total as u32;
            self.in_message = true;
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&header[mask_at..mask_at + 4]);
        self.frame = Some(FramePayload {
            opcode,
            fin,
            mask,
            read_bytes: 0,
            remaining_bytes: payload_bytes,
        });
        if payload_bytes == 0 {
            // No payload bytes will come to end it.
            self.end_frame()?;
        }
        Ok(())
    }

    /// The current frame's payload is complete.
    fn end_frame(&mut self) -> Result<(), WsError> {
        let frame = self.frame.take().expect("a frame is being read");
        match frame.opcode {
            opcode::CONTINUATION | opcode::BINARY => {
                if frame.fin {
                    self.in_message = false;
                    self.message_bytes = 0;
                }
                Ok(())
            }
            opcode::PING => {
                let payload = std::mem::take(&mut self.scratch);
                if let Some(at) = self.pong_at {
                    self.preface.truncate(usize::from(at));
                }
                self.pong_at = Some(self.preface.len() as u16);
                let mut pong = BytesMut::with_capacity(2 + payload.len());
                put_header(&mut pong, opcode::PONG, payload.len() as u64);
                pong.extend_from_slice(&payload);
                self.preface.extend_from_slice(&pong);
                Ok(())
            }
            opcode::PONG => {
                self.scratch = Vec::new();
                Ok(())
            }
            opcode::CLOSE => self.on_close_frame(),
            _ => unreachable!("opcodes are checked in check_first_bytes"),
        }
    }

    /// The peer's close frame: check it, echo its code, stop reading.
    fn on_close_frame(&mut self) -> Result<(), WsError> {
        let payload = std::mem::take(&mut self.scratch);
        let code = match payload.as_slice() {
            [] => close_code::NORMAL,
            [_] => return self.fail(close_code::PROTOCOL_ERROR, "close payload of one byte"),
            [high, low, reason @ ..] => {
                let code = u16::from_be_bytes([*high, *low]);
                if !close_code::valid_from_peer(code) {
                    return self.fail(close_code::PROTOCOL_ERROR, "invalid close code");
                }
                if std::str::from_utf8(reason).is_err() {
                    return self.fail(close_code::INVALID_PAYLOAD, "close reason is not UTF-8");
                }
                code
            }
        };
        self.close = Some((code, ""));
        self.phase = Phase::Closed;
        self.peer_closed = true;
        Ok(())
    }
}

/// Bytes in a client frame header whose first two bytes are in `header`.
fn header_bytes(header: &[u8; FRAME_HEADER_MAX_BYTES]) -> usize {
    let length_bytes = match header[1] & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + length_bytes + 4
}

/// XORs `chunk` with `mask`, starting at payload offset `offset` (the mask's phase).
fn unmask(chunk: &mut [u8], mask: [u8; 4], offset: u64) {
    let phase = (offset % 4) as usize;
    let rotated = u32::from_ne_bytes([
        mask[phase],
        mask[(phase + 1) % 4],
        mask[(phase + 2) % 4],
        mask[(phase + 3) % 4],
    ]);
    let mut words = chunk.chunks_exact_mut(4);
    for word in &mut words {
        let value = u32::from_ne_bytes([word[0], word[1], word[2], word[3]]) ^ rotated;
        word.copy_from_slice(&value.to_ne_bytes());
    }
    let rotated = rotated.to_ne_bytes();
    for (byte, mask_byte) in words.into_remainder().iter_mut().zip(rotated) {
        *byte ^= mask_byte;
    }
}

/// Appends an unmasked frame header with FIN set.
fn put_header(out: &mut BytesMut, opcode: u8, payload_bytes: u64) {
    out.put_u8(0x80 | opcode);
    match payload_bytes {
        0..=125 => out.put_u8(payload_bytes as u8),
        126..=0xFFFF => {
            out.put_u8(126);
            out.put_u16(payload_bytes as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(payload_bytes);
        }
    }
}

/// Appends a close frame: code, then as much of `reason` as fits in 123 bytes (cut at a char
/// boundary).
fn put_close(out: &mut BytesMut, code: u16, reason: &str) {
    let mut end = reason.len().min(WS_CONTROL_PAYLOAD_MAX_BYTES - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    put_header(out, opcode::CLOSE, 2 + end as u64);
    out.put_u16(code);
    out.extend_from_slice(&reason.as_bytes()[..end]);
}

/// `Sec-WebSocket-Accept` for a client key (RFC 6455 4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

/// Whether a comma-separated header value holds `token` (ASCII case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// An HTTP refusal: status, status text, reason (the body).
type Refusal = (u16, &'static str, &'static str);

/// Checks an opening request; returns its `Sec-WebSocket-Key`.
fn check_request<'b>(
    config: &WsConfig,
    request: &httparse::Request<'_, 'b>,
) -> Result<&'b [u8], Refusal> {
    const BAD: u16 = 400;
    const BAD_TEXT: &str = "Bad Request";
    if request.method != Some("GET") {
        return Err((
            405,
            "Method Not Allowed",
            "a WebSocket upgrade is a GET request",
        ));
    }
    if request.version != Some(1) {
        return Err((BAD, BAD_TEXT, "a WebSocket upgrade needs HTTP/1.1"));
    }
    let path = request.path.unwrap_or("");
    let path = path.split_once('?').map_or(path, |(path, _query)| path);
    if path != config.path {
        return Err((404, "Not Found", "no WebSocket endpoint at this path"));
    }
    let mut host = false;
    let mut upgrade = false;
    let mut connection_upgrade = false;
    let mut version_13 = false;
    let mut key = None;
    let mut subprotocol = false;
    let mut origin = None;
    for header in request.headers.iter() {
        let name = header.name;
        let value = header.value;
        if name.eq_ignore_ascii_case("host") {
            host = true;
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version_13 = value.trim_ascii() == b"13";
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(value.trim_ascii());
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            subprotocol |= has_token(value, WS_SUBPROTOCOL);
        } else if name.eq_ignore_ascii_case("origin") {
            origin = Some(value.trim_ascii());
        }
    }
    if !upgrade {
        return Err((
            426,
            "Upgrade Required",
            "this endpoint speaks WebSocket only: send Upgrade: websocket",
        ));
    }
    if !version_13 {
        return Err((426, "Upgrade Required", "Sec-WebSocket-Version must be 13"));
    }
    if !host {
        return Err((BAD, BAD_TEXT, "the Host header is missing"));
    }
    if !connection_upgrade {
        return Err((BAD, BAD_TEXT, "Connection must include Upgrade"));
    }
    let key = key.ok_or((BAD, BAD_TEXT, "Sec-WebSocket-Key is missing"))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(key);
    if decoded.map_or(true, |bytes| bytes.len() != 16) {
        return Err((
            BAD,
            BAD_TEXT,
            "Sec-WebSocket-Key must be 16 bytes in base64",
        ));
    }
    if let Some(origin) = origin {
        let allowed = config.allowed_origins.is_empty()
            || config
                .allowed_origins
                .iter()
                .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin));
        if !allowed {
            return Err((403, "Forbidden", "this Origin is not allowed"));
        }
    }
    if !subprotocol {
        return Err((
            BAD,
            BAD_TEXT,
            "Sec-WebSocket-Protocol must offer holdfast.v1",
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests;
