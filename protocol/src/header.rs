//! The fixed 16-byte frame header (little-endian):
//!
//! | offset | type | field   |
//! |--------|------|---------|
//! | 0      | u32  | len     | total frame length, header included
//! | 4      | u8   | version | [`VERSION`]
//! | 5      | u8   | kind    | [`Kind`]
//! | 6      | u16  | flags   | bit 0 = ack requested, other bits reserved (0)
//! | 8      | u64  | id      | correlation id

use crate::decode::DecodeError;
use crate::wire_codes;

/// Bytes in a frame header; also the smallest legal `len`.
pub const HEADER_BYTES: usize = 16;
/// The only protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Default upper bound on `len` (header included).
pub const MAX_FRAME_BYTES_DEFAULT: u32 = 65_536;
/// Hard ceiling for any configured `max_frame_bytes`: keeps per-connection partial buffers and
/// send batches bounded even when an operator raises the limit.
pub const MAX_FRAME_BYTES_CEILING: u32 = 16 * 1024 * 1024;
/// Flag bit 0: the sender asks for an Ack once the frame is accepted.
pub const FLAG_ACK_REQUESTED: u16 = 1;
/// Every flag bit this version defines; the rest are reserved and must be 0.
pub const FLAGS_KNOWN: u16 = FLAG_ACK_REQUESTED;

wire_codes! {
    /// The kind byte of a frame.
    pub enum Kind: u8, from_u8 {
        Hello = 1 => "hello",
        Welcome = 2 => "welcome",
        Ping = 3 => "ping",
        Pong = 4 => "pong",
        Echo = 5 => "echo",
        Request = 6 => "request",
        Response = 7 => "response",
        Event = 8 => "event",
        Push = 9 => "push",
        Subscribe = 10 => "subscribe",
        Unsubscribe = 11 => "unsubscribe",
        Ack = 12 => "ack",
        Error = 13 => "error",
        Goodbye = 14 => "goodbye",
    }
}

/// A parsed, checked header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub version: u8,
    pub kind: Kind,
    pub flags: u16,
    pub id: u64,
}

impl Header {
    pub fn new(kind: Kind, flags: u16, id: u64) -> Header {
        Header {
            len: HEADER_BYTES as u32,
            version: VERSION,
            kind,
            flags,
            id,
        }
    }

    pub fn ack_requested(&self) -> bool {
        self.flags & FLAG_ACK_REQUESTED != 0
    }

    /// Payload length in bytes.
    pub fn payload_bytes(&self) -> usize {
        self.len as usize - HEADER_BYTES
    }

    /// Parses and checks a header. Checks run in wire order (len, version, kind, flags) so a
    /// given bad input always reports the same error.
    pub fn parse(bytes: &[u8; HEADER_BYTES], max_frame_bytes: u32) -> Result<Header, DecodeError> {
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if (len as usize) < HEADER_BYTES {
            return Err(DecodeError::LengthTooSmall { len });
        }
        if len > max_frame_bytes {
            return Err(DecodeError::LengthTooLarge {
                len,
                max_frame_bytes,
            });
        }
        let version = bytes[4];
        if version != VERSION {
            return Err(DecodeError::BadVersion { version });
        }
        let kind = Kind::from_u8(bytes[5]).ok_or(DecodeError::UnknownKind { kind: bytes[5] })?;
        let flags = u16::from_le_bytes([bytes[6], bytes[7]]);
        if flags & !FLAGS_KNOWN != 0 {
            return Err(DecodeError::ReservedFlags { flags });
        }
        let mut id_bytes = [0u8; 8];
        id_bytes.copy_from_slice(&bytes[8..16]);
        Ok(Header {
            len,
            version,
            kind,
            flags,
            id: u64::from_le_bytes(id_bytes),
        })
    }

    /// Writes the header in wire format.
    pub fn write(&self, out: &mut [u8; HEADER_BYTES]) {
        out[0..4].copy_from_slice(&self.len.to_le_bytes());
        out[4] = self.version;
        out[5] = self.kind as u8;
        out[6..8].copy_from_slice(&self.flags.to_le_bytes());
        out[8..16].copy_from_slice(&self.id.to_le_bytes());
    }
}
