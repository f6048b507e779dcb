use holdfast_protocol::{ErrorCode, Kind};

use crate::support::{echo_frame, Ending, Server};

fn header(len: u32, version: u8, kind: u8, flags: u16, id: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(16);
    h.extend_from_slice(&len.to_le_bytes());
    h.push(version);
    h.push(kind);
    h.extend_from_slice(&flags.to_le_bytes());
    h.extend_from_slice(&id.to_le_bytes());
    h
}

/// Every decoder error class, as raw bytes, with the code the server must answer.
fn bad_inputs() -> Vec<(&'static str, Vec<u8>, ErrorCode)> {
    let mut invalid_archive = header(24, 1, 6, 0, 3);
    invalid_archive.extend_from_slice(&[0xff; 8]);
    vec![
        ("bad version", header(16, 2, 5, 0, 1), ErrorCode::BadVersion),
        (
            "length too small",
            header(8, 1, 5, 0, 1),
            ErrorCode::LengthTooSmall,
        ),
        (
            "length too large",
            header(1 << 20, 1, 5, 0, 1),
            ErrorCode::LengthTooLarge,
        ),
        (
            "reserved flags",
            header(16, 1, 3, 0x8000, 1),
            ErrorCode::ReservedFlags,
        ),
        (
            "unknown kind",
            header(16, 1, 99, 0, 1),
            ErrorCode::UnknownKind,
        ),
        (
            "invalid archive",
            invalid_archive,
            ErrorCode::InvalidArchive,
        ),
    ]
}

#[test]
fn every_bad_input_class_gets_its_error_and_closes_only_that_connection() {
    let server = Server::start("shards = 2\n");
    let mut bystander = server.connect();
    bystander.hello();
    for (name, bytes, code) in bad_inputs() {
        let mut victim = server.connect();
        victim.hello();
        victim.send_raw(&bytes);
        let error = victim.recv();
        assert_eq!(error.error_code(), Some(code), "{name}: got {error:?}");
        assert_eq!(
            victim.ending(),
            Ending::Eof(vec![]),
            "{name}: connection closed after the error, nothing more sent"
        );
        let frame = echo_frame(7, name.as_bytes());
        bystander.send_raw(&frame);
        assert_eq!(
            bystander.recv().bytes,
            frame,
            "{name}: other sessions unaffected"
        );
    }
}

#[test]
fn bad_input_before_hello_is_refused_the_same_way() {
    let server = Server::start("shards = 1\n");
    let mut client = server.connect();
    client.send_raw(&header(16, 9, 1, 0, 1));
    assert_eq!(client.recv().error_code(), Some(ErrorCode::BadVersion));
    assert_eq!(client.ending(), Ending::Eof(vec![]));
}

#[test]
fn frame_before_hello_gets_unexpected_frame() {
    let server = Server::start("shards = 1\n");
    let mut client = server.connect();
    client.send_raw(&echo_frame(1, b"too early"));
    assert_eq!(client.recv().error_code(), Some(ErrorCode::UnexpectedFrame));
    assert_eq!(client.ending(), Ending::Eof(vec![]));
}

#[test]
fn random_garbage_floods_do_not_hurt_other_sessions() {
    let server = Server::start("shards = 2\n");
    let mut bystander = server.connect();
    bystander.hello();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..50 {
        let mut garbage = vec![0u8; 64 + round * 13];
        for byte in garbage.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *byte = seed as u8;
        }
        let mut victim = server.connect();
        victim.send_raw(&garbage);
        // One Error for the first bad header, then close; the rest of the garbage may still
        // be unread in the server's socket, which makes its close a reset.
        let ending = victim.ending();
        assert!(
            matches!(&ending, Ending::Eof(f) | Ending::Reset(f) if f == &[Kind::Error]),
            "round {round}: garbage gets one Error and closes its connection, got {ending:?}"
        );
    }
    let frame = echo_frame(1, b"alive");
    bystander.send_raw(&frame);
    assert_eq!(bystander.recv().bytes, frame);
}
