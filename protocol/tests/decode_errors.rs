//! Every decode error class, its stable code, and when it is reported.

mod common;

use common::{decode_pieces, one_of_every_kind, payload_bytes, raw_frame, Body, MAX};
use holdfast_protocol::{next_frame, DecodeError, Decoder, ErrorCode, Kind, HEADER_BYTES};

/// Frames with one bad header field each (len claims a 1,000-byte frame so the body is missing),
/// with the error and code they must produce.
fn bad_headers() -> Vec<(&'static str, Vec<u8>, DecodeError, ErrorCode)> {
    vec![
        (
            "bad version",
            raw_frame(1000, 2, Kind::Ping as u8, 0, 1, &[]),
            DecodeError::BadVersion { version: 2 },
            ErrorCode::BadVersion,
        ),
        (
            "length too small",
            raw_frame(15, 1, Kind::Ping as u8, 0, 1, &[]),
            DecodeError::LengthTooSmall { len: 15 },
            ErrorCode::LengthTooSmall,
        ),
        (
            "length too large",
            raw_frame(MAX + 1, 1, Kind::Echo as u8, 0, 1, &[]),
            DecodeError::LengthTooLarge {
                len: MAX + 1,
                max_frame_bytes: MAX,
            },
            ErrorCode::LengthTooLarge,
        ),
        (
            "reserved flags",
            raw_frame(1000, 1, Kind::Echo as u8, 0b10, 1, &[]),
            DecodeError::ReservedFlags { flags: 0b10 },
            ErrorCode::ReservedFlags,
        ),
        (
            "unknown kind",
            raw_frame(1000, 1, 15, 0, 1, &[]),
            DecodeError::UnknownKind { kind: 15 },
            ErrorCode::UnknownKind,
        ),
    ]
}

#[test]
fn each_bad_header_field_maps_to_its_error_and_stable_code() {
    for (name, frame, expected, code) in bad_headers() {
        let error = next_frame(&frame, MAX).expect_err(name);
        assert_eq!(error, expected, "{name}");
        assert_eq!(error.code(), code, "{name}");
    }
    let archive = DecodeError::InvalidArchive {
        kind: Kind::Push,
        id: 77,
    };
    assert_eq!(archive.frame_id(), 77);
    assert_eq!(archive.code(), ErrorCode::InvalidArchive);
    assert_eq!(ErrorCode::InvalidArchive as u16, 6);
}

#[test]
fn bad_header_is_reported_once_header_is_complete_before_the_body_arrives() {
    for (name, frame, expected, _) in bad_headers() {
        let header = &frame[..HEADER_BYTES];
        assert!(
            matches!(next_frame(&header[..HEADER_BYTES - 1], MAX), Ok(None)),
            "{name}"
        );
        assert_eq!(
            next_frame(header, MAX).unwrap_err(),
            expected,
            "{name}: next_frame"
        );
        // Through the decoder, byte by byte: the 16th byte brings the error, not the 1,000th.
        let mut decoder = Decoder::new(MAX);
        for (index, byte) in header.iter().enumerate() {
            let fed = decoder.feed(std::slice::from_ref(byte), |_| panic!("no frame expected"));
            if index + 1 < HEADER_BYTES {
                assert!(fed.is_ok(), "{name}: error before the header was complete");
            } else {
                assert_eq!(fed.unwrap_err(), expected, "{name}: decoder");
            }
        }
    }
}

#[test]
fn bad_version_is_reported_once_header_is_complete() {
    let frame = raw_frame(64, 0, Kind::Echo as u8, 0, 1, &[0; 48]);
    let (frames, error) = decode_pieces([&frame[..10], &frame[10..16]], MAX);
    assert!(frames.is_empty());
    assert_eq!(error, Some(DecodeError::BadVersion { version: 0 }));
}

#[test]
fn length_too_large_is_checked_against_the_decoders_own_limit() {
    let frame = raw_frame(1025, 1, Kind::Echo as u8, 0, 1, &[0; 1009]);
    assert!(
        next_frame(&frame, MAX).unwrap().is_some(),
        "fits the default limit"
    );
    let error = next_frame(&frame, 1024).unwrap_err();
    assert_eq!(
        error,
        DecodeError::LengthTooLarge {
            len: 1025,
            max_frame_bytes: 1024
        }
    );
    // The header alone is enough to refuse it, and a frame of exactly max_frame_bytes is legal.
    assert_eq!(next_frame(&frame[..HEADER_BYTES], 1024).unwrap_err(), error);
    let exact = raw_frame(1024, 1, Kind::Echo as u8, 0, 1, &[0; 1008]);
    assert!(next_frame(&exact, 1024).unwrap().is_some());
}

#[test]
fn header_checks_run_in_wire_order_so_one_input_gives_one_answer() {
    // Everything wrong at once: len is checked first, then version, kind, flags.
    let all_bad = raw_frame(3, 9, 99, 0xffff, 0, &[]);
    assert_eq!(
        next_frame(&all_bad, MAX).unwrap_err(),
        DecodeError::LengthTooSmall { len: 3 }
    );
    let bad_from_version = raw_frame(16, 9, 99, 0xffff, 0, &[]);
    assert_eq!(
        next_frame(&bad_from_version, MAX).unwrap_err(),
        DecodeError::BadVersion { version: 9 }
    );
    let bad_from_kind = raw_frame(16, 1, 0, 0xffff, 0, &[]);
    assert_eq!(
        next_frame(&bad_from_kind, MAX).unwrap_err(),
        DecodeError::UnknownKind { kind: 0 }
    );
}

#[test]
fn every_reserved_flag_bit_is_refused_and_bit_0_is_accepted() {
    for bit in 1..16 {
        let flags = 1u16 << bit;
        let frame = raw_frame(16, 1, Kind::Ping as u8, flags, 1, &[]);
        assert_eq!(
            next_frame(&frame, MAX).unwrap_err(),
            DecodeError::ReservedFlags { flags }
        );
    }
    let ack = raw_frame(16, 1, Kind::Ping as u8, 1, 1, &[]);
    assert!(next_frame(&ack, MAX)
        .unwrap()
        .unwrap()
        .header
        .ack_requested());
}

#[test]
fn kinds_0_and_15_to_255_are_unknown() {
    for kind in std::iter::once(0).chain(15..=255u8) {
        let frame = raw_frame(16, 1, kind, 0, 1, &[]);
        assert_eq!(
            next_frame(&frame, MAX).unwrap_err(),
            DecodeError::UnknownKind { kind }
        );
    }
}

#[test]
fn non_empty_ping_pong_and_ack_payloads_are_invalid_archives() {
    for kind in [Kind::Ping, Kind::Pong, Kind::Ack] {
        let frame = raw_frame(17, 1, kind as u8, 0, 1, &[0]);
        let error = next_frame(&frame, MAX).unwrap_err();
        assert_eq!(error, DecodeError::InvalidArchive { kind, id: 1 });
        assert_eq!(error.code(), ErrorCode::InvalidArchive);
    }
}

/// One valid sample payload of each archived kind (every one but Echo, Ping, Pong, Ack and the
/// anonymous Hello).
fn archived_samples() -> Vec<(Kind, Vec<u8>)> {
    one_of_every_kind()
        .into_iter()
        .filter(|body| {
            !matches!(
                body,
                Body::AnonymousHello | Body::Ping | Body::Pong | Body::Ack | Body::Echo(_)
            )
        })
        .map(|body| (body.kind(), payload_bytes(&body)))
        .collect()
}

fn assert_invalid_archive(kind: Kind, payload: &[u8], what: &str) {
    let frame = raw_frame(
        (HEADER_BYTES + payload.len()) as u32,
        1,
        kind as u8,
        0,
        1,
        payload,
    );
    assert_eq!(
        next_frame(&frame, MAX).unwrap_err(),
        DecodeError::InvalidArchive { kind, id: 1 },
        "{kind:?}: {what}"
    );
}

#[test]
fn every_archived_kind_refuses_a_payload_shorter_than_its_root() {
    let samples = archived_samples();
    assert_eq!(
        samples.len(),
        10,
        "Hello, Welcome, Request, Response, Event, Push, Subscribe, Unsubscribe, Error, Goodbye"
    );
    for (kind, _) in samples {
        assert_invalid_archive(kind, &[0], "one byte");
    }
}

#[test]
fn every_archived_kind_refuses_a_truncated_archive() {
    for (kind, payload) in archived_samples() {
        // The root sits at the end, so dropping the first byte leaves the root intact but moves
        // its relative pointers one byte before the payload (Welcome has none: it is too short).
        assert_invalid_archive(kind, &payload[1..], "first byte dropped");
    }
}

#[test]
fn every_archived_kind_refuses_garbage() {
    for (kind, payload) in archived_samples() {
        if kind == Kind::Welcome {
            continue; // Any 24 bytes are a Welcome: it has only integers.
        }
        // All ones: relative pointers and lengths point far outside the payload.
        assert_invalid_archive(kind, &vec![0xff; payload.len()], "all 0xff");
    }
}

#[test]
fn invalid_utf8_in_a_string_field_is_an_invalid_archive() {
    let body = Body::Event {
        topic: "t".into(),
        payload: vec![],
    };
    let mut payload = payload_bytes(&body);
    assert_eq!(payload[0], b't', "out-of-line data precedes the root");
    payload[0] = 0xff;
    assert_invalid_archive(Kind::Event, &payload, "topic is not UTF-8");
}

#[test]
fn invalid_archive_is_reported_when_the_last_byte_arrives_and_no_frame_is_yielded() {
    let mut frame = raw_frame(0, 1, Kind::Request as u8, 0, 1, &[0xff; 40]);
    let len = frame.len() as u32;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    let mut decoder = Decoder::new(MAX);
    let last = frame.len() - 1;
    assert!(decoder.feed(&frame[..last], |_| panic!("no frame")).is_ok());
    let error = decoder
        .feed(&frame[last..], |_| panic!("no frame"))
        .unwrap_err();
    assert_eq!(
        error,
        DecodeError::InvalidArchive {
            kind: Kind::Request,
            id: 1
        }
    );
}

#[test]
fn frames_before_a_bad_frame_are_yielded_and_nothing_after_it() {
    let mut stream = common::encode_stream(&[Body::Ping, Body::Pong]);
    stream.extend(raw_frame(16, 7, Kind::Ping as u8, 0, 1, &[]));
    stream.extend(common::encode_stream(&[Body::Ack]));
    let (frames, error) = decode_pieces([&stream[..]], MAX);
    let bodies: Vec<Body> = frames.into_iter().map(|frame| frame.body).collect();
    assert_eq!(bodies, vec![Body::Ping, Body::Pong]);
    assert_eq!(error, Some(DecodeError::BadVersion { version: 7 }));
}

#[test]
fn decode_errors_say_what_to_do() {
    let text = DecodeError::LengthTooLarge {
        len: 70_000,
        max_frame_bytes: MAX,
    }
    .to_string();
    assert!(text.contains("70000") && text.contains("65536"), "{text}");
    assert!(DecodeError::BadVersion { version: 2 }
        .to_string()
        .contains("send version 1"));
}

#[test]
fn sibling_data_out_of_field_order_is_an_invalid_archive() {
    // Request { method, body }: method's data must precede body's. Here body's byte comes first.
    let mut payload = vec![b'b', b'm'];
    payload.extend_from_slice(&(-1i32).to_le_bytes()); // method at p2 - 1 = p1
    payload.extend_from_slice(&1u32.to_le_bytes());
    payload.extend_from_slice(&(-10i32).to_le_bytes()); // body at p10 - 10 = p0
    payload.extend_from_slice(&1u32.to_le_bytes());
    assert_invalid_archive(Kind::Request, &payload, "fields' data out of order");
    // The same bytes in field order validate.
    payload.swap(0, 1);
    payload[2..6].copy_from_slice(&(-2i32).to_le_bytes());
    payload[10..14].copy_from_slice(&(-9i32).to_le_bytes());
    let frame = raw_frame(
        16 + payload.len() as u32,
        1,
        Kind::Request as u8,
        0,
        1,
        &payload,
    );
    let decoded = Body::from_payload(&next_frame(&frame, MAX).unwrap().unwrap().payload);
    assert_eq!(
        decoded,
        Body::Request {
            method: "m".into(),
            body: b"b".to_vec()
        }
    );
}
