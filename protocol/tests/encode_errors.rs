//! The encoder refuses what it cannot write and leaves the caller's buffer as it was.

mod common;

use bytes::BytesMut;
use common::{Body, MAX};
use holdfast_protocol::{
    encode_frame, encode_into_slice, encode_raw,
    payload::{Push, Subscribe, TopicName},
    EncodeError, Kind, HEADER_BYTES,
};

#[test]
fn encode_raw_refuses_every_kind_with_an_archived_payload() {
    let mut out = BytesMut::new();
    for kind in Kind::ALL {
        let raw_ok = matches!(
            kind,
            Kind::Echo | Kind::Ping | Kind::Pong | Kind::Ack | Kind::Hello
        );
        let result = encode_raw(&mut out, kind, 0, 1, &[], MAX);
        if raw_ok {
            assert_eq!(result, Ok(HEADER_BYTES), "{kind:?}");
        } else {
            assert_eq!(result, Err(EncodeError::NotRaw { kind }), "{kind:?}");
        }
    }
    assert_eq!(out.len(), 5 * HEADER_BYTES, "refused kinds wrote nothing");
}

#[test]
fn encode_raw_refuses_bytes_for_kinds_whose_raw_payload_must_be_empty() {
    let mut out = BytesMut::new();
    for kind in [Kind::Ping, Kind::Pong, Kind::Ack, Kind::Hello] {
        assert_eq!(
            encode_raw(&mut out, kind, 0, 1, b"x", MAX),
            Err(EncodeError::NotRaw { kind })
        );
    }
    assert!(out.is_empty());
}

#[test]
fn too_large_echo_leaves_the_bytes_mut_unchanged() {
    let mut out = BytesMut::new();
    Body::Ping.encode(&mut out, 0, 1, MAX).unwrap();
    let before = out.to_vec();
    let payload = vec![0u8; 1024 - HEADER_BYTES + 1];
    let error = encode_raw(&mut out, Kind::Echo, 0, 2, &payload, 1024).unwrap_err();
    assert_eq!(
        error,
        EncodeError::TooLarge {
            len: 1025,
            max_frame_bytes: 1024
        }
    );
    assert_eq!(&out[..], &before[..]);
    assert_eq!(
        encode_raw(&mut out, Kind::Echo, 0, 2, &payload[1..], 1024),
        Ok(1024),
        "exactly max fits"
    );
}

#[test]
fn too_large_push_leaves_the_bytes_mut_unchanged() {
    let mut out = BytesMut::new();
    Body::Ack.encode(&mut out, 0, 1, MAX).unwrap();
    let before = out.to_vec();
    let payload = vec![0u8; 2048];
    let push = Push {
        topic: "t",
        seq: 1,
        payload: &payload,
    };
    let error = encode_frame(&mut out, 0, 2, &push, 1024).unwrap_err();
    let EncodeError::TooLarge {
        len,
        max_frame_bytes: 1024,
    } = error
    else {
        panic!("{error:?}")
    };
    assert!(len > 2048, "reports the frame's real length, got {len}");
    assert_eq!(&out[..], &before[..]);
}

#[test]
fn too_large_topic_list_leaves_the_bytes_mut_unchanged() {
    // 20,000 topics outgrow even the heap scratch sized at max_frame_bytes.
    let names: Vec<String> = (0..20_000).map(|n| format!("{n}")).collect();
    let topics: Vec<_> = names.iter().map(|name| TopicName { name }).collect();
    let mut out = BytesMut::from(&b"kept"[..]);
    let error = encode_frame(&mut out, 0, 1, &Subscribe { topics: &topics }, MAX).unwrap_err();
    assert!(
        matches!(
            error,
            EncodeError::TooLarge {
                max_frame_bytes: MAX,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(&out[..], b"kept");
}

#[test]
fn encode_into_slice_reports_buffer_too_small() {
    let push = Push {
        topic: "prices",
        seq: 1,
        payload: &[7; 100],
    };
    for capacity in [0, 10, HEADER_BYTES, HEADER_BYTES + 50, 100] {
        let mut buf = vec![0u8; capacity];
        assert_eq!(
            encode_into_slice(&mut buf, 0, 1, &push, MAX),
            Err(EncodeError::BufferTooSmall { capacity }),
            "capacity {capacity}"
        );
    }
    // A large buffer that still cannot hold the frame takes the retry path and fails the same way.
    let big_payload = vec![7u8; 10_000];
    let big = Push {
        topic: "prices",
        seq: 1,
        payload: &big_payload,
    };
    let mut buf = vec![0u8; 8192];
    assert_eq!(
        encode_into_slice(&mut buf, 0, 1, &big, MAX),
        Err(EncodeError::BufferTooSmall { capacity: 8192 })
    );
}

#[test]
fn encode_into_slice_refuses_frames_above_max_frame_bytes() {
    let push = Push {
        topic: "prices",
        seq: 1,
        payload: &[7; 100],
    };
    let mut buf = vec![0u8; 4096];
    let error = encode_into_slice(&mut buf, 0, 1, &push, 64).unwrap_err();
    assert!(
        matches!(
            error,
            EncodeError::TooLarge {
                max_frame_bytes: 64,
                ..
            }
        ),
        "{error:?}"
    );
}
