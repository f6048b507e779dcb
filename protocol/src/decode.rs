//! Decoding: [`next_frame`] finds one complete frame at the start of a contiguous buffer, and
//! [`Decoder`] turns a byte stream in any split into frames, keeping only an incomplete tail
//! (never more than `max_frame_bytes`). Frames are borrowed views; payloads are validated
//! archives read in place.

use std::ops::ControlFlow;

use rkyv::{api::low::access, rancor::Failure};

use crate::error::ErrorCode;
use crate::header::{Header, Kind, HEADER_BYTES};
use crate::payload::{
    ErrorView, EventView, GoodbyeView, HelloView, PushView, RequestView, ResponseView, TopicsView,
    WelcomeView,
};

/// Why a byte stream is not a valid frame sequence. Each maps to a stable [`ErrorCode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame version {version} is not supported: send version 1")]
    BadVersion { version: u8 },
    #[error("frame length {len} is below the 16-byte header")]
    LengthTooSmall { len: u32 },
    #[error("frame length {len} is above max_frame_bytes {max_frame_bytes}: split the payload")]
    LengthTooLarge { len: u32, max_frame_bytes: u32 },
    #[error("reserved flag bits {flags:#06x} are set: only bit 0 (ack requested) is defined")]
    ReservedFlags { flags: u16 },
    #[error("frame kind {kind} is unknown: kinds are 1..=14")]
    UnknownKind { kind: u8 },
    #[error(
        "payload of {kind:?} frame {id} is not a valid archive of its layout (docs/PROTOCOL.md)"
    )]
    InvalidArchive { kind: Kind, id: u64 },
}

impl DecodeError {
    /// The stable code sent back in an Error frame.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::BadVersion { .. } => ErrorCode::BadVersion,
            DecodeError::LengthTooSmall { .. } => ErrorCode::LengthTooSmall,
            DecodeError::LengthTooLarge { .. } => ErrorCode::LengthTooLarge,
            DecodeError::ReservedFlags { .. } => ErrorCode::ReservedFlags,
            DecodeError::UnknownKind { .. } => ErrorCode::UnknownKind,
            DecodeError::InvalidArchive { .. } => ErrorCode::InvalidArchive,
        }
    }

    /// The id of the frame the error is about, for the Error frame sent back: the offending
    /// frame's id once its header parsed (a bad payload), 0 when no header parsed.
    pub fn frame_id(&self) -> u64 {
        match self {
            DecodeError::InvalidArchive { id, .. } => *id,
            _ => 0,
        }
    }
}

/// A validated payload, read in place.
#[derive(Clone, Copy)]
pub enum Payload<'a> {
    /// `None` is the anonymous Hello (empty payload).
    Hello(Option<&'a HelloView>),
    Welcome(&'a WelcomeView),
    Ping,
    Pong,
    /// Opaque bytes.
    Echo(&'a [u8]),
    Request(&'a RequestView),
    Response(&'a ResponseView),
    Event(&'a EventView),
    Push(&'a PushView),
    Subscribe(&'a TopicsView),
    Unsubscribe(&'a TopicsView),
    Ack,
    Error(&'a ErrorView),
    Goodbye(&'a GoodbyeView),
}

/// One complete, validated frame borrowed from the buffer it was decoded from.
#[derive(Clone, Copy)]
pub struct Frame<'a> {
    pub header: Header,
    /// The whole frame, header included, exactly as received (Echo replies send this back).
    pub bytes: &'a [u8],
    pub payload: Payload<'a>,
}

impl std::fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

fn archive<'a, T>(kind: Kind, payload: &'a [u8]) -> Result<&'a T, DecodeError>
where
    T: rkyv::Portable
        + for<'v> rkyv::bytecheck::CheckBytes<rkyv::api::low::LowValidator<'v, Failure>>,
{
    access::<T, Failure>(payload).map_err(|_| DecodeError::InvalidArchive { kind, id: 0 })
}

fn empty(
    kind: Kind,
    payload: &[u8],
    value: Payload<'static>,
) -> Result<Payload<'static>, DecodeError> {
    if payload.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError::InvalidArchive { kind, id: 0 })
    }
}

/// Validates `payload` as the layout of `kind`.
pub fn validate_payload(kind: Kind, payload: &[u8]) -> Result<Payload<'_>, DecodeError> {
    Ok(match kind {
        Kind::Hello if payload.is_empty() => Payload::Hello(None),
        Kind::Hello => Payload::Hello(Some(archive(kind, payload)?)),
        Kind::Welcome => Payload::Welcome(archive(kind, payload)?),
        Kind::Ping => empty(kind, payload, Payload::Ping)?,
        Kind::Pong => empty(kind, payload, Payload::Pong)?,
        Kind::Echo => Payload::Echo(payload),
        Kind::Request => Payload::Request(archive(kind, payload)?),
        Kind::Response => Payload::Response(archive(kind, payload)?),
        Kind::Event => Payload::Event(archive(kind, payload)?),
        Kind::Push => Payload::Push(archive(kind, payload)?),
        Kind::Subscribe => Payload::Subscribe(archive(kind, payload)?),
        Kind::Unsubscribe => Payload::Unsubscribe(archive(kind, payload)?),
        Kind::Ack => empty(kind, payload, Payload::Ack)?,
        Kind::Error => Payload::Error(archive(kind, payload)?),
        Kind::Goodbye => Payload::Goodbye(archive(kind, payload)?),
    })
}

/// Validates the payload of the frame `header` heads; an invalid one names the frame's id.
fn payload_of<'a>(header: &Header, payload: &'a [u8]) -> Result<Payload<'a>, DecodeError> {
    validate_payload(header.kind, payload).map_err(|error| match error {
        DecodeError::InvalidArchive { kind, .. } => DecodeError::InvalidArchive {
            kind,
            id: header.id,
        },
        other => other,
    })
}

/// Decodes the frame at the start of `buf`. `Ok(None)` means more bytes are needed; a bad
/// header is reported as soon as its 16 bytes are present, before the body arrives.
pub fn next_frame(buf: &[u8], max_frame_bytes: u32) -> Result<Option<Frame<'_>>, DecodeError> {
    let Some(header_bytes) = buf.first_chunk::<HEADER_BYTES>() else {
        return Ok(None);
    };
    let header = Header::parse(header_bytes, max_frame_bytes)?;
    let Some(bytes) = buf.get(..header.len as usize) else {
        return Ok(None);
    };
    let payload = payload_of(&header, &bytes[HEADER_BYTES..])?;
    Ok(Some(Frame {
        header,
        bytes,
        payload,
    }))
}

/// What [`Decoder::feed`] did with its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fed {
    /// All input was consumed: decoded into frames or kept as an incomplete tail.
    All,
    /// The callback asked to stop. `consumed` input bytes were used; the rest was not looked at
    /// and is not buffered (feed `input[consumed..]` again to resume).
    Stopped { consumed: usize },
}

/// A streaming decoder. Holds the incomplete tail of the stream, at most `max_frame_bytes - 1`
/// bytes; complete frames in the input are decoded in place without copying.
#[derive(Debug)]
pub struct Decoder {
    partial: Vec<u8>,
    max_frame_bytes: u32,
}

impl Decoder {
    pub fn new(max_frame_bytes: u32) -> Decoder {
        assert!(max_frame_bytes as usize >= HEADER_BYTES);
        assert!(max_frame_bytes <= crate::header::MAX_FRAME_BYTES_CEILING);
        Decoder {
            partial: Vec::new(),
            max_frame_bytes,
        }
    }

    pub fn max_frame_bytes(&self) -> u32 {
        self.max_frame_bytes
    }

    /// Bytes of an incomplete frame held from earlier input.
    pub fn buffered_bytes(&self) -> usize {
        self.partial.len()
    }

    /// Drops any buffered tail and releases its memory beyond `keep_capacity_bytes`.
    pub fn reset(&mut self, keep_capacity_bytes: usize) {
        self.partial.clear();
        self.partial.shrink_to(keep_capacity_bytes);
    }

    /// Feeds `input`; calls `on_frame` for each complete frame in stream order. On a decode
    /// error the stream is unusable (the caller closes it); no frame after the bad one is seen.
    pub fn feed<F>(&mut self, input: &[u8], mut on_frame: F) -> Result<Fed, DecodeError>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        let mut consumed = 0;
        if !self.partial.is_empty() {
            let (taken, flow) = self.complete_partial(input, &mut on_frame)?;
            consumed = taken;
            match flow {
                None => return Ok(Fed::All),
                Some(ControlFlow::Break(())) => return Ok(Fed::Stopped { consumed }),
                Some(ControlFlow::Continue(())) => {}
            }
        }
        while let Some(frame) = next_frame(&input[consumed..], self.max_frame_bytes)? {
            consumed += frame.bytes.len();
            if on_frame(frame).is_break() {
                return Ok(Fed::Stopped { consumed });
            }
        }
        self.partial.extend_from_slice(&input[consumed..]);
        assert!(self.partial.len() < self.max_frame_bytes as usize);
        Ok(Fed::All)
    }

    /// Moves bytes from `input` into the held tail until it is one whole frame, then hands that
    /// frame to `on_frame`. Returns the input bytes taken and, if a frame was completed, the
    /// callback's answer (`None`: all input went into the tail and it is still incomplete).
    fn complete_partial<F>(
        &mut self,
        input: &[u8],
        on_frame: &mut F,
    ) -> Result<(usize, Option<ControlFlow<()>>), DecodeError>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        let mut taken = 0;
        if self.partial.len() < HEADER_BYTES {
            taken = (HEADER_BYTES - self.partial.len()).min(input.len());
            self.partial.extend_from_slice(&input[..taken]);
            if self.partial.len() < HEADER_BYTES {
                return Ok((taken, None));
            }
        }
        let header_bytes = self
            .partial
            .first_chunk::<HEADER_BYTES>()
            .expect("16 bytes held");
        let header = Header::parse(header_bytes, self.max_frame_bytes)?;
        let missing = header.len as usize - self.partial.len();
        let more = missing.min(input.len() - taken);
        self.partial.extend_from_slice(&input[taken..taken + more]);
        taken += more;
        if more < missing {
            return Ok((taken, None));
        }
        debug_assert_eq!(self.partial.len(), header.len as usize);
        let payload = payload_of(&header, &self.partial[HEADER_BYTES..])?;
        let flow = on_frame(Frame {
            header,
            bytes: &self.partial,
            payload,
        });
        self.partial.clear();
        Ok((taken, Some(flow)))
    }
}
