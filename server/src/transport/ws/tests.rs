use std::ops::ControlFlow;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// RFC 6455 1.3's worked example for KEY.
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn config() -> WsConfig {
    WsConfig {
        path: "/ws".into(),
        allowed_origins: vec!["https://app.example".into(), "null".into()],
        max_message_bytes: 1024,
    }
}

fn request_with(extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:7000\r\nUpgrade: websocket\r\n\
         Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, holdfast.v1\r\n{extra}\r\n"
    )
}

fn request() -> String {
    request_with("Origin: https://APP.example\r\n")
}

/// A client frame: masked unless `mask` is None.
fn frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

fn binary(payload: &[u8]) -> Vec<u8> {
    frame(true, 0, 0x2, payload, Some(MASK))
}

/// A server frame read back from wire bytes.
#[derive(Debug, PartialEq, Eq)]
struct ServerFrame {
    opcode: u8,
    payload: Vec<u8>,
}

/// Splits the wire bytes after the HTTP answer into frames (server frames: FIN, unmasked).
fn server_frames(mut wire: &[u8]) -> Vec<ServerFrame> {
    let mut frames = Vec::new();
    while !wire.is_empty() {
        assert_eq!(wire[0] & 0xF0, 0x80, "FIN set, no reserved bits");
        assert_eq!(wire[1] & 0x80, 0, "the server does not mask");
        let (len, at) = match wire[1] & 0x7F {
            126 => (u16::from_be_bytes([wire[2], wire[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(wire[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        frames.push(ServerFrame {
            opcode: wire[0] & 0x0F,
            payload: wire[at..at + len].to_vec(),
        });
        wire = &wire[at + len..];
    }
    frames
}

/// What a connection did with a byte stream fed in the given pieces.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    plaintext: Vec<u8>,
    result: Result<WsOutcome, WsError>,
    wire: Vec<u8>,
}

fn run_pieces(config: &WsConfig, stream: &[u8], cuts: &[usize]) -> Run {
    let mut ws = WsState::new();
    let mut plaintext = Vec::new();
    let mut result = Ok(WsOutcome::Continue);
    let mut wire = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        let mut piece = stream[start..end].to_vec();
        start = end;
        result = ws.on_received(config, &mut piece, |bytes| {
            plaintext.extend_from_slice(bytes);
            ControlFlow::Continue(())
        });
        // The shard sends after every read.
        wire.extend_from_slice(&ws.wrap_outbound(Bytes::new()));
        if result != Ok(WsOutcome::Continue) {
            break;
        }
    }
    Run {
        plaintext,
        result,
        wire,
    }
}

fn run(stream: &[u8]) -> Run {
    run_pieces(&config(), stream, &[])
}

/// `stream` fed whole, cut once at every byte, and a byte at a time: every run is `whole`.
fn assert_same_at_every_cut(stream: &[u8], whole: &Run) {
    for cut in 0..=stream.len() {
        assert_eq!(
            &run_pieces(&config(), stream, &[cut]),
            whole,
            "cut at {cut}"
        );
    }
    let bytewise: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(&run_pieces(&config(), stream, &bytewise), whole);
}

/// A connection past its upgrade, with the 101 answer already sent.
fn upgraded_state() -> WsState {
    let mut ws = WsState::new();
    ws.on_received(&config(), &mut request().into_bytes(), |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    ws.wrap_outbound(Bytes::new());
    ws
}

fn upgraded_with(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut stream = request().into_bytes();
    for f in frames {
        stream.extend_from_slice(f);
    }
    stream
}

/// The wire after the 101 answer.
fn after_101(wire: &[u8]) -> &[u8] {
    let end = wire
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer")
        + 4;
    assert!(wire.starts_with(b"HTTP/1.1 101 "), "{wire:?}");
    &wire[end..]
}

fn assert_closed_with(stream: &[u8], code: u16) {
    let run = run(stream);
    assert!(
        matches!(run.result, Err(WsError::Protocol { code: c, .. }) if c == code),
        "expected close {code}, got {:?}",
        run.result
    );
    let frames = server_frames(after_101(&run.wire));
    let close = frames.last().expect("a close frame");
    assert_eq!(close.opcode, 0x8);
    assert_eq!(
        u16::from_be_bytes([close.payload[0], close.payload[1]]),
        code
    );
    assert!(std::str::from_utf8(&close.payload[2..]).is_ok());
}

fn assert_refused(request: &str, status: u16) {
    let run = run(request.as_bytes());
    assert!(
        matches!(run.result, Err(WsError::Handshake { status: s, .. }) if s == status),
        "expected {status}, got {:?}",
        run.result
    );
    let head = format!("HTTP/1.1 {status} ");
    assert!(
        run.wire.starts_with(head.as_bytes()),
        "{}",
        String::from_utf8_lossy(&run.wire)
    );
    assert!(
        std::str::from_utf8(&run.wire)
            .unwrap()
            .contains("Connection: close\r\n"),
        "refusals close the connection"
    );
}

// ---- handshake ----

#[test]
fn upgrade_is_answered_with_101_the_rfc_accept_key_and_the_subprotocol() {
    let mut ws = WsState::new();
    let mut input = request().into_bytes();
    let outcome = ws
        .on_received(&config(), &mut input, |_| panic!("no payload yet"))
        .unwrap();
    assert_eq!(outcome, WsOutcome::Continue);
    assert!(ws.is_upgraded());
    assert!(ws.has_wire_bytes());
    let wire = ws.wrap_outbound(Bytes::new());
    let text = std::str::from_utf8(&wire).unwrap();
    assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(text.contains(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n")));
    assert!(text.contains("Sec-WebSocket-Protocol: holdfast.v1\r\n"));
    assert!(text.contains("Upgrade: websocket\r\n"));
    assert!(text.ends_with("\r\n\r\n"));
    assert!(!ws.has_wire_bytes(), "sent once");
    assert_eq!(
        ws.heap_bytes(),
        0,
        "an idle upgraded connection holds no buffer"
    );
}

#[test]
fn accept_key_matches_rfc_6455_example() {
    assert_eq!(accept_key(KEY.as_bytes()), ACCEPT);
}

#[test]
fn request_split_at_every_byte_gives_the_same_answer() {
    let stream = upgraded_with(&[binary(b"hello holdfast")]);
    let whole = run(&stream);
    assert_eq!(whole.plaintext, b"hello holdfast");
    assert_same_at_every_cut(&stream, &whole);
}

#[test]
fn query_string_is_ignored_and_header_names_are_case_insensitive() {
    let request = format!(
        "GET /ws?token=abc HTTP/1.1\r\nhost: x\r\nUPGRADE: WebSocket\r\nconnection: upgrade\r\n\
         sec-websocket-key: {KEY}\r\nsec-websocket-version: 13\r\n\
         sec-websocket-protocol: holdfast.v1\r\n\r\n"
    );
    let run = run(request.as_bytes());
    assert_eq!(run.result, Ok(WsOutcome::Continue));
    assert!(run.wire.starts_with(b"HTTP/1.1 101 "));
}

#[test]
fn no_origin_is_allowed_and_a_listed_one_in_any_case_is_allowed() {
    assert!(run(request_with("").as_bytes())
        .wire
        .starts_with(b"HTTP/1.1 101 "));
    assert!(run(request_with("Origin: null\r\n").as_bytes())
        .wire
        .starts_with(b"HTTP/1.1 101 "));
}

#[test]
fn origin_not_on_the_list_gets_403() {
    assert_refused(&request_with("Origin: https://evil.example\r\n"), 403);
}

#[test]
fn any_origin_is_allowed_when_the_list_is_empty() {
    let mut open = config();
    open.allowed_origins.clear();
    let stream = request_with("Origin: https://anywhere.example\r\n");
    let run = run_pieces(&open, stream.as_bytes(), &[]);
    assert!(run.wire.starts_with(b"HTTP/1.1 101 "));
}

#[test]
fn other_path_gets_404() {
    assert_refused(&request().replace("GET /ws ", "GET /other "), 404);
}

#[test]
fn post_gets_405() {
    assert_refused(&request().replace("GET /ws ", "POST /ws "), 405);
}

#[test]
fn plain_http_get_gets_426() {
    assert_refused(&request().replace("Upgrade: websocket\r\n", ""), 426);
}

#[test]
fn websocket_version_other_than_13_gets_426_naming_13() {
    let req = request().replace("Version: 13", "Version: 8");
    assert_refused(&req, 426);
    let run = run(req.as_bytes());
    assert!(std::str::from_utf8(&run.wire)
        .unwrap()
        .contains("Sec-WebSocket-Version: 13\r\n"));
}

#[test]
fn missing_subprotocol_gets_400() {
    assert_refused(&request().replace("chat, holdfast.v1", "chat"), 400);
    assert_refused(
        &request().replace("Sec-WebSocket-Protocol: chat, holdfast.v1\r\n", ""),
        400,
    );
}

#[test]
fn bad_or_missing_key_gets_400() {
    assert_refused(&request().replace(KEY, "c2hvcnQ="), 400);
    assert_refused(&request().replace(KEY, "not base64 at all!!!!!!!"), 400);
    assert_refused(
        &request().replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), ""),
        400,
    );
}

#[test]
fn missing_host_or_connection_upgrade_or_http_1_0_gets_400() {
    assert_refused(&request().replace("Host: 127.0.0.1:7000\r\n", ""), 400);
    assert_refused(
        &request().replace("Connection: keep-alive, Upgrade", "Connection: keep-alive"),
        400,
    );
    assert_refused(&request().replace("HTTP/1.1", "HTTP/1.0"), 400);
    assert_refused("\x16\x03\x01\x02\x00garbage\r\n\r\n", 400);
}

#[test]
fn request_over_the_size_limit_gets_431_before_it_ends() {
    let mut ws = WsState::new();
    let mut start = b"GET /ws HTTP/1.1\r\nHost: x\r\nCookie: ".to_vec();
    assert_eq!(
        ws.on_received(&config(), &mut start, |_| ControlFlow::Continue(())),
        Ok(WsOutcome::Continue)
    );
    let mut filler = vec![b'a'; 4096];
    let mut result = Ok(WsOutcome::Continue);
    let mut fed = start.len();
    while result == Ok(WsOutcome::Continue) {
        result = ws.on_received(
            &config(),
            &mut filler.clone(),
            |_| ControlFlow::Continue(()),
        );
        fed += filler.len();
        assert!(fed <= WS_HANDSHAKE_MAX_BYTES + filler.len(), "bounded");
    }
    assert!(matches!(
        result,
        Err(WsError::Handshake { status: 431, .. })
    ));
    assert!(ws.heap_bytes() < WS_HANDSHAKE_MAX_BYTES + 1024);
    assert!(ws.wrap_outbound(Bytes::new()).starts_with(b"HTTP/1.1 431 "));
    // Nothing more is read.
    assert!(ws
        .on_received(&config(), &mut filler, |_| panic!("closed"))
        .is_ok());
    // One oversized read is refused at once too.
    let mut big = request().into_bytes();
    big.splice(
        18..18,
        format!("X-Pad: {}\r\n", "p".repeat(WS_HANDSHAKE_MAX_BYTES)).into_bytes(),
    );
    assert!(matches!(
        run(&big).result,
        Err(WsError::Handshake { status: 431, .. })
    ));
}

#[test]
fn too_many_header_lines_gets_431() {
    let extra: String = (0..WS_HANDSHAKE_MAX_HEADERS)
        .map(|i| format!("X-H{i}: v\r\n"))
        .collect();
    assert_refused(&request_with(&extra), 431);
}

#[test]
fn nothing_is_sent_before_the_upgrade_and_a_close_then_just_stops() {
    let mut ws = WsState::new();
    let mut partial = b"GET /ws HTTP/1.1\r\n".to_vec();
    ws.on_received(&config(), &mut partial, |_| ControlFlow::Continue(()))
        .unwrap();
    assert!(ws
        .wrap_outbound(Bytes::from_static(b"error frame"))
        .is_empty());
    ws.close(close_code::POLICY_VIOLATION, "hello timeout");
    assert!(!ws.has_wire_bytes());
    assert_eq!(ws.heap_bytes(), 0, "the partial request is dropped");
}

// ---- frames in ----

#[test]
fn binary_payloads_reach_the_sink_unmasked_in_stream_order() {
    let stream = upgraded_with(&[binary(b"first "), binary(b""), binary(b"second")]);
    let run = run(&stream);
    assert_eq!(run.result, Ok(WsOutcome::Continue));
    assert_eq!(run.plaintext, b"first second");
    assert!(server_frames(after_101(&run.wire)).is_empty());
}

#[test]
fn payload_is_unmasked_in_the_callers_buffer() {
    let mut ws = WsState::new();
    let mut input = upgraded_with(&[binary(b"in place")]);
    let mut at = None;
    ws.on_received(&config(), &mut input, |bytes| {
        at = Some(bytes.as_ptr() as usize);
        ControlFlow::Continue(())
    })
    .unwrap();
    let end = input.len();
    assert_eq!(&input[end - 8..], b"in place");
    assert_eq!(at, Some(input[end - 8..].as_ptr() as usize), "no copy");
}

#[test]
fn fragmented_message_with_control_frames_between_fragments_is_one_stream() {
    let stream = upgraded_with(&[
        frame(false, 0, 0x2, b"frag-1 ", Some(MASK)),
        frame(true, 0, 0x9, b"ping!", Some([1, 2, 3, 4])),
        frame(false, 0, 0x0, b"frag-2 ", Some([9, 9, 9, 9])),
        frame(true, 0, 0xA, b"unsolicited pong", Some(MASK)),
        frame(true, 0, 0x0, b"frag-3", Some([0xff, 0, 0xff, 0])),
        binary(b" next"),
    ]);
    let run = run(&stream);
    assert_eq!(run.result, Ok(WsOutcome::Continue));
    assert_eq!(run.plaintext, b"frag-1 frag-2 frag-3 next");
    assert_eq!(
        server_frames(after_101(&run.wire)),
        vec![ServerFrame {
            opcode: 0xA,
            payload: b"ping!".to_vec()
        }]
    );
}

#[test]
fn every_split_of_a_mixed_stream_gives_the_same_result() {
    let long = vec![0x5a; 300];
    let stream = upgraded_with(&[
        binary(b"a"),
        frame(false, 0, 0x2, &long, Some(MASK)),
        frame(true, 0, 0x9, b"", Some(MASK)),
        frame(true, 0, 0x0, b"end", Some([1, 2, 3, 4])),
        frame(true, 0, 0x8, &[0x03, 0xe8, b'o', b'k'], Some(MASK)),
    ]);
    let whole = run(&stream);
    assert_eq!(whole.result, Ok(WsOutcome::PeerClosed));
    let mut expected = b"a".to_vec();
    expected.extend_from_slice(&long);
    expected.extend_from_slice(b"end");
    assert_eq!(whole.plaintext, expected);
    assert_eq!(
        server_frames(after_101(&whole.wire)),
        vec![
            ServerFrame {
                opcode: 0xA,
                payload: vec![]
            },
            ServerFrame {
                opcode: 0x8,
                payload: vec![0x03, 0xe8]
            },
        ]
    );
    assert_same_at_every_cut(&stream, &whole);
}

#[test]
fn unmasked_client_frame_is_closed_with_1002() {
    assert_closed_with(&upgraded_with(&[frame(true, 0, 0x2, b"x", None)]), 1002);
}

#[test]
fn text_frame_is_closed_with_1003() {
    assert_closed_with(
        &upgraded_with(&[frame(true, 0, 0x1, b"hi", Some(MASK))]),
        1003,
    );
}

#[test]
fn reserved_bits_are_closed_with_1002() {
    for rsv in 1..8 {
        assert_closed_with(
            &upgraded_with(&[frame(true, rsv, 0x2, b"x", Some(MASK))]),
            1002,
        );
    }
}

#[test]
fn reserved_opcodes_are_closed_with_1002() {
    for opcode in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        assert_closed_with(
            &upgraded_with(&[frame(true, 0, opcode, b"", Some(MASK))]),
            1002,
        );
    }
}

#[test]
fn control_frame_over_125_bytes_or_fragmented_is_closed_with_1002() {
    assert_closed_with(
        &upgraded_with(&[frame(true, 0, 0x9, &[0; 126], Some(MASK))]),
        1002,
    );
    assert_closed_with(
        &upgraded_with(&[frame(false, 0, 0x9, b"", Some(MASK))]),
        1002,
    );
    assert_closed_with(
        &upgraded_with(&[frame(false, 0, 0x8, b"", Some(MASK))]),
        1002,
    );
}

#[test]
fn continuation_without_a_message_is_closed_with_1002() {
    assert_closed_with(
        &upgraded_with(&[frame(true, 0, 0x0, b"x", Some(MASK))]),
        1002,
    );
}

#[test]
fn new_message_inside_a_fragmented_one_is_closed_with_1002() {
    assert_closed_with(
        &upgraded_with(&[frame(false, 0, 0x2, b"x", Some(MASK)), binary(b"y")]),
        1002,
    );
    assert_closed_with(
        &upgraded_with(&[
            frame(false, 0, 0x2, b"x", Some(MASK)),
            frame(true, 0, 0x1, b"y", Some(MASK)),
        ]),
        1002,
    );
}

#[test]
fn message_over_the_limit_is_closed_with_1009_before_its_payload_arrives() {
    // One frame: refused on its header alone.
    let mut header_only = frame(true, 0, 0x2, &[0; 1025], Some(MASK));
    header_only.truncate(8);
    let run_one = run(&upgraded_with(&[header_only]));
    assert!(matches!(
        run_one.result,
        Err(WsError::Protocol { code: 1009, .. })
    ));
    assert!(run_one.plaintext.is_empty());
    // Fragments adding up past the limit.
    assert_closed_with(
        &upgraded_with(&[
            frame(false, 0, 0x2, &[0; 1000], Some(MASK)),
            frame(true, 0, 0x0, &[0; 25], Some(MASK)),
        ]),
        1009,
    );
    // Exactly the limit is fine, and the count restarts with each message.
    let ok = run(&upgraded_with(&[
        frame(false, 0, 0x2, &[1; 1000], Some(MASK)),
        frame(true, 0, 0x0, &[2; 24], Some(MASK)),
        binary(&[3; 1024]),
    ]));
    assert_eq!(ok.result, Ok(WsOutcome::Continue));
    assert_eq!(ok.plaintext.len(), 2048);
}

#[test]
fn length_with_the_top_bit_set_is_closed_with_1002() {
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 63).to_be_bytes());
    header.extend_from_slice(&MASK);
    assert_closed_with(&upgraded_with(&[header]), 1002);
}

#[test]
fn ping_is_answered_with_a_pong_carrying_its_payload_and_only_the_latest_is_kept() {
    let mut ws = WsState::new();
    let mut input = upgraded_with(&[
        frame(true, 0, 0x9, b"one", Some(MASK)),
        frame(true, 0, 0x9, b"two", Some(MASK)),
    ]);
    ws.on_received(&config(), &mut input, |_| ControlFlow::Continue(()))
        .unwrap();
    assert!(ws.has_wire_bytes());
    let wire = ws.wrap_outbound(Bytes::from_static(b"frames"));
    assert_eq!(
        server_frames(after_101(&wire)),
        vec![
            ServerFrame {
                opcode: 0xA,
                payload: b"two".to_vec()
            },
            ServerFrame {
                opcode: 0x2,
                payload: b"frames".to_vec()
            },
        ]
    );
    // A flood of pings while nothing is sent holds one pong, not all of them.
    let mut flood: Vec<u8> = (0..1000)
        .flat_map(|_| frame(true, 0, 0x9, &[7; 125], Some(MASK)))
        .collect();
    ws.on_received(&config(), &mut flood, |_| ControlFlow::Continue(()))
        .unwrap();
    assert!(ws.heap_bytes() < 1024, "held {}", ws.heap_bytes());
    assert_eq!(server_frames(&ws.wrap_outbound(Bytes::new())).len(), 1);
    assert_eq!(ws.heap_bytes(), 0);
}

#[test]
fn close_is_echoed_with_its_code_and_later_input_is_ignored() {
    let stream = upgraded_with(&[
        frame(true, 0, 0x8, &[0x0f, 0xa0, b'b', b'y', b'e'], Some(MASK)),
        binary(b"after close"),
    ]);
    let run = run(&stream);
    assert_eq!(run.result, Ok(WsOutcome::PeerClosed));
    assert!(run.plaintext.is_empty());
    assert_eq!(
        server_frames(after_101(&run.wire)),
        vec![ServerFrame {
            opcode: 0x8,
            payload: vec![0x0f, 0xa0]
        }]
    );
}

#[test]
fn empty_close_is_answered_with_1000() {
    let run = run(&upgraded_with(&[frame(true, 0, 0x8, b"", Some(MASK))]));
    assert_eq!(run.result, Ok(WsOutcome::PeerClosed));
    assert_eq!(
        server_frames(after_101(&run.wire))[0].payload,
        vec![0x03, 0xe8]
    );
}

#[test]
fn close_with_one_byte_or_an_invalid_code_is_closed_with_1002() {
    assert_closed_with(
        &upgraded_with(&[frame(true, 0, 0x8, &[0x03], Some(MASK))]),
        1002,
    );
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
    ] {
        let payload = code.to_be_bytes();
        assert_closed_with(
            &upgraded_with(&[frame(true, 0, 0x8, &payload, Some(MASK))]),
            1002,
        );
    }
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ] {
        let payload = code.to_be_bytes();
        let run = run(&upgraded_with(&[frame(true, 0, 0x8, &payload, Some(MASK))]));
        assert_eq!(run.result, Ok(WsOutcome::PeerClosed), "code {code}");
    }
}

#[test]
fn close_reason_that_is_not_utf8_is_closed_with_1007() {
    let payload = [
        0x03, 0xe8, 0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0,
        0x80,
    ];
    assert_closed_with(
        &upgraded_with(&[frame(true, 0, 0x8, &payload, Some(MASK))]),
        1007,
    );
    let ok = "κόσμε".as_bytes();
    let mut payload = vec![0x03, 0xe8];
    payload.extend_from_slice(ok);
    let run = run(&upgraded_with(&[frame(true, 0, 0x8, &payload, Some(MASK))]));
    assert_eq!(run.result, Ok(WsOutcome::PeerClosed));
}

#[test]
fn input_after_an_error_is_ignored() {
    let mut ws = WsState::new();
    let mut input = upgraded_with(&[frame(true, 0, 0x1, b"text", Some(MASK))]);
    assert!(ws
        .on_received(&config(), &mut input, |_| ControlFlow::Continue(()))
        .is_err());
    let mut more = binary(b"more");
    assert_eq!(
        ws.on_received(&config(), &mut more, |_| panic!(
            "nothing is read after a close"
        )),
        Ok(WsOutcome::Continue)
    );
}

#[test]
fn a_stopped_sink_drops_the_rest_of_the_input() {
    let mut ws = WsState::new();
    let mut input = upgraded_with(&[binary(b"one"), binary(b"two")]);
    let mut seen = Vec::new();
    let outcome = ws
        .on_received(&config(), &mut input, |bytes| {
            seen.extend_from_slice(bytes);
            ControlFlow::Break(())
        })
        .unwrap();
    assert_eq!(outcome, WsOutcome::SinkStopped);
    assert_eq!(seen, b"one");
}

// ---- frames out ----

#[test]
fn a_batch_becomes_one_binary_message_with_the_shortest_header() {
    for (len, header_bytes) in [
        (1usize, 2usize),
        (125, 2),
        (126, 4),
        (65_535, 4),
        (65_536, 10),
    ] {
        let mut ws = upgraded_state();
        let batch = Bytes::from(vec![0xab; len]);
        let wire = ws.wrap_outbound(batch.clone());
        assert_eq!(wire.len(), header_bytes + len, "len {len}");
        assert_eq!(
            server_frames(&wire),
            vec![ServerFrame {
                opcode: 0x2,
                payload: batch.to_vec()
            }]
        );
    }
}

#[test]
fn a_server_close_follows_the_last_batch_and_nothing_follows_it() {
    let mut ws = upgraded_state();
    ws.close(close_code::GOING_AWAY, "server shutting down");
    assert!(ws.has_wire_bytes());
    let wire = ws.wrap_outbound(Bytes::from_static(b"goodbye frame"));
    let frames = server_frames(&wire);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].payload, b"goodbye frame");
    assert_eq!(frames[1].opcode, 0x8);
    assert_eq!(&frames[1].payload[..2], &1001u16.to_be_bytes());
    assert_eq!(&frames[1].payload[2..], b"server shutting down");
    assert!(!ws.has_wire_bytes());
    assert!(ws.wrap_outbound(Bytes::from_static(b"late")).is_empty());
    let mut input = binary(b"ignored");
    assert_eq!(
        ws.on_received(&config(), &mut input, |_| panic!("closed")),
        Ok(WsOutcome::Continue)
    );
}

#[test]
fn close_reason_is_cut_to_fit_a_control_frame_at_a_char_boundary() {
    let mut out = BytesMut::new();
    let reason: &'static str = Box::leak("é".repeat(100).into_boxed_str());
    put_close(&mut out, 1008, reason);
    let frames = server_frames(&out);
    assert!(frames[0].payload.len() <= WS_CONTROL_PAYLOAD_MAX_BYTES);
    assert!(std::str::from_utf8(&frames[0].payload[2..]).is_ok());
}

// ---- state size ----

#[test]
fn connection_state_is_small() {
    let size = std::mem::size_of::<WsState>();
    assert!(size <= 128, "WsState is {size} bytes");
}

#[test]
fn unmask_matches_the_bytewise_definition_at_every_phase() {
    let data: Vec<u8> = (0..67u8).collect();
    for offset in 0..8u64 {
        for len in 0..data.len() {
            let mut chunk = data[..len].to_vec();
            unmask(&mut chunk, MASK, offset);
            let expected: Vec<u8> = data[..len]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ MASK[(i + offset as usize) % 4])
                .collect();
            assert_eq!(chunk, expected);
        }
    }
}

proptest! {
    #[test]
    fn random_messages_in_random_pieces_arrive_whole(
        messages in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..600), 1usize..4, any::<[u8; 4]>()),
            1..6,
        ),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut config = config();
        config.max_message_bytes = 4096;
        let mut stream = request().into_bytes();
        let mut expected = Vec::new();
        for (payload, fragments, mask) in &messages {
            expected.extend_from_slice(payload);
            let piece = payload.len().div_ceil(*fragments).max(1);
            let parts: Vec<&[u8]> = if payload.is_empty() {
                vec![&[]]
            } else {
                payload.chunks(piece).collect()
            };
            for (i, part) in parts.iter().enumerate() {
                let opcode = if i == 0 { 0x2 } else { 0x0 };
                stream.extend(frame(i + 1 == parts.len(), 0, opcode, part, Some(*mask)));
                // A ping between fragments.
                stream.extend(frame(true, 0, 0x9, &mask[..], Some(*mask)));
            }
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len())).collect();
        cuts.sort_unstable();
        let run = run_pieces(&config, &stream, &cuts);
        prop_assert_eq!(run.result, Ok(WsOutcome::Continue));
        prop_assert_eq!(run.plaintext, expected);
        let frames = server_frames(after_101(&run.wire));
        prop_assert!(frames.iter().all(|f| f.opcode == 0xA && f.payload.len() == 4));
    }
}
