//! Encoding: frames are written straight into a `BytesMut` or a caller's slice. The payload
//! archive is serialized in place after the header (no intermediate buffer, no scratch
//! allocation: payload structs borrow their data), then `len` is patched in.

use bytes::{BufMut, BytesMut};
use rkyv::{
    api::low::{to_bytes_in_with_alloc, LowSerializer},
    rancor::Failure,
    ser::{allocator::SubAllocator, writer::Buffer, Positional, Writer},
    Serialize,
};

use crate::header::{Header, Kind, HEADER_BYTES};

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

/// Appends one frame with an rkyv payload (`kind` must match the payload's layout; see
/// [`crate::payload`]). On error `out` is left as it was.
pub fn encode_frame<T>(
    out: &mut BytesMut,
    kind: Kind,
    flags: u16,
    id: u64,
    payload: &T,
    max_frame_bytes: u32,
) -> Result<usize, EncodeError>
where
    T: for<'a, 'b> Serialize<LowSerializer<AppendWriter<'a>, SubAllocator<'b>, Failure>>,
{
    let frame_start = out.len();
    out.put_bytes(0, HEADER_BYTES);
    let writer = AppendWriter {
        out: &mut *out,
        start: frame_start + HEADER_BYTES,
    };
    // Borrowed payload structs need no scratch space, so the empty sub-allocator never allocates.
    let written = to_bytes_in_with_alloc::<_, _, Failure>(payload, writer, SubAllocator::empty());
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

/// Writes one frame with an rkyv payload into the front of `buf`; returns its length.
pub fn encode_into_slice<T>(
    buf: &mut [u8],
    kind: Kind,
    flags: u16,
    id: u64,
    payload: &T,
    max_frame_bytes: u32,
) -> Result<usize, EncodeError>
where
    T: for<'a, 'b> Serialize<LowSerializer<Buffer<'a>, SubAllocator<'b>, Failure>>,
{
    let capacity = buf.len();
    let Some((_, body)) = buf.split_first_chunk_mut::<HEADER_BYTES>() else {
        return Err(EncodeError::BufferTooSmall { capacity });
    };
    let written =
        to_bytes_in_with_alloc::<_, _, Failure>(payload, Buffer::from(body), SubAllocator::empty())
            .map_err(|_| EncodeError::BufferTooSmall { capacity })?;
    let len = HEADER_BYTES + written.len();
    finish(&mut buf[..len], kind, flags, id, max_frame_bytes)
}
