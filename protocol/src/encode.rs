//! Encoding: frames are written straight into a `BytesMut` or a caller's slice. The payload
//! archive is serialized in place after the header (no intermediate buffer: payload structs
//! borrow their data; rkyv's scratch space is on the stack, see `SCRATCH_STACK_BYTES`), then
//! `len` is patched in.

use std::mem::MaybeUninit;

use bytes::{BufMut, BytesMut};
use rkyv::{
    api::low::{to_bytes_in_with_alloc, LowSerializer},
    rancor::Failure,
    ser::{allocator::SubAllocator, writer::Buffer, Positional, Writer},
    Serialize,
};

use crate::header::{Header, Kind, HEADER_BYTES};
use crate::payload::FramePayload;

/// Scratch space for rkyv resolvers, on the stack. Only a slice of structs with out-of-line data
/// needs any (the topic list of Subscribe and Unsubscribe: 8 bytes per topic), so 4 KiB covers
/// about 500 topics without allocating. A longer list retries once with a heap scratch of
/// `max_frame_bytes` (the encoder's only allocation): a list whose resolvers outgrow that could
/// not fit in a frame anyway, since each topic archives to at least 8 bytes.
const SCRATCH_STACK_BYTES: usize = 4096;

/// Why a frame could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("frame of {len} bytes exceeds max_frame_bytes {max_frame_bytes}")]
    TooLarge { len: usize, max_frame_bytes: u32 },
    #[error("output buffer of {capacity} bytes is too small for the frame")]
    BufferTooSmall { capacity: usize },
    #[error("{kind:?} frames carry an rkyv payload: use encode_frame")]
    NotRaw { kind: Kind },
}

/// A payload [`encode_frame`] can write: it names its kind ([`FramePayload`]) and serializes
/// through the append writer. Implemented for every payload type; callers use it as a bound.
pub trait EncodeFrame:
    FramePayload + for<'a, 'b> Serialize<LowSerializer<AppendWriter<'a>, SubAllocator<'b>, Failure>>
{
}

impl<T> EncodeFrame for T where
    T: FramePayload
        + for<'a, 'b> Serialize<LowSerializer<AppendWriter<'a>, SubAllocator<'b>, Failure>>
{
}

/// The rkyv writer behind [`encode_frame`]: appends to a `BytesMut`, reporting positions relative to the payload start (rkyv's relative
/// pointers are offsets inside the archive).
pub struct AppendWriter<'a> {
    out: &'a mut BytesMut,
    start: usize,
}

impl Positional for AppendWriter<'_> {
    fn pos(&self) -> usize {
        self.out.len() - self.start
    }
}

impl<E> Writer<E> for AppendWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.out.put_slice(bytes);
        Ok(())
    }
}

fn finish(
    out: &mut [u8],
    kind: Kind,
    flags: u16,
    id: u64,
    max_frame_bytes: u32,
) -> Result<usize, EncodeError> {
    let len = out.len();
    if len > max_frame_bytes as usize {
        return Err(EncodeError::TooLarge {
            len,
            max_frame_bytes,
        });
    }
    let mut header = Header::new(kind, flags, id);
    header.len = len as u32;
    let header_bytes: &mut [u8; HEADER_BYTES] = out.first_chunk_mut().expect("header written");
    header.write(header_bytes);
    Ok(len)
}

/// Appends one frame with an rkyv payload; the frame's kind is the payload type's
/// [`FramePayload::KIND`], so a kind that does not match its layout cannot be written. On error
/// `out` is left as it was.
pub fn encode_frame<T>(
    out: &mut BytesMut,
    flags: u16,
    id: u64,
    payload: &T,
    max_frame_bytes: u32,
) -> Result<usize, EncodeError>
where
    T: EncodeFrame,
{
    let kind = T::KIND;
    let frame_start = out.len();
    let mut scratch_stack = [MaybeUninit::<u8>::uninit(); SCRATCH_STACK_BYTES];
    let mut written = append_archive(
        out,
        frame_start,
        payload,
        SubAllocator::new(&mut scratch_stack),
    );
    if written.is_err() {
        // Only a topic list longer than the stack scratch gets here (see SCRATCH_STACK_BYTES).
        out.truncate(frame_start);
        let mut scratch_heap = vec![MaybeUninit::<u8>::uninit(); max_frame_bytes as usize];
        written = append_archive(
            out,
            frame_start,
            payload,
            SubAllocator::new(&mut scratch_heap),
        );
    }
    let result = match written {
        Ok(_) => finish(&mut out[frame_start..], kind, flags, id, max_frame_bytes),
        Err(_) => Err(EncodeError::TooLarge {
            len: usize::MAX,
            max_frame_bytes,
        }),
    };
    if result.is_err() {
        out.truncate(frame_start);
    }
    result
}

/// Appends a zeroed header and then the archive of `payload` to `out`.
fn append_archive<T>(
    out: &mut BytesMut,
    frame_start: usize,
    payload: &T,
    scratch: SubAllocator<'_>,
) -> Result<(), Failure>
where
    T: for<'a, 'b> Serialize<LowSerializer<AppendWriter<'a>, SubAllocator<'b>, Failure>>,
{
    out.put_bytes(0, HEADER_BYTES);
    let writer = AppendWriter {
        out,
        start: frame_start + HEADER_BYTES,
    };
    to_bytes_in_with_alloc::<_, _, Failure>(payload, writer, scratch).map(drop)
}

/// Appends one frame whose payload is raw bytes: Echo (any bytes), or an empty payload for
/// Ping, Pong, Ack and the anonymous Hello.
pub fn encode_raw(
    out: &mut BytesMut,
    kind: Kind,
    flags: u16,
    id: u64,
    payload: &[u8],
    max_frame_bytes: u32,
) -> Result<usize, EncodeError> {
    let raw_allowed = kind == Kind::Echo
        || (payload.is_empty()
            && matches!(kind, Kind::Ping | Kind::Pong | Kind::Ack | Kind::Hello));
    if !raw_allowed {
        return Err(EncodeError::NotRaw { kind });
    }
    let len = HEADER_BYTES + payload.len();
    if len > max_frame_bytes as usize {
        return Err(EncodeError::TooLarge {
            len,
            max_frame_bytes,
        });
    }
    let frame_start = out.len();
    out.reserve(len);
    out.put_bytes(0, HEADER_BYTES);
    out.put_slice(payload);
    finish(&mut out[frame_start..], kind, flags, id, max_frame_bytes)
}

/// Writes one frame with an rkyv payload into the front of `buf` (kind from
/// [`FramePayload::KIND`]); returns its length.
pub fn encode_into_slice<T>(
    buf: &mut [u8],
    flags: u16,
    id: u64,
    payload: &T,
    max_frame_bytes: u32,
) -> Result<usize, EncodeError>
where
    T: FramePayload + for<'a, 'b> Serialize<LowSerializer<Buffer<'a>, SubAllocator<'b>, Failure>>,
{
    let kind = T::KIND;
    let capacity = buf.len();
    let Some((_, body)) = buf.split_first_chunk_mut::<HEADER_BYTES>() else {
        return Err(EncodeError::BufferTooSmall { capacity });
    };
    let mut scratch_stack = [MaybeUninit::<u8>::uninit(); SCRATCH_STACK_BYTES];
    let written = to_bytes_in_with_alloc::<_, _, Failure>(
        payload,
        Buffer::from(&mut *body),
        SubAllocator::new(&mut scratch_stack),
    )
    .map(|buffer| buffer.len())
    .or_else(|failure| {
        // A full buffer, or a topic list longer than the stack scratch. The latter needs a body
        // above SCRATCH_STACK_BYTES, so a small buffer's failure is final and never allocates;
        // otherwise retry once with a heap scratch, and a second failure means a full buffer.
        if body.len() <= SCRATCH_STACK_BYTES {
            return Err(failure);
        }
        let mut scratch_heap =
            vec![MaybeUninit::<u8>::uninit(); body.len().min(max_frame_bytes as usize)];
        to_bytes_in_with_alloc::<_, _, Failure>(
            payload,
            Buffer::from(&mut *body),
            SubAllocator::new(&mut scratch_heap),
        )
        .map(|buffer| buffer.len())
    })
    .map_err(|_| EncodeError::BufferTooSmall { capacity })?;
    let len = HEADER_BYTES + written;
    finish(&mut buf[..len], kind, flags, id, max_frame_bytes)
}
