//! The Holdfast wire protocol: a fixed 16-byte little-endian header followed by a payload.
//!
//! Data path through this crate, top to bottom:
//! - [`header`]: the 16-byte header, frame kinds and flags, checked against limits.
//! - [`payload`]: the rkyv payload layouts of every kind (borrowed on the encode side,
//!   validated and read in place on the decode side).
//! - [`decode`]: a streaming decoder that yields borrowed, validated [`Frame`]s from bytes in any
//!   split, buffering at most `max_frame_bytes`.
//! - [`encode`]: writes frames into a `BytesMut` or a caller's slice without intermediate
//!   allocation.
//! - [`token`]: the HMAC-SHA256 auth token carried in Hello.
//! - [`error`]: the stable error codes carried in Error frames.
//!
//! This crate knows nothing about sockets, rings or sessions.

#![forbid(unsafe_code)]

mod codes;
pub mod decode;
pub mod encode;
pub mod error;
pub mod header;
pub mod payload;
pub mod token;

pub use decode::{next_frame, DecodeError, Decoder, Frame, Payload};
pub use encode::{encode_frame, encode_into_slice, encode_raw, EncodeError, EncodeFrame};
pub use error::ErrorCode;
pub use header::{
    Header, Kind, FLAG_ACK_REQUESTED, HEADER_BYTES, MAX_FRAME_BYTES_DEFAULT, VERSION,
};
