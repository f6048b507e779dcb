//! Push and events end to end: topic, broadcast, connection and client targets across two
//! shards; sequence numbers; subscribe/unsubscribe; stale ids; bad publish requests; the event
//! pipeline's ack, drop and backpressure behaviour; the trending processor.

use bytes::BytesMut;
use holdfast_client::{ClientConfig, Error, PublishTarget, Published, TokenSource};
use holdfast_protocol::payload::{Event, Subscribe, TopicName, Unsubscribe};
use holdfast_protocol::{encode_frame, ErrorCode, Kind, FLAG_ACK_REQUESTED};

use crate::client::{connect, next_push};
use crate::history::{nothing_pending, push_of};
use crate::support::{publish, Client, Server};

pub(crate) fn topics_frame(kind: Kind, id: u64, names: &[&str]) -> Vec<u8> {
    let topics: Vec<TopicName<'_>> = names.iter().map(|name| TopicName { name }).collect();
    let mut out = BytesMut::new();
    let topics = &topics;
    match kind {
        Kind::Subscribe => encode_frame(&mut out, 0, id, &Subscribe { topics }, 65_536),
        Kind::Unsubscribe => encode_frame(&mut out, 0, id, &Unsubscribe { topics }, 65_536),
        other => panic!("{other:?} is not a topics frame"),
    }
    .unwrap();
    out.to_vec()
}

fn event_frame(id: u64, topic: &str, ack: bool) -> Vec<u8> {
    let mut out = BytesMut::new();
    let flags = if ack { FLAG_ACK_REQUESTED } else { 0 };
    encode_frame(
        &mut out,
        flags,
        id,
        &Event {
            topic,
            payload: b"e",
        },
        65_536,
    )
    .unwrap();
    out.to_vec()
}

fn subscribe(client: &mut Client, id: u64, names: &[&str]) {
    client.send_raw(&topics_frame(Kind::Subscribe, id, names));
    let ack = client.recv();
    assert_eq!((ack.kind, ack.id), (Kind::Ack, id), "got {ack:?}");
}

#[test]
fn topic_publish_reaches_subscribers_on_both_shards_in_sequence() {
    let server = Server::start("shards = 2\n");
    let mut subscribers: Vec<Client> = (0..8).map(|_| server.connect()).collect();
    for client in &mut subscribers {
        client.hello();
        subscribe(client, 1, &["news"]);
    }
    let mut bystander = server.connect();
    bystander.hello();
    for i in 1..=3 {
        let (status, body) = publish(
            &server,
            &format!(r#"{{"target":"topic","topic":"news","payload":"item {i}"}}"#),
            None,
        );
        assert_eq!(status, 202, "{body}");
        assert!(body.contains(&format!("\"seq\":{i}")), "{body}");
    }
    for client in &mut subscribers {
        for i in 1..=3u64 {
            assert_eq!(
                push_of(&client.recv()),
                ("news".into(), i, format!("item {i}").into_bytes())
            );
        }
    }
    nothing_pending(&mut bystander);
}

#[test]
fn broadcast_reaches_every_open_session() {
    let server = Server::start("shards = 2\n");
    let mut clients: Vec<Client> = (0..6).map(|_| server.connect()).collect();
    for client in &mut clients {
        client.hello();
    }
    let (status, _) = publish(
        &server,
        r#"{"target":"broadcast","payload_base64":"AAEC"}"#,
        None,
    );
    assert_eq!(status, 202);
    for client in &mut clients {
        assert_eq!(push_of(&client.recv()), ("*".into(), 1, vec![0, 1, 2]));
    }
}

#[test]
fn connection_target_delivers_and_a_stale_id_is_refused() {
    let server = Server::start("shards = 2\n");
    let mut client = server.connect();
    let id = client.hello();
    let (status, body) = publish(
        &server,
        &format!(r#"{{"target":"conn","conn_id":{id},"payload":"hi"}}"#),
        None,
    );
    assert_eq!((status, body.trim()), (200, r#"{"delivered":1}"#));
    assert_eq!(push_of(&client.recv()).2, b"hi");
    drop(client);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let (status, _) = publish(
        &server,
        &format!(r#"{{"target":"conn","conn_id":{id},"payload":"hi"}}"#),
        None,
    );
    assert_eq!(status, 404, "the closed connection's id is stale");
}

#[tokio::test]
async fn client_id_target_reaches_that_clients_session() {
    let server = Server::start("shards = 2\n");
    let (alice, mut pushes) =
        connect(ClientConfig::tcp(server.addr.to_string()).with_client_id("alice")).await;
    alice.request("echo", "").await.unwrap(); // the directory registration has landed by now
    let (status, body) = publish(
        &server,
        r#"{"target":"client","client_id":"alice","payload":"for alice"}"#,
        None,
    );
    assert_eq!((status, body.trim()), (200, r#"{"delivered":1}"#));
    let push = next_push(&mut pushes).await;
    assert_eq!(
        (push.topic.as_str(), push.seq, &push.payload[..]),
        ("", 0, &b"for alice"[..]),
        "pushes to a client id carry no topic and no sequence number"
    );
    let (status, _) = publish(
        &server,
        r#"{"target":"client","client_id":"bob","payload":"x"}"#,
        None,
    );
    assert_eq!(status, 404);
}

#[test]
fn unsubscribe_stops_delivery() {
    let server = Server::start("shards = 1\n");
    let mut client = server.connect();
    client.hello();
    subscribe(&mut client, 1, &["a", "b"]);
    client.send_raw(&topics_frame(Kind::Unsubscribe, 2, &["a"]));
    assert_eq!(client.recv().kind, Kind::Ack);
    publish(
        &server,
        r#"{"target":"topic","topic":"a","payload":"x"}"#,
        None,
    );
    publish(
        &server,
        r#"{"target":"topic","topic":"b","payload":"y"}"#,
        None,
    );
    assert_eq!(push_of(&client.recv()).0, "b");
    nothing_pending(&mut client);
}

#[test]
fn too_many_topics_and_bad_names_are_refused_with_limit_exceeded() {
    let server = Server::start("shards = 1\nmax_topics_per_session = 2\n");
    let mut client = server.connect();
    client.hello();
    client.send_raw(&topics_frame(Kind::Subscribe, 5, &["a", "b", "c"]));
    assert_eq!(client.recv().error_code(), Some(ErrorCode::LimitExceeded));
    client.send_raw(&topics_frame(Kind::Subscribe, 6, &["*"]));
    assert_eq!(client.recv().error_code(), Some(ErrorCode::LimitExceeded));
    nothing_pending(&mut client);
}

#[test]
fn bad_publish_requests_get_clear_errors() {
    let server = Server::start("shards = 1\npublish_secret = \"publish-secret-0123456789\"\nmax_frame_bytes = 1024\nmax_outbound_bytes = 4096\n");
    let secret = Some("publish-secret-0123456789");
    assert_eq!(
        publish(&server, r#"{"target":"broadcast","payload":"x"}"#, None).0,
        401
    );
    assert_eq!(
        publish(
            &server,
            r#"{"target":"broadcast","payload":"x"}"#,
            Some("wrong")
        )
        .0,
        401
    );
    assert_eq!(
        publish(&server, r#"{"target":"nowhere","payload":"x"}"#, secret).0,
        400
    );
    assert_eq!(
        publish(&server, r#"{"target":"topic","payload":"x"}"#, secret).0,
        400
    );
    assert_eq!(publish(&server, "not json", secret).0, 400);
    let big = "x".repeat(2000);
    assert_eq!(
        publish(
            &server,
            &format!(r#"{{"target":"broadcast","payload":"{big}"}}"#),
            secret
        )
        .0,
        413
    );
    assert_eq!(
        publish(&server, r#"{"target":"broadcast","payload":"ok"}"#, secret).0,
        202
    );
}

/// Sends `count` events with the ack flag in one write; returns (acks, limit errors) in id order.
fn flood_events(client: &mut Client, count: u64) -> (Vec<u64>, Vec<u64>) {
    let mut batch = Vec::new();
    for id in 1..=count {
        batch.extend_from_slice(&event_frame(id, "item", true));
    }
    client.send_raw(&batch);
    let (mut acks, mut errors) = (Vec::new(), Vec::new());
    while (acks.len() + errors.len()) < count as usize {
        let frame = client.recv();
        match (frame.kind, frame.error_code()) {
            (Kind::Ack, _) => acks.push(frame.id),
            (Kind::Error, Some(ErrorCode::LimitExceeded)) => errors.push(frame.id),
            other => panic!("unexpected {other:?}"),
        }
    }
    (acks, errors)
}

#[test]
fn drop_policy_answers_every_event_with_ack_or_error_and_drops_some() {
    let server = Server::start(
        "shards = 1\nevent_pipeline_capacity = 1\nevent_overflow_policy = \"drop\"\n",
    );
    let mut client = server.connect();
    client.hello();
    let (acks, errors) = flood_events(&mut client, 2000);
    assert_eq!(acks.len() + errors.len(), 2000, "each event answered once");
    assert!(
        !errors.is_empty(),
        "a one-slot pipeline drops under a 2,000-event burst"
    );
    assert!(!acks.is_empty());
}

#[test]
fn backpressure_policy_accepts_every_event_in_order() {
    let server = Server::start(
        "shards = 1\nevent_pipeline_capacity = 1\nevent_overflow_policy = \"backpressure\"\n",
    );
    let mut client = server.connect();
    client.hello();
    let (acks, errors) = flood_events(&mut client, 2000);
    assert!(
        errors.is_empty(),
        "nothing dropped: {} errors",
        errors.len()
    );
    assert_eq!(
        acks,
        (1..=2000).collect::<Vec<u64>>(),
        "every event acked, in order"
    );
    let mut other = server.connect();
    other.hello();
    nothing_pending(&mut other);
}

#[test]
fn backpressure_parks_one_event_per_paused_connection_and_holds_the_rest_unread() {
    // A 16-slot pipeline and room for only 4 parked events: 4 connections flooding at once
    // pause again and again. Each pause parks the one event that found the pipeline full and
    // keeps the rest of what was read as bytes, so the parking area never overflows and no
    // event is refused.
    let server = Server::start(
        "shards = 1\nevent_pipeline_capacity = 16\nevent_overflow_policy = \"backpressure\"\n\
         event_parked_max = 4\n",
    );
    let floods: Vec<_> = (0..4)
        .map(|_| {
            let mut client = server.connect();
            client.hello();
            std::thread::spawn(move || flood_events(&mut client, 2000))
        })
        .collect();
    for flood in floods {
        let (acks, errors) = flood.join().unwrap();
        assert!(errors.is_empty(), "{} events refused", errors.len());
        assert_eq!(
            acks,
            (1..=2000).collect::<Vec<u64>>(),
            "all acked, in order"
        );
    }
}

#[test]
fn trending_processor_pushes_top_items_to_its_topic() {
    let server = Server::start("shards = 2\ntrending_interval_ms = 100\ntrending_top_k = 2\n");
    let mut watcher = server.connect();
    watcher.hello();
    subscribe(&mut watcher, 1, &["trending"]);
    let mut reporter = server.connect();
    reporter.hello();
    let mut batch = Vec::new();
    for (i, item) in ["apple", "pear", "apple", "fig", "apple", "pear"]
        .iter()
        .enumerate()
    {
        batch.extend_from_slice(&event_frame(i as u64 + 10, item, false));
    }
    reporter.send_raw(&batch);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no trending push with all events counted"
        );
        let (topic, _, payload) = push_of(&watcher.recv());
        assert_eq!(topic, "trending");
        let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        if json["top"][0]["count"] == 3 {
            assert_eq!(json["top"][0]["item"], "apple");
            assert_eq!(json["top"][1]["item"], "pear");
            assert_eq!(json["top"].as_array().unwrap().len(), 2);
            break;
        }
    }
}

/// `holdfast publish` reaches a subscriber. The subscriber is holdfast-client: one
/// well-behaved session is all this needs (the framing is tested elsewhere).
#[tokio::test]
async fn holdfast_publish_command_reaches_a_subscriber() {
    let server = Server::start("shards = 2\n");
    let (client, mut pushes) = connect(crate::client::config(&server)).await;
    client.subscribe(["cli"]).await.expect("subscribed");
    let admin = server.admin.expect("admin on").to_string();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .args([
                "publish",
                "--admin",
                &admin,
                "--topic",
                "cli",
                "--payload",
                "from the command line",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("202 "));
    let push = next_push(&mut pushes).await;
    assert_eq!(
        (push.topic.as_str(), push.seq, &push.payload[..]),
        ("cli", 1, &b"from the command line"[..])
    );
    client.close().await;
}

/// A publisher session publishes with holdfast-client's `Client::publish` to every target and
/// is answered with each outcome; a session that is not a publisher, a stale connection and a
/// msg_id the server would refuse are refused.
#[tokio::test]
async fn only_a_publisher_session_may_publish_and_it_gets_each_targets_outcome() {
    let secret = "test-secret-of-some-length";
    let server = Server::start(&format!("shards = 2\nauth_secret = \"{secret}\"\n"));
    let session = |client_id: &str| {
        ClientConfig::tcp(server.addr.to_string())
            .with_client_id(client_id)
            .with_token(TokenSource::Secret {
                secret: secret.as_bytes().to_vec(),
                ttl_s: 60,
            })
    };
    let (reader, mut pushes) = connect(session("device-1")).await;
    reader.subscribe(["alerts", "*"]).await.unwrap();
    let alerts = || PublishTarget::Topic("alerts".into());
    let refused = reader
        .publish(alerts(), "from a session", None)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::Auth(_)),
        "not a publisher: {refused}"
    );
    assert_eq!(refused.code(), Some(ErrorCode::AuthFailed));

    let (publisher, _) = connect(session("publisher:backend")).await;
    let published = publisher.publish(alerts(), "from a session", Some("alert-1"));
    assert_eq!(
        published.await.unwrap(),
        Published::Sequenced { seq: 1 },
        "answered with the seq the owner gave it"
    );
    let push = next_push(&mut pushes).await;
    assert_eq!(
        (push.topic.as_str(), push.seq, &push.payload[..]),
        ("alerts", 1, &b"from a session"[..])
    );
    let binary = [0u8, 159, 146, 150];
    let published = publisher.publish(PublishTarget::Broadcast, binary, None);
    assert_eq!(published.await.unwrap(), Published::Sequenced { seq: 1 });
    let push = next_push(&mut pushes).await;
    assert_eq!((push.topic.as_str(), &push.payload[..]), ("*", &binary[..]));

    let to_client = PublishTarget::Client("device-1".into());
    let published = publisher.publish(to_client, "to the client", None);
    assert_eq!(
        published.await.unwrap(),
        Published::Delivered { connections: 1 }
    );
    assert_eq!(&next_push(&mut pushes).await.payload[..], b"to the client");
    let session_id = reader.session().expect("connected").session_id;
    let published = publisher.publish(PublishTarget::Connection(session_id), "to the conn", None);
    assert_eq!(
        published.await.unwrap(),
        Published::Delivered { connections: 1 }
    );
    assert_eq!(&next_push(&mut pushes).await.payload[..], b"to the conn");

    // A publish to a connection that does not exist is refused, not "accepted".
    // Shard 0, slot 1,000 (never used by this test), generation 7.
    let stale = PublishTarget::Connection(4294967296007);
    let refused = publisher
        .publish(stale, "to nobody", None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::HandlerFailed), "{refused}");
    let refused = publisher
        .publish(alerts(), "x", Some("has a space"))
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Invalid(_)), "{refused}");
}

#[test]
fn a_publish_error_quoting_huge_client_input_is_cut_not_fatal() {
    let secret = "test-secret-of-some-length";
    let server = Server::start(&format!("shards = 1\nauth_secret = \"{secret}\"\n"));
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let token = holdfast_protocol::token::sign(secret.as_bytes(), "publisher:x", expiry);
    let mut publisher = server.connect();
    assert_eq!(
        publisher.hello_with("publisher:x", &token).kind,
        Kind::Welcome
    );
    // serde_json's error names the unknown field: 65,400 bytes of it (an uncut reason would
    // not fit in the 65,536-byte Error frame).
    let body = format!(r#"{{"{}":1}}"#, "f".repeat(65_400));
    publisher.request(9, "publish", body.as_bytes());
    let error = publisher.recv();
    assert_eq!(
        (error.error_code(), error.id),
        (Some(ErrorCode::HandlerFailed), 9)
    );
    assert!(
        error.bytes.len() < 512,
        "reason cut to a bound: {} bytes",
        error.bytes.len()
    );
    publisher.send(Kind::Ping, 10, &[]);
    assert_eq!(
        publisher.recv().kind,
        Kind::Pong,
        "the server and the session live on"
    );
}

/// An idle shard (no sessions, so no completions in its ring) sleeps parked in glommio. A
/// publish put in its inbox then must wake that park through the shard's doorbell, not only
/// through the inbox task's flume receiver: that receiver, woken for a message the shard loop
/// took from under it, re-registers without looking at the queue again, and a send in that gap
/// woke nobody (an idle shard then answered 5 s late). Each publish below comes after the shard
/// had a tick to park, and each must ring it.
#[test]
fn a_publish_wakes_an_idle_parked_shard_through_its_doorbell() {
    const PUBLISHES: u64 = 20;
    let server = Server::start("shards = 2\n");
    let wakes = || {
        crate::metrics::counter_sum(
            &crate::metrics::scrape(&server),
            "holdfast_ring_doorbell_wakes_total",
        )
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = wakes();
    for i in 0..PUBLISHES {
        // Longer than a tick (timer_tick_ms 50): the shard has left its ring wait and parked.
        std::thread::sleep(std::time::Duration::from_millis(120));
        let (status, body) = publish(
            &server,
            &format!(r#"{{"target":"topic","topic":"idle","payload":"{i}"}}"#),
            None,
        );
        assert_eq!(status, 202, "{body}");
    }
    let rung = wakes() - before;
    // Every publish rings the owner; a few may land while the loop is awake and reading its
    // inbox itself.
    assert!(
        rung >= (PUBLISHES * 3 / 4) as f64,
        "{rung} doorbell wakes for {PUBLISHES} publishes to a parked shard"
    );
}
