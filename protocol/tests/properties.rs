//! Property tests: arbitrary input in arbitrary splits never panics, never buffers
//! `max_frame_bytes`, and decodes exactly as the same bytes do in one contiguous buffer.

mod common;

use common::{decode_contiguous, decode_pieces, encode_stream, Body, MAX};
use holdfast_protocol::payload::{TopicResumed, Welcome};
use proptest::{collection::vec, prelude::*, sample::Index};

/// Cuts `bytes` at the given points (each mapped into 0..=len, then sorted).
fn split_at<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::with_capacity(points.len() + 1);
    let mut start = 0;
    for point in points {
        pieces.push(&bytes[start..point]);
        start = point;
    }
    pieces.push(&bytes[start..]);
    pieces
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z.]{0,12}", "\\PC{0,6}"]
}

fn bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max_len)
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        Just(Body::AnonymousHello),
        (text(), bytes(48), bytes(4), any::<u32>()).prop_map(
            |(client_id, token, versions, heartbeat_ms)| {
                Body::Hello {
                    client_id,
                    token,
                    versions,
                    heartbeat_ms,
                }
            }
        ),
        any::<(u64, u32, u32, u32, u32)>().prop_map(|(session_id, a, b, c, d)| Body::Welcome(
            Welcome {
                session_id,
                heartbeat_ms: a,
                heartbeat_timeout_ms: b,
                max_frame_bytes: c,
                max_inflight_requests: d,
            }
        )),
        Just(Body::Ping),
        Just(Body::Pong),
        bytes(200).prop_map(Body::Echo),
        (text(), bytes(64)).prop_map(|(method, body)| Body::Request { method, body }),
        bytes(64).prop_map(|body| Body::Response { body }),
        (text(), bytes(64)).prop_map(|(topic, payload)| Body::Event { topic, payload }),
        (text(), any::<u64>(), bytes(200)).prop_map(|(topic, seq, payload)| Body::Push {
            topic,
            seq,
            payload
        }),
        vec(text(), 0..6).prop_map(Body::Subscribe),
        vec(text(), 0..6).prop_map(Body::Unsubscribe),
        Just(Body::Ack),
        vec((text(), any::<u64>(), any::<u64>()), 0..6).prop_map(Body::SubscribeResume),
        vec(any::<(u64, u64, u64, u8)>(), 1..6).prop_map(|topics| Body::SubscribeAck(
            topics
                .into_iter()
                .map(|(epoch, seq, oldest_seq, recovered)| TopicResumed {
                    epoch,
                    seq,
                    oldest_seq,
                    recovered
                })
                .collect()
        )),
        (any::<u16>(), text()).prop_map(|(code, reason)| Body::Error { code, reason }),
        (text(), any::<u32>()).prop_map(|(reason, reconnect_after_ms)| Body::Goodbye {
            reason,
            reconnect_after_ms
        }),
    ]
}

/// A limit small enough that arbitrary headers often fit it, or the default.
fn max_frame_bytes() -> impl Strategy<Value = u32> {
    prop_oneof![Just(16u32), Just(64), Just(512), Just(MAX)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_in_arbitrary_splits_never_panic_and_decode_as_one_buffer_does(
        input in bytes(600),
        cuts in vec(any::<Index>(), 0..12),
        max in max_frame_bytes(),
    ) {
        // decode_pieces asserts buffered_bytes < max after every successful feed.
        let split = decode_pieces(split_at(&input, &cuts), max);
        prop_assert_eq!(split, decode_contiguous(&input, max));
    }

    #[test]
    fn corrupted_valid_streams_yield_frames_then_at_most_one_error(
        bodies in vec(body(), 1..6),
        flips in vec((any::<Index>(), any::<u8>()), 1..4),
        cuts in vec(any::<Index>(), 0..8),
    ) {
        let mut stream = encode_stream(&bodies);
        for (at, byte) in &flips {
            let at = at.index(stream.len());
            stream[at] = *byte;
        }
        let (frames, error) = decode_pieces(split_at(&stream, &cuts), MAX);
        prop_assert_eq!((frames.clone(), error), decode_contiguous(&stream, MAX));
        let decoded_bytes: usize = frames.iter().map(|frame| frame.bytes.len()).sum();
        prop_assert!(decoded_bytes <= stream.len());
    }

    #[test]
    fn valid_frame_sequences_round_trip_under_arbitrary_splits(
        bodies in vec(body(), 0..8),
        cuts in vec(any::<Index>(), 0..16),
    ) {
        let stream = encode_stream(&bodies);
        let (frames, error) = decode_pieces(split_at(&stream, &cuts), MAX);
        prop_assert_eq!(error, None);
        let decoded: Vec<Body> = frames.iter().map(|frame| frame.body.clone()).collect();
        prop_assert_eq!(decoded, bodies);
        let rejoined: Vec<u8> = frames.iter().flat_map(|frame| frame.bytes.iter().copied()).collect();
        prop_assert_eq!(rejoined, stream);
    }
}
