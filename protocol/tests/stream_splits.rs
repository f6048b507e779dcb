//! The decoder yields the same frames however a byte stream is split, never holds
//! `max_frame_bytes` or more, and resumes after a callback stops it.

mod common;

use std::ops::ControlFlow;

use common::{
    decode_contiguous, decode_pieces, encode_stream, one_of_every_kind, Body, OwnedFrame, MAX,
};
use holdfast_protocol::{decode::Fed, Decoder, Kind, HEADER_BYTES};

/// Five frames of mixed kinds and sizes: a full Hello, a 64-byte Echo, a Push, a Subscribe and
/// a Goodbye.
fn five_frames() -> (Vec<Body>, Vec<u8>) {
    let samples = one_of_every_kind();
    let bodies = vec![
        samples[1].clone(),
        samples[5].clone(),
        Body::Push {
            topic: "prices".into(),
            seq: 7,
            payload: vec![0x5a; 100],
        },
        samples[10].clone(),
        samples[14].clone(),
    ];
    let stream = encode_stream(&bodies);
    (bodies, stream)
}

fn expected_frames() -> Vec<OwnedFrame> {
    let (bodies, stream) = five_frames();
    let (frames, error) = decode_contiguous(&stream, MAX);
    assert_eq!(error, None);
    assert_eq!(
        frames
            .iter()
            .map(|frame| frame.body.clone())
            .collect::<Vec<_>>(),
        bodies
    );
    frames
}

#[test]
fn every_two_piece_split_of_a_five_frame_stream_yields_identical_frames() {
    let (_, stream) = five_frames();
    let expected = expected_frames();
    for cut in 0..=stream.len() {
        let (frames, error) = decode_pieces([&stream[..cut], &stream[cut..]], MAX);
        assert_eq!(error, None, "cut at {cut}");
        assert_eq!(frames, expected, "cut at {cut}");
    }
}

#[test]
fn three_piece_splits_of_a_five_frame_stream_yield_identical_frames() {
    let (_, stream) = five_frames();
    let expected = expected_frames();
    let mut pairs = 0;
    for first in 0..=stream.len() {
        // Every first cut with every third second cut: ~30k pairs, all frame boundaries included.
        for second in (first..=stream.len()).step_by(3) {
            let pieces = [&stream[..first], &stream[first..second], &stream[second..]];
            let (frames, error) = decode_pieces(pieces, MAX);
            assert_eq!(error, None, "cuts at {first} and {second}");
            assert_eq!(frames, expected, "cuts at {first} and {second}");
            pairs += 1;
        }
    }
    assert!(pairs > 10_000, "{pairs} cut pairs");
}

#[test]
fn one_byte_at_a_time_yields_identical_frames() {
    let (_, stream) = five_frames();
    let (frames, error) = decode_pieces(stream.chunks(1), MAX);
    assert_eq!(error, None);
    assert_eq!(frames, expected_frames());
}

#[test]
fn empty_feeds_between_pieces_change_nothing() {
    let (_, stream) = five_frames();
    let mut pieces: Vec<&[u8]> = Vec::new();
    for chunk in stream.chunks(7) {
        pieces.extend([&[][..], chunk, &[][..]]);
    }
    let (frames, error) = decode_pieces(pieces, MAX);
    assert_eq!(error, None);
    assert_eq!(frames, expected_frames());
}

#[test]
fn decoder_never_holds_max_frame_bytes_even_for_a_frame_of_exactly_that_size() {
    let max = 256;
    let frame = common::raw_frame(max, 1, Kind::Echo as u8, 0, 1, &[0x11; 256 - HEADER_BYTES]);
    let mut decoder = Decoder::new(max);
    let mut seen = 0;
    for (index, byte) in frame.iter().enumerate() {
        let fed = decoder.feed(std::slice::from_ref(byte), |frame| {
            assert_eq!(frame.bytes.len(), max as usize);
            seen += 1;
            ControlFlow::Continue(())
        });
        assert_eq!(fed, Ok(Fed::All));
        let held = if index + 1 == frame.len() {
            0
        } else {
            index + 1
        };
        assert_eq!(decoder.buffered_bytes(), held);
        assert!(decoder.buffered_bytes() < max as usize);
    }
    assert_eq!(seen, 1);
}

#[test]
fn decoder_holds_only_the_incomplete_tail_of_a_read() {
    let (_, stream) = five_frames();
    let expected = expected_frames();
    let first_two = expected[0].bytes.len() + expected[1].bytes.len();
    let mut decoder = Decoder::new(MAX);
    let mut count = 0;
    let fed = decoder.feed(&stream[..first_two + 5], |_| {
        count += 1;
        ControlFlow::Continue(())
    });
    assert_eq!(fed, Ok(Fed::All));
    assert_eq!(count, 2);
    assert_eq!(
        decoder.buffered_bytes(),
        5,
        "complete frames are decoded in place, not copied"
    );
    decoder.reset(0);
    assert_eq!(decoder.buffered_bytes(), 0);
}

#[test]
fn stopped_feed_resumes_from_consumed_without_losing_or_repeating_frames() {
    let (_, stream) = five_frames();
    let expected = expected_frames();
    let mut decoder = Decoder::new(MAX);
    let mut frames = Vec::new();
    let mut offset = 0;
    let mut stops = 0;
    // Stop after every frame; each call resumes at input[consumed..].
    loop {
        let fed = decoder
            .feed(&stream[offset..], |frame| {
                frames.push(OwnedFrame::from_frame(&frame));
                ControlFlow::Break(())
            })
            .unwrap();
        match fed {
            Fed::Stopped { consumed } => {
                assert_eq!(consumed, frames.last().unwrap().bytes.len());
                assert_eq!(
                    decoder.buffered_bytes(),
                    0,
                    "unlooked-at input is not buffered"
                );
                offset += consumed;
                stops += 1;
            }
            Fed::All => break,
        }
    }
    assert_eq!(stops, 5);
    assert_eq!(offset, stream.len());
    assert_eq!(frames, expected);
}

#[test]
fn stop_on_a_frame_completed_from_the_held_tail_reports_only_the_bytes_it_took() {
    let (_, stream) = five_frames();
    let expected = expected_frames();
    let first_len = expected[0].bytes.len();
    let mut decoder = Decoder::new(MAX);
    assert_eq!(
        decoder.feed(&stream[..10], |_| panic!("incomplete")),
        Ok(Fed::All)
    );
    assert_eq!(decoder.buffered_bytes(), 10);
    let rest = &stream[10..];
    let mut frames = Vec::new();
    let fed = decoder.feed(rest, |frame| {
        frames.push(OwnedFrame::from_frame(&frame));
        ControlFlow::Break(())
    });
    assert_eq!(
        fed,
        Ok(Fed::Stopped {
            consumed: first_len - 10
        })
    );
    assert_eq!(decoder.buffered_bytes(), 0);
    let (more, error) = {
        let mut more = Vec::new();
        let fed = decoder.feed(&rest[first_len - 10..], |frame| {
            more.push(OwnedFrame::from_frame(&frame));
            ControlFlow::Continue(())
        });
        (more, fed.err())
    };
    assert_eq!(error, None);
    frames.extend(more);
    assert_eq!(frames, expected);
}
