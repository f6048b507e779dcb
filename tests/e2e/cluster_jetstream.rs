//! JetStream cluster mode end to end: a real `nats-server -js` and two or three `holdfast serve`
//! processes with `cluster_mode = "jetstream"`. A topic has one sequence on every host, so a
//! client drained off host A resumes on host B with every push once and in order; two hosts
//! publishing to one topic share one gapless sequence; a NATS restart loses no accepted push; a
//! host started later fills its history from the stream; a client away longer than the window
//! is told `recovered = false`.
//!
//! Clients reach the hosts through [`Balancer`], a stand-in for an L4 load balancer: each new
//! connection goes to the first host that accepts it, so a host that drained (its listeners
//! closed) sends its clients to the next.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_client::{ClientConfig, ErrorCode, Incoming, Push, PushStream, TokenSource};

use crate::client::connect as client_connect;
use crate::cluster::{free_port, Nats};
use crate::history::{connect, push_of, resume, Resumed};
use crate::support::{admin_request, Server, REPLY_TIMEOUT_MS};

/// How long one publish may be refused (503 while NATS restarts) before the test fails.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(20);
/// How long a test waits for the next push (a drain and reconnect included).
const PUSH_WAIT: Duration = Duration::from_secs(15);

/// The config of one JetStream-mode host on `nats`, with quick Goodbye hints.
fn host_toml(nats: &Nats, id: &str, extra: &str) -> String {
    format!(
        "shards = 2\nnats_url = \"{}\"\ncluster_host_id = \"{id}\"\ncluster_mode = \"jetstream\"\n\
         jetstream_stream = \"HOLDFAST_E2E\"\nreconnect_after_ms = 100\nreconnect_jitter_ms = 100\n{extra}",
        nats.url()
    )
}

/// Publishes `payload` to `topic` through the admin listener at `admin` until a host accepts it
/// (a 503 while NATS is away is retried with the same payload); returns its seq.
fn publish_accepted(admin: SocketAddr, topic: &str, payload: &str) -> u64 {
    publish_until_accepted(admin, topic, payload, "")
}

/// [`publish_accepted`] with the payload as the publish's `msg_id`, so however often it is
/// retried it is stored once.
fn publish_accepted_once(admin: SocketAddr, topic: &str, payload: &str) -> u64 {
    publish_until_accepted(admin, topic, payload, &format!(r#","msg_id":"{payload}""#))
}

fn publish_until_accepted(admin: SocketAddr, topic: &str, payload: &str, extra: &str) -> u64 {
    let json = format!(r#"{{"target":"topic","topic":"{topic}","payload":"{payload}"{extra}}}"#);
    let raw = format!(
        "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
        json.len()
    );
    let start = Instant::now();
    loop {
        let (status, body) = admin_request(admin, &raw);
        if status == 202 {
            let value: serde_json::Value = serde_json::from_str(&body).unwrap();
            return value["seq"].as_u64().expect("a 202 carries the seq");
        }
        assert!(
            status == 503 && start.elapsed() < PUBLISH_DEADLINE,
            "publish of {payload}: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The next item of the push stream; a gap report fails the test (nothing may be missed).
async fn next_push(pushes: &mut PushStream) -> Push {
    match tokio::time::timeout(PUSH_WAIT, pushes.recv()).await {
        Ok(Some(Incoming::Push(push))) => push,
        other => panic!("expected the next push, got {other:?}"),
    }
}

/// A client config through `addr` with test-sized backoff.
fn client_config(addr: SocketAddr) -> ClientConfig {
    let mut config = ClientConfig::tcp(addr.to_string());
    config.request_timeout_ms = REPLY_TIMEOUT_MS;
    config.reconnect_base_delay_ms = 50;
    config.reconnect_max_delay_ms = 400;
    config
}

/// Asserts that `got` is pushes 1..=n of `topic`, each once, in order, with payloads p1..pn.
fn assert_every_push_once_in_order(got: &[Push], topic: &str) {
    for (i, push) in got.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(
            (push.topic.as_str(), push.seq),
            (topic, n),
            "push #{n} of {}",
            got.len()
        );
    }
}

#[tokio::test]
async fn a_client_drained_off_one_host_resumes_on_another_with_every_push_once_in_order() {
    const PUSHES: u64 = 150;
    const BEFORE_DRAIN: usize = 40;
    let store = tempfile::tempdir().unwrap();
    let nats = Nats::start_jetstream(free_port(), store.path());
    let mut a = Server::start(&host_toml(&nats, "a", ""));
    let b = Server::start(&host_toml(&nats, "b", ""));
    let balancer = Balancer::start(vec![a.addr, b.addr]);
    let (client, mut pushes) = client_connect(client_config(balancer.addr)).await;
    client.subscribe(["news"]).await.unwrap();

    // A publisher keeps publishing through host B the whole time.
    let admin_b = b.admin.unwrap();
    let publisher = std::thread::spawn(move || {
        (1..=PUSHES)
            .map(|i| {
                std::thread::sleep(Duration::from_millis(10));
                publish_accepted(admin_b, "news", &format!("p{i}"))
            })
            .collect::<Vec<u64>>()
    });
    let mut got = Vec::new();
    while got.len() < BEFORE_DRAIN {
        got.push(next_push(&mut pushes).await);
    }
    // Host A drains: its client follows the Goodbye through the balancer to host B.
    a.signal(libc::SIGTERM);
    while got.len() < PUSHES as usize {
        got.push(next_push(&mut pushes).await);
    }
    let seqs = publisher.join().unwrap();
    assert_eq!(
        seqs,
        (1..=PUSHES).collect::<Vec<u64>>(),
        "one publisher, one sequence"
    );
    assert_every_push_once_in_order(&got, "news");
    for (i, push) in got.iter().enumerate() {
        assert_eq!(push.payload, format!("p{}", i + 1).as_bytes());
    }
    assert!(
        a.wait_exit(Duration::from_secs(15)).success(),
        "host A drained"
    );
    assert_eq!(
        client.stats().sessions_opened,
        2,
        "one session on A, then one on B"
    );
    let extra = tokio::time::timeout(Duration::from_millis(300), pushes.recv()).await;
    assert!(extra.is_err(), "nothing after the last push: {extra:?}");
}

#[test]
fn two_hosts_publishing_to_one_topic_share_one_gapless_sequence() {
    const PER_HOST: u64 = 60;
    let store = tempfile::tempdir().unwrap();
    let nats = Nats::start_jetstream(free_port(), store.path());
    let a = Server::start(&host_toml(&nats, "a", ""));
    let b = Server::start(&host_toml(&nats, "b", ""));
    let mut client = connect(&a);
    let subscribed = resume(&mut client, 2, &[("shared", 0, 0)]);
    let publishers: Vec<_> = [(a.admin.unwrap(), "a"), (b.admin.unwrap(), "b")]
        .into_iter()
        .map(|(admin, host)| {
            std::thread::spawn(move || {
                (1..=PER_HOST)
                    .map(|i| (publish_accepted(admin, "shared", &format!("{host}{i}")), i))
                    .collect::<Vec<(u64, u64)>>()
            })
        })
        .collect();
    let accepted: Vec<Vec<(u64, u64)>> = publishers
        .into_iter()
        .map(|publisher| publisher.join().unwrap())
        .collect();
    let mut all_seqs: Vec<u64> = accepted.iter().flatten().map(|(seq, _)| *seq).collect();
    all_seqs.sort_unstable();
    assert_eq!(
        all_seqs,
        (1..=2 * PER_HOST).collect::<Vec<u64>>(),
        "every number given once, none skipped, whichever host took it"
    );
    for per_host in &accepted {
        assert!(
            per_host.windows(2).all(|w| w[0].0 < w[1].0),
            "a host's publishes keep their order"
        );
    }
    // The session on A gets all of them, in order, with the payload each number was given.
    let mut payload_of = std::collections::HashMap::new();
    for ((seq, i), host) in accepted[0]
        .iter()
        .map(|x| (*x, "a"))
        .chain(accepted[1].iter().map(|x| (*x, "b")))
    {
        payload_of.insert(seq, format!("{host}{i}"));
    }
    for seq in 1..=2 * PER_HOST {
        let (topic, got_seq, payload) = push_of(&client.recv());
        assert_eq!((topic.as_str(), got_seq), ("shared", seq));
        assert_eq!(payload, payload_of[&seq].as_bytes(), "seq {seq}");
    }
    assert!(subscribed[0].epoch != 0);
}

/// A publish retried with its `msg_id` (after an answer that never came, or a 503 for an
/// attempt the stream stored anyway) is stored once and answered with the number it got first.
#[test]
fn a_publish_retried_with_its_msg_id_is_stored_once_and_answered_with_its_first_number() {
    let store = tempfile::tempdir().unwrap();
    let nats = Nats::start_jetstream(free_port(), store.path());
    let a = Server::start(&host_toml(&nats, "a", ""));
    let b = Server::start(&host_toml(&nats, "b", ""));
    let mut client = connect(&a);
    resume(&mut client, 2, &[("news", 0, 0)]);
    let (admin_a, admin_b) = (a.admin.unwrap(), b.admin.unwrap());
    assert_eq!(publish_accepted_once(admin_a, "news", "p1"), 1);
    assert_eq!(publish_accepted_once(admin_a, "news", "p2"), 2);
    // The retry comes through the other host, as after a failover.
    assert_eq!(publish_accepted_once(admin_b, "news", "p1"), 1, "p1 again");
    assert_eq!(publish_accepted_once(admin_b, "news", "p3"), 3);
    for (seq, payload) in [(1, "p1"), (2, "p2"), (3, "p3")] {
        let (topic, got_seq, got) = push_of(&client.recv());
        assert_eq!(
            (topic.as_str(), got_seq, &got[..]),
            ("news", seq, payload.as_bytes())
        );
    }
}

/// A publisher session's `publish` in JetStream mode is answered once the stream stored it,
/// with the stream's number; while NATS is away it is refused (`unavailable`), never answered
/// "accepted" for a push that no host will deliver; retried with its `msg_id` once NATS is
/// back, it is stored once.
#[tokio::test]
async fn a_publisher_sessions_publish_is_answered_only_once_the_stream_stored_it() {
    let secret = "test-secret-of-some-length";
    let store = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut nats = Nats::start_jetstream(port, store.path());
    let host = Server::start(&host_toml(
        &nats,
        "a",
        &format!("auth_secret = \"{secret}\"\njetstream_publish_timeout_ms = 300\n"),
    ));
    let session = |client_id: &str| {
        client_config(host.addr)
            .with_client_id(client_id)
            .with_token(TokenSource::Secret {
                secret: secret.as_bytes().to_vec(),
                ttl_s: 60,
            })
    };
    let (reader, mut pushes) = client_connect(session("device-1")).await;
    reader.subscribe(["news"]).await.unwrap();
    let (publisher, _) = client_connect(session("publisher:backend")).await;
    let body = |payload: &str| {
        format!(r#"{{"target":"topic","topic":"news","payload":"{payload}","msg_id":"{payload}"}}"#)
            .into_bytes()
    };

    let stored = publisher.request("publish", body("p1")).await.unwrap();
    assert_eq!(&stored[..], br#"{"accepted":true,"seq":1}"#);

    nats.kill();
    let refused = publisher.request("publish", body("p2")).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Unavailable), "{refused}");

    let _nats = Nats::start_jetstream(port, store.path());
    let start = Instant::now();
    let answer = loop {
        match publisher.request("publish", body("p2")).await {
            Ok(answer) => break answer,
            Err(e) if e.code() == Some(ErrorCode::Unavailable) => {
                assert!(start.elapsed() < PUBLISH_DEADLINE, "never stored: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("publish after NATS came back: {e}"),
        }
    };
    assert_eq!(&answer[..], br#"{"accepted":true,"seq":2}"#);
    let stored = publisher.request("publish", body("p3")).await.unwrap();
    assert_eq!(
        &stored[..],
        br#"{"accepted":true,"seq":3}"#,
        "p2 took one number however often it was tried"
    );
    let got = [
        next_push(&mut pushes).await,
        next_push(&mut pushes).await,
        next_push(&mut pushes).await,
    ];
    assert_every_push_once_in_order(&got, "news");
    let payloads: Vec<&[u8]> = got.iter().map(|push| &push.payload[..]).collect();
    assert_eq!(payloads, [&b"p1"[..], b"p2", b"p3"]);
    let extra = tokio::time::timeout(Duration::from_millis(300), pushes.recv()).await;
    assert!(extra.is_err(), "nothing after p3: {extra:?}");
}

#[test]
fn a_nats_restart_mid_stream_loses_no_accepted_push_and_stores_each_retried_one_once() {
    const PUSHES: u64 = 60;
    let store = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut nats = Nats::start_jetstream(port, store.path());
    let a = Server::start(&host_toml(&nats, "a", ""));
    let b = Server::start(&host_toml(&nats, "b", ""));
    let mut client = connect(&a);
    resume(&mut client, 2, &[("news", 0, 0)]);
    let admin_b = b.admin.unwrap();
    let publisher = std::thread::spawn(move || {
        (1..=PUSHES)
            .map(|i| {
                std::thread::sleep(Duration::from_millis(20));
                publish_accepted_once(admin_b, "news", &format!("p{i}"))
            })
            .collect::<Vec<u64>>()
    });
    // About a third of the way in, NATS goes away for a moment and comes back (same store).
    std::thread::sleep(Duration::from_millis(400));
    nats.kill();
    std::thread::sleep(Duration::from_millis(500));
    let _nats = Nats::start_jetstream(port, store.path());
    let seqs = publisher.join().unwrap();
    // Each publish refused while NATS was away was retried with its msg_id: stored once, so
    // the numbers are 1..=PUSHES, given in publish order.
    assert_eq!(seqs, (1..=PUSHES).collect::<Vec<u64>>());
    for seq in 1..=PUSHES {
        let (topic, got_seq, payload) = push_of(&client.recv());
        assert_eq!(
            (topic.as_str(), got_seq, payload),
            ("news", seq, format!("p{seq}").into_bytes()),
            "after the restart too"
        );
    }
}

#[test]
fn a_host_started_later_fills_its_history_from_the_stream_and_resumes_a_client() {
    let store = tempfile::tempdir().unwrap();
    let nats = Nats::start_jetstream(free_port(), store.path());
    let a = Server::start(&host_toml(&nats, "a", ""));
    let mut client = connect(&a);
    let epoch = resume(&mut client, 2, &[("news", 0, 0)])[0].epoch;
    for i in 1..=5 {
        assert_eq!(
            publish_accepted(a.admin.unwrap(), "news", &format!("p{i}")),
            i
        );
    }
    for seq in 1..=2 {
        assert_eq!(push_of(&client.recv()).1, seq);
    }
    drop(client);
    // Host C starts after all five: it reads them from the stream into its history.
    let c = Server::start(&host_toml(&nats, "c", ""));
    let mut client = connect(&c);
    let resumed = resume(&mut client, 3, &[("news", epoch, 2)]);
    assert_eq!(
        resumed,
        [Resumed {
            epoch,
            seq: 5,
            oldest_seq: 1,
            recovered: true
        }]
    );
    for seq in 3..=5 {
        assert_eq!(
            push_of(&client.recv()),
            ("news".into(), seq, format!("p{seq}").into_bytes())
        );
    }
    assert_eq!(publish_accepted(c.admin.unwrap(), "news", "p6"), 6);
    assert_eq!(push_of(&client.recv()).1, 6, "live after the replay");
}

#[test]
fn a_host_restarted_under_the_same_id_publishes_new_pushes_not_ones_it_sent_before() {
    let store = tempfile::tempdir().unwrap();
    let nats = Nats::start_jetstream(free_port(), store.path());
    let toml = host_toml(&nats, "a", "");
    let mut a = Server::start(&toml);
    for i in 1..=3 {
        assert_eq!(
            publish_accepted(a.admin.unwrap(), "news", &format!("p{i}")),
            i
        );
    }
    a.signal(libc::SIGTERM);
    assert!(a.wait_exit(Duration::from_secs(10)).success());
    // Same host id, its publish counter from 1 again: JetStream must not take its new
    // publishes for retries of the old ones (that would answer 202 and store nothing).
    let a = Server::start(&toml);
    let mut client = connect(&a);
    let epoch = resume(&mut client, 2, &[("news", 0, 0)])[0].epoch;
    for i in 4..=6 {
        assert_eq!(
            publish_accepted(a.admin.unwrap(), "news", &format!("p{i}")),
            i
        );
    }
    for seq in 4..=6 {
        assert_eq!(
            push_of(&client.recv()),
            ("news".into(), seq, format!("p{seq}").into_bytes())
        );
    }
    let mut late = connect(&a);
    let resumed = resume(&mut late, 3, &[("news", epoch, 0)]);
    assert!(resumed[0].recovered, "{resumed:?}");
    for seq in 1..=6 {
        assert_eq!(
            push_of(&late.recv()),
            ("news".into(), seq, format!("p{seq}").into_bytes()),
            "the stream holds all six, each once"
        );
    }
}

#[test]
fn a_client_away_longer_than_the_window_is_told_recovered_false() {
    let store = tempfile::tempdir().unwrap();
    let nats = Nats::start_jetstream(free_port(), store.path());
    let a = Server::start(&host_toml(&nats, "a", ""));
    let b = Server::start(&host_toml(&nats, "b", "history_max_messages = 4\n"));
    let mut client = connect(&a);
    let epoch = resume(&mut client, 2, &[("news", 0, 0)])[0].epoch;
    assert_eq!(publish_accepted(a.admin.unwrap(), "news", "p1"), 1);
    assert_eq!(push_of(&client.recv()).1, 1);
    drop(client);
    for i in 2..=11 {
        publish_accepted(a.admin.unwrap(), "news", &format!("p{i}"));
    }
    // B holds the last four (8..=11): the client's point (1) is older than its window.
    let mut client = connect(&b);
    let deadline = Instant::now() + PUSH_WAIT;
    let resumed = loop {
        let resumed = resume(&mut client, 3, &[("news", epoch, 1)]);
        // Until B has read all eleven, the client's point may still be inside what B holds.
        if resumed[0].seq == 11 || Instant::now() > deadline {
            break resumed;
        }
        std::thread::sleep(Duration::from_millis(50));
        client = connect(&b);
    };
    assert_eq!(
        resumed,
        [Resumed {
            epoch,
            seq: 11,
            oldest_seq: 8,
            recovered: false
        }]
    );
    assert_eq!(publish_accepted(b.admin.unwrap(), "news", "p12"), 12);
    assert_eq!(push_of(&client.recv()).1, 12, "live from the next one");
}

/// A stand-in for an L4 load balancer on 127.0.0.1: each accepted connection is forwarded to
/// the first upstream that accepts a TCP connection (bytes copied both ways by two threads);
/// stops accepting when dropped.
struct Balancer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Balancer {
    fn start(upstreams: Vec<SocketAddr>) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((downstream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                downstream.set_nonblocking(false).unwrap();
                let upstream = upstreams.iter().find_map(|addr| {
                    TcpStream::connect_timeout(addr, Duration::from_millis(500)).ok()
                });
                match upstream {
                    Some(upstream) => splice(downstream, upstream),
                    None => drop(downstream),
                }
            }
        });
        Balancer { addr, stop }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies bytes both ways between `a` and `b` until either side ends.
fn splice(a: TcpStream, b: TcpStream) {
    for (mut from, mut to) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)] {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Write);
            let _ = from.shutdown(Shutdown::Read);
        });
    }
}
