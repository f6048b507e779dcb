//! holdfast-client against the real server: Hello/Welcome and heartbeats, requests with
//! timeouts and the server's in-flight limit, the push stream (order, sequence numbers, gaps
//! when unread), acked events, auth tokens, and reconnecting after a drain and after a stall.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use holdfast_client::{
    mint_token, Client, ClientConfig, ConnectionState, Error, ErrorCode, Gap, Incoming, Push,
    PushStream, ServerError, TokenSource,
};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cluster::free_port;
use crate::fault_proxy::FaultProxy;
use crate::support::{admin_request, publish, Server, REPLY_TIMEOUT_MS};

const SECRET: &str = "test-secret-of-some-length";
/// How long a test waits for a state change (a reconnect included) before failing.
const STATE_TIMEOUT_MS: u64 = 10_000;

/// A config for `server` with test-sized backoff (so reconnects happen within seconds).
pub(crate) fn config(server: &Server) -> ClientConfig {
    let mut config = ClientConfig::tcp(server.addr.to_string());
    config.request_timeout_ms = REPLY_TIMEOUT_MS;
    config.reconnect_base_delay_ms = 50;
    config.reconnect_max_delay_ms = 400;
    config
}

pub(crate) async fn connect(config: ClientConfig) -> (Client, PushStream) {
    Client::connect(config).await.expect("client connects")
}

/// The next item on the push stream, or panic after REPLY_TIMEOUT_MS.
async fn next_item(pushes: &mut PushStream) -> Incoming {
    tokio::time::timeout(Duration::from_millis(REPLY_TIMEOUT_MS), pushes.recv())
        .await
        .expect("a push within the timeout")
        .expect("push stream open")
}

/// The next item on the push stream, which must be a push.
pub(crate) async fn next_push(pushes: &mut PushStream) -> Push {
    match next_item(pushes).await {
        Incoming::Push(push) => push,
        other => panic!("expected a push, got {other:?}"),
    }
}

fn publish_topic(server: &Server, topic: &str, payload: &str) -> u64 {
    let (status, body) = publish(
        server,
        &format!(r#"{{"target":"topic","topic":"{topic}","payload":"{payload}"}}"#),
        None,
    );
    assert_eq!(status, 202, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    json["seq"].as_u64().expect("publish answers its seq")
}

/// Waits until the client's state satisfies `wanted`; returns that state.
async fn wait_state(
    states: &mut watch::Receiver<ConnectionState>,
    what: &str,
    wanted: impl FnMut(&ConnectionState) -> bool,
) -> ConnectionState {
    let waited = tokio::time::timeout(
        Duration::from_millis(STATE_TIMEOUT_MS),
        states.wait_for(wanted),
    )
    .await
    .map(|found| found.map(|state| state.clone()));
    match waited {
        Ok(Ok(state)) => state,
        Ok(Err(_)) => panic!("client task ended while waiting for {what}"),
        Err(_) => {
            let now = states.borrow().clone();
            panic!("no {what} within {STATE_TIMEOUT_MS} ms: {now:?}")
        }
    }
}

/// Waits for the server process to exit without blocking the client's runtime.
async fn wait_exit(server: &mut Server) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "server did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops the server (SIGSTOP) and waits until every one of its threads is stopped: the
/// signal is asynchronous, and a frame handled in between would make a stall test pass or
/// fail by luck.
async fn stop(server: &Server) {
    server.signal(libc::SIGSTOP);
    let deadline = Instant::now() + Duration::from_secs(5);
    let all_stopped = || {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", server.pid())).unwrap();
        tasks.filter_map(Result::ok).all(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // The state follows the parenthesised command name: "pid (comm) T ...".
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
            matches!(state, Some(Some('T' | 't')))
        })
    };
    while !all_stopped() {
        assert!(Instant::now() < deadline, "server did not stop");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn client_hello_gets_welcome_with_the_servers_limits() {
    let server = Server::start(
        "shards = 1\nheartbeat_interval_ms = 2000\nheartbeat_min_interval_ms = 500\n\
         heartbeat_timeout_ms = 7000\nmax_frame_bytes = 32768\nmax_inflight_requests = 8\n",
    );
    let mut config = config(&server).with_client_id("device-1");
    config.heartbeat_ms = 1_000;
    let (client, _pushes) = connect(config).await;
    let info = client.session().expect("connected");
    assert_eq!(
        (
            info.heartbeat_ms,
            info.heartbeat_timeout_ms,
            info.max_frame_bytes,
            info.max_inflight_requests
        ),
        (1_000, 7_000, 32_768, 8),
        "the Hello's heartbeat within the server's bounds, and the server's limits"
    );
    assert_eq!(client.stats().sessions_opened, 1);
    // A frame over the server's max_frame_bytes is refused here, before it is sent.
    let too_big = client.request("echo", vec![0u8; 40_000]).await;
    assert!(
        matches!(
            too_big,
            Err(Error::FrameTooLarge {
                max_frame_bytes: 32_768
            })
        ),
        "{too_big:?}"
    );
    assert_eq!(&client.request("echo", "ok").await.unwrap()[..], b"ok");
}

#[tokio::test]
async fn client_heartbeats_keep_an_idle_session_open_past_the_servers_timeout() {
    let server = Server::start(
        "shards = 1\nheartbeat_interval_ms = 200\nheartbeat_min_interval_ms = 100\n\
         heartbeat_timeout_ms = 1000\ntimer_tick_ms = 10\n",
    );
    let (client, _pushes) = connect(config(&server)).await;
    let session_id = client.session().unwrap().session_id;
    // Three server timeouts of doing nothing: only heartbeats keep the session. The timeout is
    // five intervals, so a client stalled for most of a second by a loaded machine still makes it.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert_eq!(client.session().map(|s| s.session_id), Some(session_id));
    assert_eq!(
        &client.request("echo", "alive").await.unwrap()[..],
        b"alive"
    );
    assert_eq!(client.stats().sessions_opened, 1, "never reconnected");
}

#[tokio::test]
async fn client_requests_get_responses_and_typed_errors() {
    let server = Server::start("shards = 1\n");
    let (client, _pushes) = connect(config(&server)).await;
    assert_eq!(&client.request("echo", "body").await.unwrap()[..], b"body");
    client.request("kv.set", &b"color\0blue"[..]).await.unwrap();
    assert_eq!(
        &client.request("kv.get", "color").await.unwrap()[..],
        b"blue"
    );
    let unknown = client.request("no.such.method", "").await.unwrap_err();
    assert!(
        matches!(
            unknown,
            Error::Method(ServerError {
                code: ErrorCode::UnknownMethod,
                ..
            })
        ),
        "{unknown:?}"
    );
    let failed = client.request("kv.get", "missing").await.unwrap_err();
    assert_eq!(failed.code(), Some(ErrorCode::HandlerFailed), "{failed:?}");
    assert_eq!(
        &client.request("echo", "still open").await.unwrap()[..],
        b"still open"
    );
    assert_eq!(client.stats().sessions_opened, 1);
}

#[tokio::test]
async fn client_request_times_out_while_the_server_is_stopped_and_works_after() {
    let server = Server::start("shards = 1\n");
    let (client, _pushes) = connect(config(&server)).await;
    stop(&server).await;
    let started = Instant::now();
    let stalled = client
        .request_with_timeout("echo", "late", Duration::from_millis(300))
        .await;
    let waited = started.elapsed();
    server.signal(libc::SIGCONT);
    assert!(
        matches!(
            stalled,
            Err(Error::Timeout {
                waiting_for: "reply",
                after_ms: 300
            })
        ),
        "{stalled:?}"
    );
    assert!(
        (Duration::from_millis(300)..Duration::from_millis(2_000)).contains(&waited),
        "timed out after {waited:?}"
    );
    // The late answer to the timed-out request is discarded; the next gets its own.
    assert_eq!(
        &client.request("echo", "fresh").await.unwrap()[..],
        b"fresh"
    );
}

#[tokio::test]
async fn client_never_puts_more_requests_on_the_wire_than_welcome_allows() {
    // One more than the server's limit in flight would get TooManyInflight and a close.
    let server = Server::start("shards = 1\nmax_inflight_requests = 2\n");
    let (client, _pushes) = connect(config(&server)).await;
    assert_eq!(client.session().unwrap().max_inflight_requests, 2);
    let mut calls = JoinSet::new();
    for i in 0..200u32 {
        let client = client.clone();
        calls.spawn(async move {
            let body = format!("request {i}");
            let answer = client.request("echo", body.clone()).await;
            (body, answer)
        });
    }
    while let Some(joined) = calls.join_next().await {
        let (body, answer) = joined.unwrap();
        assert_eq!(answer.unwrap(), body.as_bytes(), "each answer is its own");
    }
    assert_eq!(
        client.stats().sessions_opened,
        1,
        "the server never cut us off"
    );
}

#[tokio::test]
async fn client_push_stream_delivers_in_order_with_sequence_numbers() {
    let server = Server::start("shards = 2\n");
    let (client, mut pushes) = connect(config(&server)).await;
    client.subscribe(["news", "sport"]).await.unwrap();
    for i in 1..=25 {
        assert_eq!(publish_topic(&server, "news", &format!("news {i}")), i);
        assert_eq!(publish_topic(&server, "sport", &format!("sport {i}")), i);
    }
    let mut seen = std::collections::HashMap::<String, Vec<u64>>::new();
    for _ in 0..50 {
        let push = next_push(&mut pushes).await;
        assert_eq!(
            push.payload,
            format!("{} {}", push.topic, push.seq).into_bytes(),
            "payload matches its topic and seq"
        );
        seen.entry(push.topic).or_default().push(push.seq);
    }
    let in_order: Vec<u64> = (1..=25).collect();
    assert_eq!(seen["news"], in_order);
    assert_eq!(seen["sport"], in_order);
    assert!(pushes.is_empty(), "no gap reports, nothing else");
    assert_eq!(client.last_seq("news"), Some(25));
    assert_eq!(
        client.subscriptions(),
        vec![("news".into(), Some(25)), ("sport".into(), Some(25))]
    );
    client.unsubscribe(["sport"]).await.unwrap();
    publish_topic(&server, "sport", "unheard");
    publish_topic(&server, "news", "news 26");
    assert_eq!(next_push(&mut pushes).await.seq, 26);
    assert!(pushes.is_empty(), "nothing from the topic left");
}

#[tokio::test]
async fn client_unread_push_stream_drops_then_reports_the_gap() {
    let server = Server::start("shards = 1\n");
    let mut config = config(&server);
    config.push_buffer_max_items = 4;
    let (client, mut pushes) = connect(config).await;
    client.subscribe(["news"]).await.unwrap();
    for i in 1..=20 {
        publish_topic(&server, "news", &format!("{i}"));
    }
    let deadline = Instant::now() + Duration::from_millis(REPLY_TIMEOUT_MS);
    while client.stats().pushes_delivered + client.stats().pushes_dropped < 20 {
        assert!(Instant::now() < deadline, "{:?}", client.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = client.stats();
    assert_eq!((stats.pushes_delivered, stats.pushes_dropped), (4, 16));
    // Nobody reads the stream, and requests go on regardless.
    assert_eq!(
        &client.request("echo", "unaffected").await.unwrap()[..],
        b"unaffected"
    );
    for seq in 1..=4 {
        assert_eq!(next_push(&mut pushes).await.seq, seq);
    }
    publish_topic(&server, "news", "21");
    assert_eq!(
        next_item(&mut pushes).await,
        Incoming::Gap(Gap::Missed {
            topic: "news".into(),
            first_missed_seq: 5,
            last_missed_seq: 20,
            dropped_here: 16
        })
    );
    let push = next_push(&mut pushes).await;
    assert_eq!((push.seq, &push.payload[..]), (21, &b"21"[..]));
    assert_eq!(client.stats().gaps_reported, 1);
}

#[tokio::test]
async fn client_events_are_acked_once_in_the_pipeline() {
    let server = Server::start("shards = 2\ntrending_interval_ms = 100\ntrending_top_k = 2\n");
    let (client, mut pushes) = connect(config(&server)).await;
    client.subscribe(["trending"]).await.unwrap();
    for item in ["apple", "pear", "apple", "fig", "apple", "pear"] {
        client.event(item, "").await.expect("acked");
    }
    // The acked events reached the processor: its next lists count every one of them.
    let deadline = Instant::now() + Duration::from_millis(REPLY_TIMEOUT_MS);
    loop {
        assert!(
            Instant::now() < deadline,
            "no trending push counting all events"
        );
        let push = next_push(&mut pushes).await;
        assert_eq!(push.topic, "trending");
        let json: serde_json::Value = serde_json::from_slice(&push.payload).unwrap();
        if json["top"][0]["count"] == 3 && json["top"][1]["count"] == 2 {
            assert_eq!(json["top"][0]["item"], "apple");
            assert_eq!(json["top"][1]["item"], "pear");
            break;
        }
    }
}

#[tokio::test]
async fn client_event_refused_by_a_full_pipeline_is_a_limit_error_and_the_session_lives() {
    let server = Server::start(
        "shards = 1\nevent_pipeline_capacity = 1\nevent_overflow_policy = \"drop\"\n",
    );
    let mut config = config(&server);
    config.max_inflight_acks = 2_000;
    config.command_queue_max_items = 2_000;
    let (client, _pushes) = connect(config).await;
    let mut events = JoinSet::new();
    for _ in 0..2_000 {
        let client = client.clone();
        events.spawn(async move { client.event("item", "e").await });
    }
    let (mut acked, mut refused) = (0, 0);
    while let Some(joined) = events.join_next().await {
        match joined.unwrap() {
            Ok(()) => acked += 1,
            Err(Error::Limit(ServerError {
                code: ErrorCode::LimitExceeded,
                ..
            })) => refused += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(acked > 0, "some events accepted");
    assert!(
        refused > 0,
        "a one-slot pipeline refuses some of a 2,000-event burst"
    );
    assert_eq!(
        &client.request("echo", "alive").await.unwrap()[..],
        b"alive"
    );
    assert_eq!(client.stats().sessions_opened, 1);
}

#[tokio::test]
async fn client_auth_with_a_minted_token_is_welcomed_and_bad_tokens_are_refused() {
    let server = Server::start(&format!("shards = 1\nauth_secret = \"{SECRET}\"\n"));
    let signed = config(&server)
        .with_client_id("device-1")
        .with_token(TokenSource::Secret {
            secret: SECRET.as_bytes().to_vec(),
            ttl_s: 60,
        });
    let (client, _pushes) = connect(signed).await;
    assert_eq!(&client.request("echo", "in").await.unwrap()[..], b"in");

    let refused = |config: ClientConfig| async move {
        match Client::connect(config).await {
            Ok(_) => panic!("connected with a bad token"),
            Err(error) => error,
        }
    };
    let wrong_secret = config(&server)
        .with_client_id("device-1")
        .with_token(TokenSource::Fixed(
            mint_token(b"not-the-secret", "device-1", 60).to_vec(),
        ));
    let error = refused(wrong_secret).await;
    assert!(
        matches!(
            error,
            Error::Auth(ServerError {
                code: ErrorCode::AuthFailed,
                ..
            })
        ),
        "{error:?}"
    );
    let expired = config(&server)
        .with_client_id("device-1")
        .with_token(TokenSource::Fixed(
            mint_token(SECRET.as_bytes(), "device-1", 0).to_vec(),
        ));
    assert_eq!(refused(expired).await.code(), Some(ErrorCode::AuthExpired));
    let anonymous = config(&server);
    assert_eq!(refused(anonymous).await.code(), Some(ErrorCode::AuthFailed));
}

#[tokio::test]
async fn client_reconnects_after_a_drain_honouring_goodbye_and_resubscribes() {
    const RECONNECT_AFTER_MS: u64 = 1_000;
    const RECONNECT_JITTER_MS: u64 = 200;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let toml = format!(
        "shards = 2\nreconnect_after_ms = {RECONNECT_AFTER_MS}\n\
         reconnect_jitter_ms = {RECONNECT_JITTER_MS}\n"
    );
    let mut server = Server::start_listening(listen, &toml, &[], &[]);
    let (client, mut pushes) = connect(config(&server)).await;
    client.subscribe(["news"]).await.unwrap();
    for i in 1..=3 {
        publish_topic(&server, "news", &format!("before {i}"));
    }
    for seq in 1..=3 {
        assert_eq!(next_push(&mut pushes).await.seq, seq);
    }
    let mut states = client.watch_state();

    let drained_at = Instant::now();
    server.signal(libc::SIGTERM);
    let goodbye = wait_state(&mut states, "Goodbye", |state| {
        matches!(
            state,
            ConnectionState::Disconnected {
                cause: Error::Goodbye { .. },
                ..
            }
        )
    })
    .await;
    let ConnectionState::Disconnected {
        cause: Error::Goodbye {
            reconnect_after_ms, ..
        },
        retry_in,
    } = goodbye
    else {
        unreachable!()
    };
    let hint_ms = u64::from(reconnect_after_ms);
    assert!(
        (RECONNECT_AFTER_MS..=RECONNECT_AFTER_MS + RECONNECT_JITTER_MS).contains(&hint_ms),
        "hint {hint_ms} ms"
    );
    assert_eq!(
        retry_in,
        Duration::from_millis(hint_ms),
        "waits the hint, as given"
    );
    assert!(wait_exit(&mut server).await.success());
    // A new server on the same address, up well before the hint runs out.
    let server = Server::start_listening(listen, &toml, &[], &[]);
    // Published on the new server before the client is back: replayed to it on resume.
    assert_eq!(publish_topic(&server, "news", "after 1"), 1);
    assert_eq!(
        client.stats().sessions_opened,
        1,
        "published while the client waits out the hint"
    );

    // Seen Disconnected above, so the next Connected is the new session (its id may equal
    // the old one: ids are shard, slot and generation, and the new process starts afresh).
    let connected = wait_state(&mut states, "the new session", |state| {
        matches!(
            state,
            ConnectionState::Connected(_) | ConnectionState::Closed { .. }
        )
    })
    .await;
    assert!(
        matches!(connected, ConnectionState::Connected(_)),
        "{connected:?}"
    );
    assert!(
        drained_at.elapsed() >= Duration::from_millis(hint_ms),
        "reconnected {:?} after SIGTERM, before the {hint_ms} ms hint",
        drained_at.elapsed()
    );
    assert_eq!(&client.request("echo", "back").await.unwrap()[..], b"back");
    // The resume's Ack tells it: the topic is in a new epoch (the restart lost the
    // history), so what was missed of the old one is unknown; then everything the new
    // server published follows, from seq 1.
    assert_eq!(
        next_item(&mut pushes).await,
        Incoming::Gap(Gap::Reset {
            topic: "news".into(),
            last_seen_seq: 3,
            received_seq: 1
        }),
        "the new server numbers from 1: the client says so"
    );
    let push = next_push(&mut pushes).await;
    assert_eq!((push.seq, &push.payload[..]), (1, &b"after 1"[..]));
    assert_eq!(publish_topic(&server, "news", "after 2"), 2);
    let push = next_push(&mut pushes).await;
    assert_eq!(
        (push.seq, &push.payload[..]),
        (2, &b"after 2"[..]),
        "live after it"
    );
    let stats = client.stats();
    assert_eq!((stats.sessions_opened, stats.goodbyes_received), (2, 1));
    assert_eq!(stats.resubscribe_failures, 0);
}

#[tokio::test]
async fn client_detects_a_stopped_server_by_heartbeat_and_reconnects_when_it_resumes() {
    let server = Server::start(
        "shards = 1\nheartbeat_interval_ms = 200\nheartbeat_min_interval_ms = 100\n\
         heartbeat_timeout_ms = 600\ntimer_tick_ms = 10\n",
    );
    let mut config = config(&server);
    config.hello_timeout_ms = 500;
    let (client, mut pushes) = connect(config).await;
    client.subscribe(["news"]).await.unwrap();
    let mut states = client.watch_state();
    stop(&server).await;
    let stopped_at = Instant::now();
    let dead = wait_state(&mut states, "dead-server detection", |state| {
        matches!(state, ConnectionState::Disconnected { .. })
    })
    .await;
    let detected_after = stopped_at.elapsed();
    server.signal(libc::SIGCONT);
    assert!(
        matches!(
            dead,
            ConnectionState::Disconnected {
                cause: Error::Timeout {
                    waiting_for: "server heartbeat",
                    ..
                },
                ..
            }
        ),
        "{dead:?}"
    );
    assert!(
        detected_after < Duration::from_millis(2_000),
        "detected after {detected_after:?}"
    );
    wait_state(&mut states, "a new session", |state| {
        matches!(state, ConnectionState::Connected(_))
    })
    .await;
    assert_eq!(client.stats().sessions_opened, 2);
    assert_eq!(&client.request("echo", "back").await.unwrap()[..], b"back");
    publish_topic(&server, "news", "x");
    assert_eq!(next_push(&mut pushes).await.topic, "news", "resubscribed");
}

#[tokio::test]
async fn client_close_fails_calls_and_ends_the_push_stream() {
    let server = Server::start("shards = 1\n");
    let (client, mut pushes) = connect(config(&server)).await;
    let other_handle = client.clone();
    client.close().await;
    assert!(matches!(
        other_handle.state(),
        ConnectionState::Closed { cause: None }
    ));
    assert!(matches!(
        other_handle.request("echo", "x").await,
        Err(Error::Closed)
    ));
    assert!(matches!(
        other_handle.subscribe(["news"]).await,
        Err(Error::Closed)
    ));
    let end = tokio::time::timeout(Duration::from_secs(5), pushes.recv()).await;
    assert_eq!(end.expect("stream ends promptly"), None);
}

#[tokio::test]
async fn client_gives_up_after_reconnect_max_attempts_and_closes() {
    let mut server = Server::start("shards = 1\nreconnect_after_ms = 0\nreconnect_jitter_ms = 0\n");
    let mut config = config(&server);
    config.reconnect_max_attempts = Some(2);
    let (client, mut pushes) = connect(config).await;
    let mut states = client.watch_state();
    server.signal(libc::SIGTERM);
    assert!(wait_exit(&mut server).await.success());
    // Nobody listens any more: two refused attempts, then the client closes for good.
    let closed = wait_state(&mut states, "giving up", ConnectionState::is_closed).await;
    let ConnectionState::Closed {
        cause: Some(Error::Transport(io)),
    } = &closed
    else {
        panic!("expected a transport cause, got {closed:?}")
    };
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused, "{io}");
    assert!(matches!(
        client.request("echo", "x").await,
        Err(Error::Closed)
    ));
    let end = tokio::time::timeout(Duration::from_secs(5), pushes.recv()).await;
    assert_eq!(end.expect("stream ends promptly"), None);
}

#[tokio::test]
async fn client_stops_reconnecting_when_the_server_refuses_its_token() {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let toml = format!(
        "shards = 1\nauth_secret = \"{SECRET}\"\nreconnect_after_ms = 0\nreconnect_jitter_ms = 0\n"
    );
    let mut server = Server::start_listening(listen, &toml, &[], &[]);
    // A token source whose first token is good and every later one signed with a wrong secret
    // (a credential revoked while the client was connected).
    let handed_out = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = handed_out.clone();
    let source = TokenSource::Callback(std::sync::Arc::new(move |client_id: &str| {
        let secret: &[u8] = match counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => SECRET.as_bytes(),
            _ => b"revoked",
        };
        mint_token(secret, client_id, 60).to_vec()
    }));
    let config = config(&server)
        .with_client_id("device-1")
        .with_token(source);
    let (client, _pushes) = connect(config).await;
    let mut states = client.watch_state();
    server.signal(libc::SIGTERM);
    assert!(wait_exit(&mut server).await.success());
    let _server = Server::start_listening(listen, &toml, &[], &[]);
    let closed = wait_state(&mut states, "giving up", ConnectionState::is_closed).await;
    let ConnectionState::Closed { cause: Some(cause) } = &closed else {
        panic!("expected a cause, got {closed:?}")
    };
    assert!(
        matches!(
            cause,
            Error::Auth(ServerError {
                code: ErrorCode::AuthFailed,
                ..
            })
        ),
        "{cause:?}"
    );
    // Refused credentials are not retried: no token is asked for after the refusal. (How many
    // connects the restart took depends on how fast the new server came up.)
    let at_refusal = handed_out.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        at_refusal >= 2,
        "a token for the first Hello and one after the restart"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        handed_out.load(std::sync::atomic::Ordering::SeqCst),
        at_refusal
    );
}

/// A client connected through a fault proxy to `server`, subscribed to `topic`.
async fn subscribed_through_proxy(
    server: &Server,
    proxy: &FaultProxy,
    topic: &str,
) -> (Client, PushStream) {
    let mut config = config(server);
    config.endpoint = ClientConfig::tcp(proxy.addr().to_string()).endpoint;
    let (client, pushes) = connect(config).await;
    client.subscribe([topic]).await.unwrap();
    (client, pushes)
}

/// Cuts the client's current link and waits until it has opened a new session (counted, so a
/// reconnect quicker than this task's polling is not missed).
async fn cut_and_wait_reconnect(client: &Client, proxy: &FaultProxy) {
    let sessions_before = client.stats().sessions_opened;
    proxy.links().last().expect("a link").cut();
    let deadline = Instant::now() + Duration::from_millis(STATE_TIMEOUT_MS);
    while client.stats().sessions_opened == sessions_before {
        assert!(
            Instant::now() < deadline,
            "no new session within {STATE_TIMEOUT_MS} ms: {:?}",
            client.watch_state().borrow().clone()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// While `client` (subscribed to "news" through `proxy`, its first session) reads, publishes
/// `published` pushes on "news" over HTTP, 2 ms apart, and cuts the link after `cut_after`
/// arrived; asserts every push arrived once, in order, with no gap, over exactly two sessions,
/// both through the proxy. Used over every transport (client_transports.rs).
pub(crate) async fn every_push_once_across_a_cut(
    server: &Server,
    proxy: &FaultProxy,
    client: &Client,
    pushes: &mut PushStream,
    published: u64,
    cut_after: u64,
) {
    let admin = server.admin.expect("admin listener on");
    // The publisher goes on through the cut and the reconnect, over HTTP.
    let publisher = std::thread::spawn(move || {
        for i in 1..=published {
            let json = format!(r#"{{"target":"topic","topic":"news","payload":"{i}"}}"#);
            let raw = format!(
                "POST /publish HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{json}",
                json.len()
            );
            let (status, body) = admin_request(admin, &raw);
            assert_eq!(status, 202, "{body}");
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let mut seqs = Vec::new();
    while seqs.len() < cut_after as usize {
        seqs.push(next_push(pushes).await.seq);
    }
    cut_and_wait_reconnect(client, proxy).await;
    while seqs.len() < published as usize {
        match next_item(pushes).await {
            Incoming::Push(push) => {
                assert_eq!(push.payload, push.seq.to_string().into_bytes());
                seqs.push(push.seq);
            }
            other => panic!("after {} pushes: {other:?}", seqs.len()),
        }
    }
    publisher.join().expect("publisher");
    assert_eq!(
        seqs,
        (1..=published).collect::<Vec<_>>(),
        "every seq once, in order"
    );
    let stats = client.stats();
    assert_eq!(stats.sessions_opened, 2, "the cut forced one reconnect");
    assert_eq!((stats.gaps_reported, stats.resubscribe_failures), (0, 0));
    assert_eq!(
        proxy.links().len(),
        2,
        "the second session went through the proxy too"
    );
    assert!(
        pushes.is_empty(),
        "nothing after the last push: {:?}",
        pushes.try_recv()
    );
}

#[tokio::test]
async fn client_resumes_after_a_cut_connection_with_every_push_once_in_order_and_no_gap() {
    let server = Server::start("shards = 2\nhistory_max_messages = 100000\n");
    let proxy = FaultProxy::start(server.addr);
    let (client, mut pushes) = subscribed_through_proxy(&server, &proxy, "news").await;
    every_push_once_across_a_cut(&server, &proxy, &client, &mut pushes, 400, 60).await;
}

#[tokio::test]
async fn client_away_longer_than_the_history_window_is_told_exactly_what_was_lost() {
    let server = Server::start("shards = 2\nhistory_max_messages = 5\n");
    let proxy = FaultProxy::start(server.addr);
    let (client, mut pushes) = subscribed_through_proxy(&server, &proxy, "news").await;
    for i in 1..=3 {
        publish_topic(&server, "news", &i.to_string());
    }
    for seq in 1..=3 {
        assert_eq!(next_push(&mut pushes).await.seq, seq);
    }
    // The link goes silent (pushes swallowed), 20 more are published, then it breaks.
    proxy.links().last().expect("a link").blackhole();
    for i in 4..=23 {
        publish_topic(&server, "news", &i.to_string());
    }
    cut_and_wait_reconnect(&client, &proxy).await;
    assert_eq!(
        next_item(&mut pushes).await,
        Incoming::Gap(Gap::Missed {
            topic: "news".into(),
            first_missed_seq: 4,
            last_missed_seq: 23,
            dropped_here: 0
        }),
        "only 19..=23 are held: nothing replayed, the whole range reported"
    );
    assert_eq!(publish_topic(&server, "news", "24"), 24);
    let push = next_push(&mut pushes).await;
    assert_eq!(
        (push.seq, &push.payload[..]),
        (24, &b"24"[..]),
        "live, no second gap"
    );
    assert_eq!(client.stats().gaps_reported, 1);
    assert!(pushes.is_empty());
}

#[tokio::test]
async fn client_with_history_off_resumes_only_when_nothing_was_missed() {
    let server = Server::start("shards = 1\nhistory_max_messages = 0\n");
    let proxy = FaultProxy::start(server.addr);
    let (client, mut pushes) = subscribed_through_proxy(&server, &proxy, "news").await;
    publish_topic(&server, "news", "1");
    assert_eq!(next_push(&mut pushes).await.seq, 1);
    // Nothing published while away: the server acks recovered, no report.
    cut_and_wait_reconnect(&client, &proxy).await;
    assert_eq!(&client.request("echo", "back").await.unwrap()[..], b"back");
    publish_topic(&server, "news", "2");
    assert_eq!(next_push(&mut pushes).await.seq, 2, "no gap before it");
    // Published while away: nothing held, so it is reported lost.
    proxy.links().last().expect("a link").blackhole();
    publish_topic(&server, "news", "3");
    cut_and_wait_reconnect(&client, &proxy).await;
    assert_eq!(
        next_item(&mut pushes).await,
        Incoming::Gap(Gap::Missed {
            topic: "news".into(),
            first_missed_seq: 3,
            last_missed_seq: 3,
            dropped_here: 0
        })
    );
    publish_topic(&server, "news", "4");
    assert_eq!(next_push(&mut pushes).await.seq, 4);
    let stats = client.stats();
    assert_eq!((stats.sessions_opened, stats.gaps_reported), (3, 1));
}
