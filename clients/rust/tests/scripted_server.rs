//! The client against a scripted server on loopback: each accepted connection gets exactly the
//! frames a test scripts, to reach paths the real server only takes under conditions that are
//! hard to arrange (a refusal at the connection cap in the middle of a reconnect, a server that
//! breaks the protocol). The real server is tested in the workspace's tests/e2e/client.rs.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use holdfast_client::{Client, ClientConfig, ConnectionState, Error, ErrorCode, Gap, Incoming};
use holdfast_protocol::payload::{ErrorBody, Goodbye, Welcome};
use holdfast_protocol::{encode_frame, encode_raw, Kind, HEADER_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long a test waits for anything before failing.
const WAIT_MS: u64 = 5_000;

fn welcome() -> BytesMut {
    let mut out = BytesMut::new();
    let welcome = Welcome {
        session_id: 7,
        heartbeat_ms: 15_000,
        heartbeat_timeout_ms: 45_000,
        max_frame_bytes: 65_536,
        max_inflight_requests: 64,
    };
    encode_frame(&mut out, 0, 1, &welcome, 65_536).unwrap();
    out
}

/// What a server at its connection cap sends: Error server_full (id 0), then Goodbye.
fn server_full(reconnect_after_ms: u32) -> BytesMut {
    let mut out = BytesMut::new();
    let error = ErrorBody {
        code: ErrorCode::ServerFull as u16,
        reason: "server full",
    };
    encode_frame(&mut out, 0, 0, &error, 65_536).unwrap();
    let goodbye = Goodbye {
        reason: "server full",
        reconnect_after_ms,
    };
    encode_frame(&mut out, 0, 0, &goodbye, 65_536).unwrap();
    out
}

/// Reads the client's Hello header (its payload, if any, is left unread).
async fn read_hello(stream: &mut TcpStream) {
    let mut header = [0u8; HEADER_BYTES];
    stream.read_exact(&mut header).await.unwrap();
    assert_eq!(header[5], Kind::Hello as u8, "the first frame is a Hello");
}

async fn accept(listener: &TcpListener) -> TcpStream {
    tokio::time::timeout(Duration::from_millis(WAIT_MS), listener.accept())
        .await
        .expect("the client connects")
        .unwrap()
        .0
}

/// Accepts the client's next connection and opens a session on it: its Hello, our Welcome.
async fn accept_session(listener: &TcpListener) -> TcpStream {
    let mut stream = accept(listener).await;
    read_hello(&mut stream).await;
    stream.write_all(&welcome()).await.unwrap();
    stream
}

async fn wait_state(
    states: &mut watch::Receiver<ConnectionState>,
    wanted: impl FnMut(&ConnectionState) -> bool,
) -> ConnectionState {
    tokio::time::timeout(Duration::from_millis(WAIT_MS), states.wait_for(wanted))
        .await
        .expect("the state arrives")
        .expect("the client task lives")
        .clone()
}

fn config(listener: &TcpListener) -> ClientConfig {
    let mut config = ClientConfig::tcp(listener.local_addr().unwrap().to_string());
    // Backoff far below the hint, so honouring the hint is what the timing shows.
    config.reconnect_base_delay_ms = 10;
    config.reconnect_max_delay_ms = 20;
    config
}

#[tokio::test]
async fn a_refusal_at_the_connection_cap_is_retried_after_its_goodbye_hint() {
    const HINT_MS: u32 = 400;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = config(&listener);
    let script = async {
        // 1: a session, then the connection drops (a crash, say).
        drop(accept_session(&listener).await);
        // 2: the reconnect finds the server full.
        let mut second = accept(&listener).await;
        second.write_all(&server_full(HINT_MS)).await.unwrap();
        second.shutdown().await.unwrap();
        let refused_at = Instant::now();
        // 3: the next attempt gets in.
        let mut third = accept(&listener).await;
        let waited = refused_at.elapsed();
        read_hello(&mut third).await;
        third.write_all(&welcome()).await.unwrap();
        (waited, third)
    };
    let client_side = async {
        let (client, _pushes) = Client::connect(config).await.unwrap();
        let mut states = client.watch_state();
        let refused = wait_state(&mut states, |state| {
            matches!(
                state,
                ConnectionState::Disconnected {
                    cause: Error::Unavailable(_),
                    ..
                }
            )
        })
        .await;
        let back = wait_state(&mut states, |state| {
            matches!(state, ConnectionState::Connected(_))
        })
        .await;
        (client, refused, back)
    };
    let ((waited, _third), (client, refused, back)) = tokio::join!(script, client_side);
    let ConnectionState::Disconnected { cause, retry_in } = refused else {
        unreachable!()
    };
    assert_eq!(cause.code(), Some(ErrorCode::ServerFull), "{cause:?}");
    assert_eq!(retry_in, Duration::from_millis(u64::from(HINT_MS)));
    assert!(
        waited >= Duration::from_millis(u64::from(HINT_MS)),
        "came back after {waited:?}, before the {HINT_MS} ms hint"
    );
    assert_eq!(back.session().map(|s| s.session_id), Some(7));
    assert_eq!(client.stats().sessions_opened, 2);
}

#[tokio::test]
async fn a_first_connect_refused_at_the_cap_reports_server_full() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = config(&listener);
    let script = async {
        let mut stream = accept(&listener).await;
        stream.write_all(&server_full(1_000)).await.unwrap();
        stream.shutdown().await.unwrap();
        stream
    };
    let (_stream, connected) = tokio::join!(script, Client::connect(config));
    let error = connected.expect_err("refused");
    assert!(
        matches!(&error, Error::Unavailable(server) if server.code == ErrorCode::ServerFull),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_server_that_breaks_the_protocol_loses_the_connection_not_the_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = config(&listener);
    // The client side says when it has seen each session, so the script breaks the protocol
    // only then (a session lost before it was seen would be skipped by the state watch).
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let script = async {
        let mut first = accept_session(&listener).await;
        seen_rx.recv().await.unwrap();
        // A Request is a client-only kind: the client must drop this connection.
        let mut bogus = BytesMut::new();
        let request = holdfast_protocol::payload::Request {
            method: "x",
            body: b"",
        };
        encode_frame(&mut bogus, 0, 9, &request, 65_536).unwrap();
        first.write_all(&bogus).await.unwrap();
        let mut second = accept_session(&listener).await;
        seen_rx.recv().await.unwrap();
        // A header that is not a frame at all.
        second.write_all(&[0xffu8; HEADER_BYTES]).await.unwrap();
        let mut third = accept_session(&listener).await;
        // A Ping must be answered with a Pong carrying its id.
        let mut ping = BytesMut::new();
        encode_raw(&mut ping, Kind::Ping, 0, 42, &[], 65_536).unwrap();
        third.write_all(&ping).await.unwrap();
        let mut pong = [0u8; HEADER_BYTES];
        loop {
            third.read_exact(&mut pong).await.unwrap();
            if pong[5] == Kind::Pong as u8 {
                break;
            }
        }
        (first, second, third, pong)
    };
    let client_side = async {
        let (client, _pushes) = Client::connect(config).await.unwrap();
        let mut states = client.watch_state();
        let mut causes = Vec::new();
        while causes.len() < 2 {
            seen_tx.send(()).unwrap();
            // Disconnected may pass unseen (a backoff of 0 ms); Connecting cannot, since it
            // waits for the script's Welcome, and it carries the cause too.
            let state = wait_state(&mut states, |state| {
                matches!(
                    state,
                    ConnectionState::Disconnected { .. } | ConnectionState::Connecting { .. }
                )
            })
            .await;
            if let ConnectionState::Disconnected { cause, .. }
            | ConnectionState::Connecting { cause, .. } = state
            {
                causes.push(cause);
            }
            wait_state(&mut states, |state| {
                matches!(state, ConnectionState::Connected(_))
            })
            .await;
        }
        (client, causes)
    };
    let ((_first, _second, _third, pong), (client, causes)) = tokio::join!(script, client_side);
    assert!(
        matches!(
            causes[0],
            Error::UnexpectedFrame {
                kind: Kind::Request,
                id: 9
            }
        ),
        "{:?}",
        causes[0]
    );
    assert!(matches!(causes[1], Error::Decode(_)), "{:?}", causes[1]);
    assert_eq!(u64::from_le_bytes(pong[8..16].try_into().unwrap()), 42);
    assert_eq!(client.stats().sessions_opened, 3);
}

/// Reads one whole frame: (kind byte, id, payload).
async fn read_frame(stream: &mut TcpStream) -> (u8, u64, Vec<u8>) {
    let mut header = [0u8; HEADER_BYTES];
    tokio::time::timeout(
        Duration::from_millis(WAIT_MS),
        stream.read_exact(&mut header),
    )
    .await
    .expect("a frame in time")
    .unwrap();
    let total = u32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
    let mut payload = vec![0u8; total - HEADER_BYTES];
    stream.read_exact(&mut payload).await.unwrap();
    let id = u64::from_le_bytes(header[8..16].try_into().unwrap());
    (header[5], id, payload)
}

/// Reads frames until one of `kind` (answering Pings), returns its id.
async fn expect_kind(stream: &mut TcpStream, kind: Kind) -> u64 {
    loop {
        let (got, id, _) = read_frame(stream).await;
        if got == kind as u8 {
            return id;
        }
        assert!(
            got == Kind::Ping as u8 || got == Kind::Pong as u8,
            "expected {kind:?}, got kind {got}"
        );
    }
}

/// The next item of the push stream, within WAIT_MS.
async fn next_item(pushes: &mut holdfast_client::PushStream) -> Incoming {
    tokio::time::timeout(Duration::from_millis(WAIT_MS), pushes.recv())
        .await
        .expect("an item in time")
        .expect("stream open")
}

fn frame(kind_frame: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut out = BytesMut::new();
    kind_frame(&mut out);
    out
}

fn push(seq: u64) -> BytesMut {
    frame(|out| {
        let push = holdfast_protocol::payload::Push {
            topic: "news",
            seq,
            payload: b"p",
        };
        encode_frame(out, 0, 0, &push, 65_536).unwrap();
    })
}

/// `answer` followed by the pushes of `seqs`, in one write.
fn then_pushes(mut answer: BytesMut, seqs: std::ops::RangeInclusive<u64>) -> BytesMut {
    for seq in seqs {
        answer.extend_from_slice(&push(seq));
    }
    answer
}

/// An Ack (no payload) answering request `id`.
fn ack(id: u64) -> BytesMut {
    frame(|out| {
        encode_raw(out, Kind::Ack, 0, id, &[], 65_536).unwrap();
    })
}

/// A server from before SubscribeResume (kind 15) answers it with Error unknown_kind: the
/// client subscribes again with plain Subscribe (and keeps doing so after a reconnect), and
/// what it missed while away is reported as a gap before the next push.
#[tokio::test]
async fn a_server_without_subscribe_resume_gets_plain_subscribe_and_the_gap_is_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = config(&listener);
    let script = async {
        let mut first = accept_session(&listener).await;
        let resume_id = expect_kind(&mut first, Kind::SubscribeResume).await;
        let refusal = frame(|out| {
            let error = ErrorBody {
                code: ErrorCode::UnknownKind as u16,
                reason: "unknown kind 15",
            };
            encode_frame(out, 0, resume_id, &error, 65_536).unwrap();
        });
        first.write_all(&refusal).await.unwrap();
        let subscribe_id = expect_kind(&mut first, Kind::Subscribe).await;
        let answer = then_pushes(ack(subscribe_id), 1..=2);
        first.write_all(&answer).await.unwrap();
        // Pushes 3 and 4 are published while the client is away.
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(first);
        let mut second = accept_session(&listener).await;
        // Straight to plain Subscribe: the client remembers the server has no kind 15.
        let subscribe_id = expect_kind(&mut second, Kind::Subscribe).await;
        let answer = then_pushes(ack(subscribe_id), 5..=5);
        second.write_all(&answer).await.unwrap();
        second
    };
    let client_side = async {
        let (client, mut pushes) = Client::connect(config).await.unwrap();
        client
            .subscribe(["news"])
            .await
            .expect("subscribed with the fallback");
        let mut items = Vec::new();
        while items.len() < 4 {
            items.push(next_item(&mut pushes).await);
        }
        (client, items)
    };
    let (_second, (client, items)) = tokio::join!(script, client_side);
    let seqs: Vec<String> = items
        .iter()
        .map(|item| match item {
            Incoming::Push(push) => format!("push {}", push.seq),
            Incoming::Gap(gap) => format!("{gap:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs[..2], ["push 1", "push 2"]);
    assert_eq!(
        items[2],
        Incoming::Gap(Gap::Missed {
            topic: "news".into(),
            first_missed_seq: 3,
            last_missed_seq: 4,
            dropped_here: 0
        }),
        "{seqs:?}"
    );
    assert_eq!(seqs[3], "push 5");
    let stats = client.stats();
    assert_eq!((stats.resume_fallbacks, stats.sessions_opened), (1, 2));
    assert_eq!(stats.resubscribe_failures, 0);
}

/// A SubscribeAck answering one topic with `epoch`, `seq` and `recovered`.
fn subscribe_ack(id: u64, epoch: u64, seq: u64, recovered: u8) -> BytesMut {
    frame(|out| {
        let topics = [holdfast_protocol::payload::TopicResumed {
            epoch,
            seq,
            oldest_seq: u64::from(seq > 0),
            recovered,
        }];
        let ack = holdfast_protocol::payload::SubscribeAck { topics: &topics };
        encode_frame(out, 0, id, &ack, 65_536).unwrap();
    })
}

/// A resume the server could not look up in time (`epoch = 0`) is asked again; live pushes
/// that arrive before the second answer carry numbers of an epoch the client does not know
/// yet. Delivered, they came a second time in the replay the second answer brings (the
/// server restarted: every push of its new epoch is replayed from seq 1). They are dropped
/// instead: every push once, in order, after one reset.
#[tokio::test]
async fn pushes_between_a_resume_answered_epoch_0_and_its_retry_are_not_delivered_twice() {
    const OLD_EPOCH: u64 = 11;
    const NEW_EPOCH: u64 = 22;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = config(&listener);
    let script = async {
        let mut first = accept_session(&listener).await;
        let resume_id = expect_kind(&mut first, Kind::SubscribeResume).await;
        let answer = then_pushes(subscribe_ack(resume_id, OLD_EPOCH, 0, 0), 1..=2);
        first.write_all(&answer).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The server restarts: a new epoch whose first pushes are 1 and 2.
        drop(first);
        let mut second = accept_session(&listener).await;
        let resume_id = expect_kind(&mut second, Kind::SubscribeResume).await;
        // The owner did not answer in time; live pushes follow the Ack.
        let answer = then_pushes(subscribe_ack(resume_id, 0, 0, 0), 1..=2);
        second.write_all(&answer).await.unwrap();
        let retry_id = expect_kind(&mut second, Kind::SubscribeResume).await;
        // Another epoch, held from seq 1: everything of it replayed, then live.
        let answer = then_pushes(subscribe_ack(retry_id, NEW_EPOCH, 0, 0), 1..=3);
        second.write_all(&answer).await.unwrap();
        second
    };
    let client_side = async {
        let (client, mut pushes) = Client::connect(config).await.unwrap();
        client.subscribe(["news"]).await.expect("subscribed");
        let mut items = Vec::new();
        while !matches!(items.last(), Some(Incoming::Push(push)) if push.seq == 3) {
            items.push(next_item(&mut pushes).await);
        }
        (client, items)
    };
    let (_second, (client, items)) = tokio::join!(script, client_side);
    let seen: Vec<String> = items
        .iter()
        .map(|item| match item {
            Incoming::Push(push) => format!("push {}", push.seq),
            Incoming::Gap(Gap::Reset {
                last_seen_seq,
                received_seq,
                ..
            }) => format!("reset {last_seen_seq} -> {received_seq}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        seen,
        [
            "push 1",
            "push 2",
            "reset 2 -> 1",
            "push 1",
            "push 2",
            "push 3"
        ]
    );
    let stats = client.stats();
    assert_eq!(stats.pushes_awaiting_resume, 2);
    assert_eq!(stats.sessions_opened, 2);
}
