//! Encode then decode: every kind comes back with equal header and payload fields.

mod common;

use bytes::BytesMut;
use common::{decode_contiguous, decode_pieces, one_of_every_kind, Body, MAX};
use holdfast_protocol::{
    encode_into_slice, next_frame,
    payload::{Hello, Welcome},
    ErrorCode, Kind, Payload, FLAG_ACK_REQUESTED, HEADER_BYTES, VERSION,
};

/// Encodes `body` with the given flags and id, decodes it, and checks every field.
fn assert_round_trip(body: Body, flags: u16, id: u64) {
    let mut out = BytesMut::new();
    let written = body.encode(&mut out, flags, id, MAX).expect("encodes");
    assert_eq!(written, out.len());
    let frame = next_frame(&out, MAX).expect("valid").expect("complete");
    assert_eq!(frame.header.len as usize, out.len());
    assert_eq!(frame.header.version, VERSION);
    assert_eq!(frame.header.kind, body.kind());
    assert_eq!(frame.header.flags, flags);
    assert_eq!(frame.header.id, id);
    assert_eq!(
        frame.header.ack_requested(),
        flags & FLAG_ACK_REQUESTED != 0
    );
    assert_eq!(frame.bytes, &out[..]);
    assert_eq!(Body::from_payload(&frame.payload), body);
}

#[test]
fn anonymous_hello_round_trips_as_an_empty_payload() {
    assert_round_trip(Body::AnonymousHello, 0, 1);
    let mut out = BytesMut::new();
    Body::AnonymousHello.encode(&mut out, 0, 1, MAX).unwrap();
    assert_eq!(out.len(), HEADER_BYTES);
    let frame = next_frame(&out, MAX).unwrap().unwrap();
    assert!(matches!(frame.payload, Payload::Hello(None)));
}

#[test]
fn full_hello_round_trips() {
    assert_round_trip(one_of_every_kind()[1].clone(), FLAG_ACK_REQUESTED, u64::MAX);
}

#[test]
fn welcome_round_trips() {
    assert_round_trip(one_of_every_kind()[2].clone(), 0, 0);
}

#[test]
fn ping_and_pong_round_trip_with_empty_payloads() {
    assert_round_trip(Body::Ping, 0, 42);
    assert_round_trip(Body::Pong, FLAG_ACK_REQUESTED, 42);
}

#[test]
fn echo_round_trips_and_its_frame_bytes_are_byte_identical() {
    let payload: Vec<u8> = (0..=255).collect();
    let mut out = BytesMut::new();
    Body::Echo(payload.clone())
        .encode(&mut out, FLAG_ACK_REQUESTED, 9, MAX)
        .unwrap();
    // Whole, and reassembled from single bytes by the decoder's partial buffer.
    let whole = next_frame(&out, MAX).unwrap().unwrap();
    assert_eq!(whole.bytes, &out[..]);
    let Payload::Echo(echoed) = whole.payload else {
        panic!("not an Echo")
    };
    assert_eq!(echoed, &payload[..]);
    let (frames, error) = decode_pieces(out.chunks(1), MAX);
    assert_eq!(error, None);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].bytes, &out[..]);
    assert_eq!(frames[0].body, Body::Echo(payload));
}

#[test]
fn empty_echo_round_trips() {
    assert_round_trip(Body::Echo(Vec::new()), 0, 3);
}

#[test]
fn request_and_response_round_trip_with_the_same_id() {
    let bodies = one_of_every_kind();
    assert_round_trip(bodies[6].clone(), FLAG_ACK_REQUESTED, 77);
    assert_round_trip(bodies[7].clone(), 0, 77);
}

#[test]
fn event_round_trips() {
    assert_round_trip(one_of_every_kind()[8].clone(), FLAG_ACK_REQUESTED, 5);
}

#[test]
fn push_of_one_kib_round_trips() {
    assert_round_trip(one_of_every_kind()[9].clone(), 0, 6);
}

#[test]
fn subscribe_and_unsubscribe_round_trip() {
    let bodies = one_of_every_kind();
    assert_round_trip(bodies[10].clone(), 0, 7);
    assert_round_trip(bodies[11].clone(), 0, 8);
    assert_round_trip(Body::Subscribe(Vec::new()), 0, 9);
}

#[test]
fn subscribe_with_thousands_of_topics_round_trips() {
    // Regression: a topic list needs rkyv scratch space; 5,000 topics outgrow the stack scratch.
    let topics: Vec<String> = (0..5000).map(|n| format!("t{n}")).collect();
    assert_round_trip(Body::Subscribe(topics.clone()), 0, 10);
    assert_round_trip(Body::Unsubscribe(topics), 0, 11);
}

#[test]
fn ack_round_trips_with_empty_payload() {
    assert_round_trip(Body::Ack, 0, 5);
}

#[test]
fn error_round_trips_with_its_code() {
    let body = Body::Error {
        code: ErrorCode::UnknownMethod as u16,
        reason: "no method x".into(),
    };
    assert_round_trip(body, 0, 77);
}

#[test]
fn goodbye_round_trips() {
    assert_round_trip(one_of_every_kind()[14].clone(), 0, 0);
}

#[test]
fn every_kind_round_trips_in_one_contiguous_buffer() {
    let bodies = one_of_every_kind();
    let kinds: std::collections::HashSet<Kind> = bodies.iter().map(Body::kind).collect();
    assert_eq!(
        kinds.len(),
        Kind::ALL.len(),
        "the sample covers all 15 kinds"
    );
    let stream = common::encode_stream(&bodies);
    let (frames, error) = decode_contiguous(&stream, MAX);
    assert_eq!(error, None);
    let decoded: Vec<Body> = frames.iter().map(|frame| frame.body.clone()).collect();
    assert_eq!(decoded, bodies);
    let ids: Vec<u64> = frames.iter().map(|frame| frame.header.id).collect();
    assert_eq!(ids, (100..100 + bodies.len() as u64).collect::<Vec<_>>());
}

#[test]
fn encode_into_slice_writes_the_same_bytes_as_encode_frame() {
    let hello = Hello {
        client_id: "c",
        token: &[1; 40],
        versions: &[1],
        heartbeat_ms: 1000,
    };
    let mut out = BytesMut::new();
    holdfast_protocol::encode_frame(&mut out, 1, 2, &hello, MAX).unwrap();
    let mut buf = [0xeeu8; 256];
    let len = encode_into_slice(&mut buf, 1, 2, &hello, MAX).unwrap();
    assert_eq!(&buf[..len], &out[..]);
    assert!(
        buf[len..].iter().all(|&byte| byte == 0xee),
        "nothing written past the frame"
    );
}

#[test]
fn encode_into_slice_handles_topic_lists_beyond_the_stack_scratch() {
    let names: Vec<String> = (0..3000).map(|n| format!("{n}")).collect();
    let topics: Vec<_> = names
        .iter()
        .map(|name| holdfast_protocol::payload::TopicName { name })
        .collect();
    let payload = holdfast_protocol::payload::Subscribe { topics: &topics };
    let mut buf = vec![0u8; MAX as usize];
    let len = encode_into_slice(&mut buf, 0, 1, &payload, MAX).unwrap();
    let frame = next_frame(&buf[..len], MAX).unwrap().unwrap();
    assert_eq!(Body::from_payload(&frame.payload), Body::Subscribe(names));
}

#[test]
fn welcome_archive_is_read_in_place_from_an_odd_offset() {
    // Unaligned mode: a payload validates at any address, so no padding is ever needed.
    let welcome = Welcome {
        session_id: 1,
        heartbeat_ms: 2,
        heartbeat_timeout_ms: 3,
        max_frame_bytes: 4,
        max_inflight_requests: 5,
    };
    let mut out = BytesMut::new();
    out.extend_from_slice(&[0]);
    holdfast_protocol::encode_frame(&mut out, 0, 1, &welcome, MAX).unwrap();
    let frame = next_frame(&out[1..], MAX).unwrap().unwrap();
    assert_eq!(Body::from_payload(&frame.payload), Body::Welcome(welcome));
}

#[test]
fn kind_from_u8_accepts_exactly_1_to_15() {
    assert_eq!(Kind::from_u8(0), None);
    for (byte, kind) in (1..=15u8).zip(Kind::ALL) {
        assert_eq!(Kind::from_u8(byte), Some(kind));
        assert_eq!(kind as u8, byte);
    }
    assert_eq!(Kind::from_u8(16), None);
    assert_eq!(Kind::from_u8(255), None);
}

#[test]
fn error_code_from_u16_round_trips_every_code_and_nothing_else() {
    assert_eq!(ErrorCode::ALL.len(), 20);
    for (number, code) in (1..=20u16).zip(ErrorCode::ALL) {
        assert_eq!(code as u16, number);
        assert_eq!(ErrorCode::from_u16(number), Some(code));
    }
    assert_eq!(ErrorCode::from_u16(0), None);
    assert_eq!(ErrorCode::from_u16(21), None);
    assert_eq!(ErrorCode::from_u16(u16::MAX), None);
    let names: std::collections::HashSet<&str> =
        ErrorCode::ALL.iter().map(|code| code.name()).collect();
    assert_eq!(names.len(), ErrorCode::ALL.len(), "names are unique");
    assert!(names
        .iter()
        .all(|name| name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
}

/// Parses whitespace-separated hex bytes.
fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|byte| u8::from_str_radix(byte, 16).unwrap())
        .collect()
}

#[test]
fn error_example_in_protocol_md_decodes_as_documented() {
    let bytes = hex("23 00 00 00 01 0d 00 00 07 00 00 00 00 00 00 00
         6e 6f 20 6d 65 74 68 6f 64 0d 00 f5 ff ff ff 09 00 00 00");
    let frame = next_frame(&bytes, MAX).unwrap().unwrap();
    assert_eq!(frame.header.id, 7);
    let expected = Body::Error {
        code: ErrorCode::UnknownMethod as u16,
        reason: "no method".into(),
    };
    assert_eq!(Body::from_payload(&frame.payload), expected);
    let mut out = BytesMut::new();
    expected.encode(&mut out, 0, 7, MAX).unwrap();
    assert_eq!(
        &out[..],
        &bytes[..],
        "the encoder writes exactly the documented bytes"
    );
}

#[test]
fn hello_example_in_protocol_md_decodes_and_its_token_verifies() {
    let bytes = hex("5a 00 00 00 01 01 00 00 01 00 00 00 00 00 00 00
         61 6c 69 63 65 00 d2 49 6b 00 00 00 00 18 0e 82
         ee 16 25 9a 2b 6d 02 4d ed ec 1f e7 a5 1e 55 0d
         a4 71 33 92 77 7b 85 dd ab 76 cc e6 ad 01 d2 ff
         ff ff 05 00 00 00 cf ff ff ff 28 00 00 00 ef ff
         ff ff 01 00 00 00 88 13 00 00");
    let frame = next_frame(&bytes, MAX).unwrap().unwrap();
    let Body::Hello {
        client_id,
        token,
        versions,
        heartbeat_ms,
    } = Body::from_payload(&frame.payload)
    else {
        panic!("not a full Hello");
    };
    assert_eq!(
        (client_id.as_str(), versions, heartbeat_ms),
        ("alice", vec![1], 5000)
    );
    let secret = b"0123456789abcdef";
    assert_eq!(
        holdfast_protocol::token::verify(secret, "alice", &token, 1_799_999_999),
        Ok(())
    );
    assert_eq!(
        &token[..],
        &holdfast_protocol::token::sign(secret, "alice", 1_800_000_000)[..]
    );
}

#[test]
fn hand_built_archive_with_a_leading_gap_validates() {
    // A third-party encoder may leave unclaimed bytes: only pointed-to ranges are checked.
    let mut payload = vec![0xee, 0xee, b'o', b'k'];
    payload.extend_from_slice(&(-2i32).to_le_bytes()); // body: data at p4 - 2 = p2
    payload.extend_from_slice(&2u32.to_le_bytes());
    let bytes = common::raw_frame(
        16 + payload.len() as u32,
        1,
        Kind::Response as u8,
        0,
        3,
        &payload,
    );
    let frame = next_frame(&bytes, MAX).unwrap().unwrap();
    assert_eq!(
        Body::from_payload(&frame.payload),
        Body::Response {
            body: b"ok".to_vec()
        }
    );
}

#[test]
fn subscribe_and_unsubscribe_archive_to_the_topics_layout_and_name_their_kind() {
    use holdfast_protocol::payload::{Subscribe, TopicName, Unsubscribe};
    let topics = [TopicName { name: "news" }, TopicName { name: "sport" }];
    let mut subscribe = BytesMut::new();
    holdfast_protocol::encode_frame(&mut subscribe, 0, 7, &Subscribe { topics: &topics }, MAX)
        .unwrap();
    let mut unsubscribe = BytesMut::new();
    holdfast_protocol::encode_frame(
        &mut unsubscribe,
        0,
        7,
        &Unsubscribe { topics: &topics },
        MAX,
    )
    .unwrap();
    assert_eq!(subscribe[HEADER_BYTES..], unsubscribe[HEADER_BYTES..]);
    let names = vec!["news".to_string(), "sport".to_string()];
    let frame = next_frame(&subscribe, MAX).unwrap().unwrap();
    assert_eq!(frame.header.kind, Kind::Subscribe);
    assert_eq!(
        Body::from_payload(&frame.payload),
        Body::Subscribe(names.clone())
    );
    let frame = next_frame(&unsubscribe, MAX).unwrap().unwrap();
    assert_eq!(frame.header.kind, Kind::Unsubscribe);
    assert_eq!(Body::from_payload(&frame.payload), Body::Unsubscribe(names));
}

/// The SubscribeResume and SubscribeAck examples of docs/PROTOCOL.md, byte for byte.
#[test]
fn subscribe_resume_and_its_ack_match_the_documented_bytes() {
    use holdfast_protocol::payload::TopicResumed;
    let resume = Body::SubscribeResume(vec![("news".to_string(), 0x1122_3344_5566_7788, 41)]);
    let mut out = BytesMut::new();
    resume.encode(&mut out, 0, 9, MAX).unwrap();
    let expected_resume: &[u8] = &[
        0x34, 0, 0, 0, 1, 15, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, // header: len 52, kind 15, id 9
        b'n', b'e', b'w', b's', // p0..4 name bytes
        0xfc, 0xff, 0xff, 0xff, 4, 0, 0, 0, // name: offset -4, length 4
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // epoch
        41, 0, 0, 0, 0, 0, 0, 0, // last_seq 41
        0xe8, 0xff, 0xff, 0xff, 1, 0, 0, 0, // topics: offset -24, count 1
    ];
    assert_eq!(&out[..], expected_resume);
    assert_eq!(
        Body::from_payload(&next_frame(&out, MAX).unwrap().unwrap().payload),
        resume
    );

    let ack = Body::SubscribeAck(vec![TopicResumed {
        epoch: 0x1122_3344_5566_7788,
        seq: 45,
        oldest_seq: 12,
        recovered: 1,
    }]);
    let mut out = BytesMut::new();
    ack.encode(&mut out, 0, 9, MAX).unwrap();
    let expected_ack: &[u8] = &[
        0x31, 0, 0, 0, 1, 12, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, // header: len 49, kind 12, id 9
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // epoch
        45, 0, 0, 0, 0, 0, 0, 0, // seq 45
        12, 0, 0, 0, 0, 0, 0, 0, // oldest_seq 12
        1, // recovered
        0xe7, 0xff, 0xff, 0xff, 1, 0, 0, 0, // topics: offset -25, count 1
    ];
    assert_eq!(&out[..], expected_ack);
    assert_eq!(
        Body::from_payload(&next_frame(&out, MAX).unwrap().unwrap().payload),
        ack
    );
    // An empty Ack is still the plain Ack.
    assert_eq!(
        Body::from_payload(
            &next_frame(&common::encode_stream(&[Body::Ack]), MAX)
                .unwrap()
                .unwrap()
                .payload
        ),
        Body::Ack
    );
}
