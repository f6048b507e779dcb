//! Feeds arbitrary bytes to the decoder and checks its invariants.
//!
//! The first input byte picks the decoder's `max_frame_bytes` and the sizes of the pieces the
//! rest is cut into (so one input explores one split); the same bytes also go through
//! `next_frame` on one contiguous buffer. Both paths must yield the same frames and the same
//! error, never buffer `max_frame_bytes` or more, and every frame's `bytes.len()` must equal its
//! header's `len`.
#![no_main]

use std::ops::ControlFlow;

use holdfast_protocol::{next_frame, DecodeError, Decoder, Frame, HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

/// Small limits reach LengthTooLarge and full frames often; the default exercises big frames.
const MAX_FRAME_BYTES_CHOICES: [u32; 4] = [16, 64, 1024, 65_536];

fn check_frame(frame: &Frame<'_>) -> Vec<u8> {
    assert_eq!(frame.bytes.len(), frame.header.len as usize);
    assert!(frame.bytes.len() >= HEADER_BYTES);
    frame.bytes.to_vec()
}

/// Frames (as bytes) and the error, if any, from one contiguous buffer via `next_frame`.
fn contiguous(input: &[u8], max_frame_bytes: u32) -> (Vec<Vec<u8>>, Option<DecodeError>) {
    let mut frames = Vec::new();
    let mut rest = input;
    loop {
        match next_frame(rest, max_frame_bytes) {
            Ok(Some(frame)) => {
                frames.push(check_frame(&frame));
                rest = &rest[frame.bytes.len()..];
            }
            Ok(None) => return (frames, None),
            Err(error) => return (frames, Some(error)),
        }
    }
}

/// The same through a `Decoder` fed in pieces of 1..=`piece_max` bytes (cycling lengths).
fn streamed(
    input: &[u8],
    max_frame_bytes: u32,
    piece_max: usize,
) -> (Vec<Vec<u8>>, Option<DecodeError>) {
    let mut decoder = Decoder::new(max_frame_bytes);
    let mut frames = Vec::new();
    let mut offset = 0;
    let mut piece = 1;
    while offset < input.len() {
        let end = (offset + piece).min(input.len());
        let fed = decoder.feed(&input[offset..end], |frame| {
            frames.push(check_frame(&frame));
            ControlFlow::Continue(())
        });
        if let Err(error) = fed {
            assert!(decoder.buffered_bytes() <= max_frame_bytes as usize);
            return (frames, Some(error));
        }
        assert!(decoder.buffered_bytes() < max_frame_bytes as usize);
        offset = end;
        piece = piece % piece_max + 1;
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let max_frame_bytes = MAX_FRAME_BYTES_CHOICES[usize::from(control & 0b11)];
    let piece_max = usize::from(control >> 2) + 1;
    let whole = contiguous(input, max_frame_bytes);
    let split = streamed(input, max_frame_bytes, piece_max);
    assert_eq!(
        whole, split,
        "split decoding differs from contiguous decoding"
    );
});
