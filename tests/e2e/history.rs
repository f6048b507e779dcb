//! History and resume end to end: SubscribeResume replays exactly what a client missed and
//! continues live with no gap and no duplicate (also while a publisher keeps publishing, across
//! two shards); resume points outside the window or from another epoch are refused with the
//! oldest seq held; the history bounds (messages, bytes, age, per shard) evict oldest; an
//! old-style Subscribe is unchanged; a client id's inbox is delivered on its next Hello.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use holdfast_protocol::payload::{ResumeTopic, SubscribeResume};
use holdfast_protocol::{encode_frame, next_frame, Kind, Payload};

use crate::push::topics_frame;
use crate::support::{publish, Client, Received, Server};

/// One topic's result in a SubscribeResume's Ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resumed {
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
    pub(crate) oldest_seq: u64,
    pub(crate) recovered: bool,
}

fn resume_frame(id: u64, topics: &[(&str, u64, u64)]) -> Vec<u8> {
    let topics: Vec<ResumeTopic<'_>> = topics
        .iter()
        .map(|(name, epoch, last_seq)| ResumeTopic {
            name,
            epoch: *epoch,
            last_seq: *last_seq,
        })
        .collect();
    let mut out = BytesMut::new();
    encode_frame(
        &mut out,
        0,
        id,
        &SubscribeResume { topics: &topics },
        65_536,
    )
    .unwrap();
    out.to_vec()
}

/// Sends a SubscribeResume and reads its Ack (the next frame).
pub(crate) fn resume(client: &mut Client, id: u64, topics: &[(&str, u64, u64)]) -> Vec<Resumed> {
    client.send_raw(&resume_frame(id, topics));
    let ack = client.recv();
    assert_eq!((ack.kind, ack.id), (Kind::Ack, id), "got {ack:?}");
    let decoded = next_frame(&ack.bytes, 1 << 20).unwrap().unwrap();
    let Payload::SubscribeAck(view) = decoded.payload else {
        panic!("a SubscribeResume's Ack carries a payload: {ack:?}")
    };
    view.topics
        .iter()
        .map(|t| Resumed {
            epoch: t.epoch.to_native(),
            seq: t.seq.to_native(),
            oldest_seq: t.oldest_seq.to_native(),
            recovered: t.recovered == 1,
        })
        .collect()
}

/// (topic, seq, payload) of a Push frame.
pub(crate) fn push_of(frame: &Received) -> (String, u64, Vec<u8>) {
    assert_eq!(frame.kind, Kind::Push, "got {frame:?}");
    let decoded = next_frame(&frame.bytes, 1 << 20).unwrap().unwrap();
    let Payload::Push(push) = decoded.payload else {
        unreachable!()
    };
    (
        push.topic.to_string(),
        push.seq.to_native(),
        push.payload.to_vec(),
    )
}

fn seq_of(frame: &Received) -> u64 {
    push_of(frame).1
}

/// Proves nothing else is queued for `client`: the next frame is the Pong to our Ping.
pub(crate) fn nothing_pending(client: &mut Client) {
    client.send(Kind::Ping, 77, &[]);
    let next = client.recv();
    assert_eq!(
        (next.kind, next.id),
        (Kind::Pong, 77),
        "unexpected {next:?}"
    );
}

pub(crate) fn publish_topic(server: &Server, topic: &str, payload: &str) -> u64 {
    publish_sequenced(
        server,
        &format!(r#"{{"target":"topic","topic":"{topic}","payload":"{payload}"}}"#),
    )
}

/// Publishes a broadcast; returns its seq.
fn publish_broadcast(server: &Server, payload: &str) -> u64 {
    publish_sequenced(
        server,
        &format!(r#"{{"target":"broadcast","payload":"{payload}"}}"#),
    )
}

/// Publishes `json` (a topic or broadcast target); returns the seq the 202 names.
fn publish_sequenced(server: &Server, json: &str) -> u64 {
    let (status, body) = publish(server, json, None);
    assert_eq!(status, 202, "{body}");
    let seq = body
        .split("\"seq\":")
        .nth(1)
        .and_then(|rest| rest.trim_end_matches(['}', '\n', ' ']).parse().ok());
    seq.unwrap_or_else(|| panic!("no seq in {body}"))
}

pub(crate) fn connect(server: &Server) -> Client {
    let mut client = server.connect();
    client.hello();
    client
}

/// One open session on each of the server's `shards` (a session's shard is the top byte of
/// its Welcome's session id): every broadcast one of them receives has been delivered on its
/// shard, so a session that opens after all of them got it did not get it live.
fn a_session_on_every_shard(server: &Server, shards: usize) -> Vec<Client> {
    const ATTEMPTS_MAX: usize = 64;
    let mut on_shard: Vec<Option<Client>> = (0..shards).map(|_| None).collect();
    for _ in 0..ATTEMPTS_MAX {
        let mut client = server.connect();
        let shard = (client.hello() >> 56) as usize;
        if on_shard[shard].is_none() {
            on_shard[shard] = Some(client);
        }
        if on_shard.iter().all(Option::is_some) {
            return on_shard.into_iter().flatten().collect();
        }
    }
    panic!("no session on some shard after {ATTEMPTS_MAX} connections");
}

#[test]
fn resume_after_a_reconnect_gets_exactly_the_missed_pushes_then_live_ones() {
    let server = Server::start("shards = 2\n");
    let mut client = connect(&server);
    let first = resume(&mut client, 2, &[("news", 0, 0), ("*", 0, 0)]);
    assert!(first
        .iter()
        .all(|r| !r.recovered && r.epoch != 0 && r.seq == 0));
    for i in 1..=3 {
        assert_eq!(publish_topic(&server, "news", &format!("n{i}")), i);
    }
    for i in 1..=3 {
        assert_eq!(
            push_of(&client.recv()),
            ("news".into(), i, format!("n{i}").into())
        );
    }
    drop(client);
    publish_topic(&server, "news", "n4");
    publish_topic(&server, "news", "n5");
    // Broadcast b1 is missed by the next session only if every shard delivered it before that
    // session's Hello (a broadcast reaches every open session live): wait for that, so the
    // replay (not a live copy before the Ack) is what this test sees, every time.
    let mut witnesses = a_session_on_every_shard(&server, 2);
    assert_eq!(publish_broadcast(&server, "b1"), 1);
    for witness in &mut witnesses {
        assert_eq!(push_of(&witness.recv()), ("*".into(), 1, b"b1".to_vec()));
    }

    let mut client = connect(&server);
    let resumed = resume(
        &mut client,
        3,
        &[("news", first[0].epoch, 3), ("*", first[1].epoch, 0)],
    );
    assert_eq!(
        resumed,
        [
            Resumed {
                epoch: first[0].epoch,
                seq: 5,
                oldest_seq: 1,
                recovered: true
            },
            Resumed {
                epoch: first[1].epoch,
                seq: 1,
                oldest_seq: 1,
                recovered: true
            }
        ]
    );
    assert_eq!(push_of(&client.recv()), ("news".into(), 4, b"n4".to_vec()));
    assert_eq!(push_of(&client.recv()), ("news".into(), 5, b"n5".to_vec()));
    assert_eq!(push_of(&client.recv()), ("*".into(), 1, b"b1".to_vec()));
    publish_topic(&server, "news", "n6");
    assert_eq!(push_of(&client.recv()), ("news".into(), 6, b"n6".to_vec()));
    nothing_pending(&mut client);
}

/// A broadcast reaches every open session live, also one that has said Hello but not yet
/// resumed `"*"`: its resume does not replay that broadcast again. Exactly one copy arrives
/// (before the Ack), the Ack is recovered at its seq, and live broadcasts follow once each.
#[test]
fn a_broadcast_a_session_got_live_before_its_resume_is_not_replayed() {
    let server = Server::start("shards = 2\n");
    let epoch = resume(&mut connect(&server), 2, &[("*", 0, 0)])[0].epoch;
    let mut client = connect(&server);
    assert_eq!(publish_broadcast(&server, "b1"), 1);
    assert_eq!(push_of(&client.recv()), ("*".into(), 1, b"b1".to_vec()));
    let resumed = resume(&mut client, 3, &[("*", epoch, 0)]);
    assert_eq!(
        resumed,
        [Resumed {
            epoch,
            seq: 1,
            oldest_seq: 1,
            recovered: true
        }]
    );
    nothing_pending(&mut client);
    assert_eq!(publish_broadcast(&server, "b2"), 2);
    assert_eq!(push_of(&client.recv()), ("*".into(), 2, b"b2".to_vec()));
    nothing_pending(&mut client);
}

/// A session that missed broadcast 1 (published before its Hello) and got broadcast 2 live
/// before resuming `"*"` from 0 could get 1 only after 2: its resume is "not recovered" with
/// nothing replayed (never a duplicate, never out of order), and live broadcasts go on.
#[test]
fn a_broadcast_resume_that_could_not_keep_order_is_not_recovered() {
    let server = Server::start("shards = 1\n");
    let mut witness = connect(&server);
    let epoch = resume(&mut witness, 2, &[("*", 0, 0)])[0].epoch;
    assert_eq!(publish_broadcast(&server, "b1"), 1);
    assert_eq!(
        seq_of(&witness.recv()),
        1,
        "b1 delivered before the next Hello"
    );
    let mut client = connect(&server);
    assert_eq!(publish_broadcast(&server, "b2"), 2);
    assert_eq!(push_of(&client.recv()), ("*".into(), 2, b"b2".to_vec()));
    let resumed = resume(&mut client, 3, &[("*", epoch, 0)]);
    assert_eq!(
        resumed,
        [Resumed {
            epoch,
            seq: 2,
            oldest_seq: 1,
            recovered: false
        }]
    );
    nothing_pending(&mut client);
    assert_eq!(publish_broadcast(&server, "b3"), 3);
    assert_eq!(push_of(&client.recv()), ("*".into(), 3, b"b3".to_vec()));
}

/// The seam under load: a publisher publishes without pause while the client drops its
/// connection and resumes again and again (sessions land on either of the two shards); every
/// seq arrives exactly once, in order.
#[test]
fn resume_while_publishing_continuously_has_no_gap_and_no_duplicate() {
    const PUBLISHES: u64 = 600;
    let server = Server::start("shards = 2\nhistory_max_messages = 100000\n");
    let mut client = connect(&server);
    let epoch = resume(&mut client, 2, &[("live", 0, 0)])[0].epoch;
    let publisher = {
        let admin = server.admin.unwrap();
        std::thread::spawn(move || {
            for i in 1..=PUBLISHES {
                let json = format!(r#"{{"target":"topic","topic":"live","payload":"p{i}"}}"#);
                let raw = format!(
                    "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
                    json.len()
                );
                let (status, body) = crate::support::admin_request(admin, &raw);
                assert_eq!(status, 202, "{body}");
            }
        })
    };
    let mut last_seq = 0u64;
    let mut resumes = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while last_seq < PUBLISHES {
        assert!(Instant::now() < deadline, "stuck at seq {last_seq}");
        // Read a few pushes, then drop the connection and resume where we were.
        for _ in 0..(7 + resumes % 5) {
            if last_seq == PUBLISHES {
                break;
            }
            let (topic, seq, payload) = push_of(&client.recv());
            assert_eq!(topic, "live");
            assert_eq!(seq, last_seq + 1, "gap or duplicate after resume {resumes}");
            assert_eq!(payload, format!("p{seq}").into_bytes());
            last_seq = seq;
        }
        if last_seq == PUBLISHES {
            break;
        }
        drop(client);
        client = connect(&server);
        let resumed = resume(&mut client, 10 + resumes, &[("live", epoch, last_seq)]);
        assert!(resumed[0].recovered, "{resumed:?}");
        assert!(resumed[0].seq >= last_seq);
        resumes += 1;
    }
    publisher.join().unwrap();
    assert!(resumes >= 20, "only {resumes} resumes");
    nothing_pending(&mut client);
}

#[test]
fn a_resume_point_older_than_the_window_is_not_recovered_and_names_the_oldest_seq() {
    let server = Server::start("shards = 2\nhistory_max_messages = 3\n");
    let mut client = connect(&server);
    let epoch = resume(&mut client, 2, &[("news", 0, 0)])[0].epoch;
    drop(client);
    for i in 1..=10 {
        publish_topic(&server, "news", &format!("n{i}"));
    }
    let mut client = connect(&server);
    let resumed = resume(&mut client, 3, &[("news", epoch, 2)]);
    assert_eq!(
        resumed,
        [Resumed {
            epoch,
            seq: 10,
            oldest_seq: 8,
            recovered: false
        }]
    );
    nothing_pending(&mut client); // nothing replayed
    publish_topic(&server, "news", "n11");
    assert_eq!(seq_of(&client.recv()), 11, "live continues after seq");
    // Within the window it is recovered.
    let mut other = connect(&server);
    let resumed = resume(&mut other, 4, &[("news", epoch, 8)]);
    assert!(resumed[0].recovered);
    let seqs: Vec<u64> = (0..3).map(|_| seq_of(&other.recv())).collect();
    assert_eq!(seqs, [9, 10, 11]);
}

#[test]
fn a_replay_larger_than_the_outbound_bound_is_not_recovered_and_keeps_the_session() {
    let server = Server::start("shards = 2\nmax_frame_bytes = 1024\nmax_outbound_bytes = 4096\n");
    let mut client = connect(&server);
    let epoch = resume(&mut client, 2, &[("big", 0, 0)])[0].epoch;
    drop(client);
    let payload = "y".repeat(800);
    for _ in 0..10 {
        publish_topic(&server, "big", &payload);
    }
    let mut client = connect(&server);
    let resumed = resume(&mut client, 3, &[("big", epoch, 0)]);
    assert_eq!((resumed[0].recovered, resumed[0].seq), (false, 10));
    nothing_pending(&mut client);
    let resumed = resume(&mut client, 4, &[("big", epoch, 7)]);
    assert!(resumed[0].recovered, "three frames fit");
    let seqs: Vec<u64> = (0..3).map(|_| seq_of(&client.recv())).collect();
    assert_eq!(seqs, [8, 9, 10]);
    nothing_pending(&mut client);
}

#[test]
fn a_resume_point_of_another_epoch_gets_the_current_epoch_from_seq_1_when_held_else_nothing() {
    let server = Server::start("shards = 2\nhistory_max_messages = 3\n");
    let mut client = connect(&server);
    let epoch = resume(&mut client, 2, &[("news", 0, 0)])[0].epoch;
    publish_topic(&server, "news", "n1");
    publish_topic(&server, "news", "n2");
    // Another epoch while the history holds this one from seq 1: not recovered (the old
    // numbering is gone), seam at 0, and all of this epoch follows in order.
    let mut other = connect(&server);
    let resumed = resume(&mut other, 3, &[("news", epoch ^ 1, 1)]);
    assert_eq!(
        resumed,
        [Resumed {
            epoch,
            seq: 0,
            oldest_seq: 1,
            recovered: false
        }]
    );
    let seqs: Vec<u64> = (0..2).map(|_| seq_of(&other.recv())).collect();
    assert_eq!(seqs, [1, 2]);
    nothing_pending(&mut other);
    // Once seq 1 has left the window, another epoch gets nothing replayed (a replay from the
    // middle would hide the loss): the seam is the topic's seq.
    for i in 3..=5 {
        publish_topic(&server, "news", &format!("n{i}"));
    }
    let mut late = connect(&server);
    let resumed = resume(&mut late, 3, &[("news", epoch ^ 1, 1)]);
    assert_eq!(
        resumed,
        [Resumed {
            epoch,
            seq: 5,
            oldest_seq: 3,
            recovered: false
        }]
    );
    nothing_pending(&mut late);
    drop(server);

    // A restarted server has no history and numbers from 1 again: a new epoch, so the old
    // resume point is never matched against different messages; what the new server
    // published since it started is replayed from seq 1.
    let server = Server::start("shards = 2\n");
    publish_topic(&server, "news", "fresh 1");
    publish_topic(&server, "news", "fresh 2");
    let mut client = connect(&server);
    let resumed = resume(&mut client, 2, &[("news", epoch, 1)]);
    assert_ne!(resumed[0].epoch, epoch);
    assert!(!resumed[0].recovered);
    assert_eq!((resumed[0].seq, resumed[0].oldest_seq), (0, 1));
    let seqs: Vec<u64> = (0..2).map(|_| seq_of(&client.recv())).collect();
    assert_eq!(seqs, [1, 2]);
    nothing_pending(&mut client);
}

/// The oldest seq still held for `topic`, as the Ack of a resume from seq 0 reports it.
fn oldest_held(server: &Server, topic: &str) -> u64 {
    let mut client = connect(server);
    let epoch = resume(&mut client, 2, &[(topic, 0, 0)])[0].epoch;
    let mut client = connect(server);
    resume(&mut client, 3, &[(topic, epoch, 0)])[0].oldest_seq
}

#[test]
fn history_bounds_on_bytes_age_and_per_shard_evict_oldest() {
    // Bytes per topic: a 1,000-byte payload frame costs a little over 1 KiB, so 3 KiB holds 2.
    let server = Server::start("shards = 1\nhistory_max_bytes = 3072\n");
    let big = "x".repeat(1000);
    for _ in 0..5 {
        publish_topic(&server, "bytes", &big);
    }
    assert_eq!(oldest_held(&server, "bytes"), 4);
    drop(server);

    // Per shard: two topics share a 3 KiB budget; the oldest frame of either goes first.
    let server =
        Server::start("shards = 1\nhistory_max_bytes = 3072\nhistory_max_bytes_per_shard = 3072\n");
    publish_topic(&server, "a", &big);
    publish_topic(&server, "b", &big);
    publish_topic(&server, "a", &big);
    assert_eq!(
        oldest_held(&server, "a"),
        2,
        "a's first frame was the oldest"
    );
    assert_eq!(oldest_held(&server, "b"), 1);
    drop(server);

    // Age: frames older than history_max_age_ms are not replayed.
    let server = Server::start("shards = 1\nhistory_max_age_ms = 300\n");
    publish_topic(&server, "age", "old");
    std::thread::sleep(Duration::from_millis(400));
    publish_topic(&server, "age", "new");
    assert_eq!(oldest_held(&server, "age"), 2);
    drop(server);

    // Off: 0 keeps nothing, so any missed push is reported lost.
    let server = Server::start("shards = 1\nhistory_max_messages = 0\n");
    publish_topic(&server, "off", "x");
    assert_eq!(oldest_held(&server, "off"), 0);
}

#[test]
fn an_old_style_subscribe_is_unchanged_with_history_on() {
    // One shard: "before" is delivered (to nobody) before the publish is answered, so it
    // cannot race the Subscribe.
    let server = Server::start("shards = 1\n");
    publish_topic(&server, "news", "before");
    let mut client = connect(&server);
    client.send_raw(&topics_frame(Kind::Subscribe, 5, &["news"]));
    let ack = client.recv();
    assert_eq!(
        (ack.kind, ack.id, ack.bytes.len()),
        (Kind::Ack, 5, 16),
        "empty Ack"
    );
    nothing_pending(&mut client); // no replay without a resume point
    publish_topic(&server, "news", "after");
    assert_eq!(
        push_of(&client.recv()),
        ("news".into(), 2, b"after".to_vec())
    );
}

#[test]
fn pushes_to_an_absent_client_id_are_delivered_on_its_next_hello_with_auth_on() {
    let secret = "test-secret-of-some-length";
    let server = Server::start(&format!("shards = 2\nauth_secret = \"{secret}\"\n"));
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let token = holdfast_protocol::token::sign(secret.as_bytes(), "alice", expiry);
    for i in 1..=2 {
        let (status, body) = publish(
            &server,
            &format!(r#"{{"target":"client","client_id":"alice","payload":"m{i}"}}"#),
            None,
        );
        assert_eq!((status, body.trim()), (200, r#"{"delivered":0}"#), "held");
    }
    let mut alice = server.connect();
    assert_eq!(alice.hello_with("alice", &token).kind, Kind::Welcome);
    assert_eq!(push_of(&alice.recv()).2, b"m1");
    assert_eq!(push_of(&alice.recv()).2, b"m2");
    nothing_pending(&mut alice);
    drop(alice);
    // Delivered once: the next session starts with an empty inbox.
    let mut again = server.connect();
    assert_eq!(again.hello_with("alice", &token).kind, Kind::Welcome);
    nothing_pending(&mut again);
    drop(server);

    // Auth off: any client could claim the id, so nothing is held for it.
    let server = Server::start("shards = 2\n");
    let (status, _) = publish(
        &server,
        r#"{"target":"client","client_id":"alice","payload":"x"}"#,
        None,
    );
    assert_eq!(status, 404);
}

/// An Unsubscribe read while a SubscribeResume of that topic waits for its owner's answer:
/// the Ack still answers every topic, but the unsubscribed topic's replay is not sent (the
/// client said it no longer wants that topic); the other topic's replay is.
#[test]
fn an_unsubscribe_while_a_resume_is_pending_gets_no_replay_of_that_topic() {
    // One shard: the owner's answer is handled after the whole read batch, so the Unsubscribe
    // sent in the same write is always read while the resume is pending.
    let server = Server::start("shards = 1\n");
    let mut client = connect(&server);
    let resumed = resume(&mut client, 2, &[("news", 0, 0), ("sport", 0, 0)]);
    let (news_epoch, sport_epoch) = (resumed[0].epoch, resumed[1].epoch);
    drop(client);
    for i in 1..=3 {
        publish_topic(&server, "news", &format!("n{i}"));
        publish_topic(&server, "sport", &format!("s{i}"));
    }
    let mut client = connect(&server);
    let mut batch = resume_frame(3, &[("news", news_epoch, 1), ("sport", sport_epoch, 1)]);
    batch.extend(topics_frame(Kind::Unsubscribe, 4, &["news"]));
    client.send_raw(&batch);
    let mut acks = Vec::new();
    let mut pushes = Vec::new();
    while acks.len() < 2 {
        let frame = client.recv();
        match frame.kind {
            Kind::Ack => acks.push(frame.id),
            Kind::Push => pushes.push(push_of(&frame)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        acks,
        [4, 3],
        "the Unsubscribe is answered at once, the resume once answered"
    );
    // What follows the resume's Ack: sport's replay only.
    for _ in 0..2 {
        pushes.push(push_of(&client.recv()));
    }
    let topics_seqs: Vec<(String, u64)> = pushes.into_iter().map(|(t, s, _)| (t, s)).collect();
    assert_eq!(topics_seqs, [("sport".into(), 2), ("sport".into(), 3)]);
    nothing_pending(&mut client);
    // And nothing live of news either.
    publish_topic(&server, "news", "n4");
    nothing_pending(&mut client);
}
