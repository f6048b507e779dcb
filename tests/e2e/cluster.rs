//! Cluster mode end to end: a real nats-server on a loopback port and two `holdfast serve`
//! processes sharing it. A publish on host A (topic, broadcast, client id) reaches a session on
//! host B; a publish straight on NATS reaches both; after nats-server restarts, publishes flow
//! again and the publishes made while it was down are counted.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use holdfast_protocol::payload::{Hello, Subscribe, TopicName};
use holdfast_protocol::{encode_frame, next_frame, Kind, Payload};

use crate::support::{admin_request, publish, Client, Server};

/// Where Debian's nats-server package puts the binary (/usr/sbin), or elsewhere on the PATH.
const NATS_SERVER_PATHS: [&str; 2] = ["/usr/sbin/nats-server", "/usr/bin/nats-server"];
/// How long one cross-host delivery may take before the test fails.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(10);

/// A nats-server on 127.0.0.1:`port`, killed on drop.
pub(crate) struct Nats {
    child: Child,
    port: u16,
}

impl Nats {
    pub(crate) fn start(port: u16) -> Nats {
        Nats::start_with_args(port, &[])
    }

    /// A nats-server with JetStream on, its store in `store_dir` (a restart on the same port
    /// and directory keeps the streams).
    pub(crate) fn start_jetstream(port: u16, store_dir: &std::path::Path) -> Nats {
        let store = store_dir.to_str().expect("a UTF-8 temporary path");
        Nats::start_with_args(port, &["-js", "-sd", store])
    }

    fn start_with_args(port: u16, extra_args: &[&str]) -> Nats {
        let binary = nats_server_binary().unwrap_or_else(|| {
            panic!(
                "nats-server is missing (looked in {NATS_SERVER_PATHS:?} and PATH): the cluster test needs a real NATS server; run ./run.sh deps (Debian package nats-server)"
            )
        });
        let child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs");
        let nats = Nats { child, port };
        let start = Instant::now();
        while nats.connect().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "nats-server did not accept on port {port} within 5 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nats
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A raw NATS connection past INFO and CONNECT.
    fn connect(&self) -> Option<BufReader<TcpStream>> {
        let stream = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], self.port))).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut info = String::new();
        reader.read_line(&mut info).ok()?;
        if !info.starts_with("INFO") {
            return None;
        }
        reader
            .get_mut()
            .write_all(b"CONNECT {\"verbose\":false}\r\n")
            .ok()?;
        Some(reader)
    }

    /// Publishes `payload` on `subject` with no headers (as any NATS client would), and waits
    /// for the server's PONG so it has been processed.
    fn publish_raw(&self, subject: &str, payload: &str) {
        let mut reader = self.connect().expect("nats-server is up");
        let command = format!("PUB {subject} {}\r\n{payload}\r\nPING\r\n", payload.len());
        reader.get_mut().write_all(command.as_bytes()).unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line.starts_with("PONG") {
                return;
            }
            assert!(!line.is_empty(), "nats-server closed the connection");
        }
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

fn nats_server_binary() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    NATS_SERVER_PATHS
        .iter()
        .map(std::path::PathBuf::from)
        .chain(std::env::split_paths(&path).map(|dir| dir.join("nats-server")))
        .find(|candidate| candidate.is_file())
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn host(nats: &Nats, id: &str) -> Server {
    Server::start(&format!(
        "shards = 2\nnats_url = \"{}\"\ncluster_host_id = \"{id}\"\n",
        nats.url()
    ))
}

/// A session on `server` with `client_id`, subscribed to `topics`.
pub(crate) fn session(server: &Server, client_id: &str, topics: &[&str]) -> Client {
    let mut client = server.connect();
    let mut out = BytesMut::new();
    let hello = Hello {
        client_id,
        token: &[],
        versions: &[1],
        heartbeat_ms: 0,
    };
    encode_frame(&mut out, 0, 1, &hello, 65_536).unwrap();
    client.send_raw(&out);
    assert_eq!(client.recv().kind, Kind::Welcome);
    if !topics.is_empty() {
        let names: Vec<TopicName<'_>> = topics.iter().map(|name| TopicName { name }).collect();
        let mut out = BytesMut::new();
        encode_frame(&mut out, 0, 2, &Subscribe { topics: &names }, 65_536).unwrap();
        client.send_raw(&out);
        let ack = client.recv();
        assert_eq!((ack.kind, ack.id), (Kind::Ack, 2), "got {ack:?}");
    }
    client
}

/// (topic, seq, payload) of every Push queued for `client` up to the Pong of a Ping.
pub(crate) fn pushes(client: &mut Client, ping_id: u64) -> Vec<(String, u64, String)> {
    client.send(Kind::Ping, ping_id, &[]);
    let mut out = Vec::new();
    loop {
        let frame = client.recv();
        if (frame.kind, frame.id) == (Kind::Pong, ping_id) {
            return out;
        }
        assert_eq!(frame.kind, Kind::Push, "got {frame:?}");
        let decoded = next_frame(&frame.bytes, 1 << 20).unwrap().unwrap();
        let Payload::Push(push) = decoded.payload else {
            unreachable!()
        };
        out.push((
            push.topic.to_string(),
            push.seq.to_native(),
            String::from_utf8_lossy(&push.payload).into_owned(),
        ));
    }
}

/// Calls `send` (a publish somewhere, with a fresh payload) until `client` receives a Push with
/// that payload: NATS subscriptions are made asynchronously after the Ack, and reconnects take
/// a moment. Returns the push (topic, seq) and how many publishes it took.
pub(crate) fn until_received(
    client: &mut Client,
    label: &str,
    mut send: impl FnMut(&str),
) -> ((String, u64), usize) {
    let start = Instant::now();
    let mut sent: Vec<String> = Vec::new();
    let mut ping = 1_000;
    loop {
        let payload = format!("{label} #{}", sent.len());
        send(&payload);
        sent.push(payload);
        std::thread::sleep(Duration::from_millis(100));
        ping += 1;
        if let Some((topic, seq, _)) = pushes(client, ping)
            .into_iter()
            .find(|(_, _, payload)| sent.contains(payload))
        {
            return ((topic, seq), sent.len());
        }
        assert!(
            start.elapsed() < DELIVERY_DEADLINE,
            "{label}: nothing arrived in {DELIVERY_DEADLINE:?} after {} publishes",
            sent.len()
        );
    }
}

pub(crate) fn publish_ok(server: &Server, json: &str) -> String {
    let (status, body) = publish(server, json, None);
    assert!((200..300).contains(&status), "{status} {body}");
    body
}

pub(crate) fn metric(server: &Server, name: &str) -> u64 {
    let (status, body) = admin_request(
        server.admin.unwrap(),
        "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n",
    );
    assert_eq!(status, 200);
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[test]
fn publishes_cross_hosts_over_nats_and_survive_a_nats_restart() {
    let port = free_port();
    let mut nats = Nats::start(port);
    let a = host(&nats, "host-a");
    let b = host(&nats, "host-b");
    let mut reader = session(&b, "carol", &["news"]);

    // Topic: a publish on A reaches the subscriber on B, sequenced by B.
    let ((topic, seq), _) = until_received(&mut reader, "topic", |payload| {
        publish_ok(
            &a,
            &format!(r#"{{"target":"topic","topic":"news","payload":"{payload}"}}"#),
        );
    });
    assert_eq!(topic, "news");
    assert!(seq >= 1);

    // Broadcast.
    let ((topic, _), _) = until_received(&mut reader, "broadcast", |payload| {
        publish_ok(
            &a,
            &format!(r#"{{"target":"broadcast","payload":"{payload}"}}"#),
        );
    });
    assert_eq!(topic, "*");

    // Client id registered on B, published on A (A has no session: 200, delivered 0 here).
    until_received(&mut reader, "client", |payload| {
        let body = publish_ok(
            &a,
            &format!(r#"{{"target":"client","client_id":"carol","payload":"{payload}"}}"#),
        );
        assert_eq!(body.trim(), r#"{"delivered":0}"#);
    });

    // Straight on NATS, no origin header: reaches subscribers on both hosts.
    let mut reader_a = session(&a, "dave", &["news"]);
    until_received(&mut reader_a, "nats-direct-a", |payload| {
        nats.publish_raw("holdfast.topic.news", payload)
    });
    until_received(&mut reader, "nats-direct-b", |payload| {
        nats.publish_raw("holdfast.topic.news", payload)
    });

    // NATS goes away: publishes on A are counted as not forwarded.
    nats.kill();
    let start = Instant::now();
    while metric(&a, "holdfast_cluster_publish_failed_total") == 0 {
        assert!(
            start.elapsed() < DELIVERY_DEADLINE,
            "publishes while NATS is down were not counted"
        );
        publish_ok(
            &a,
            r#"{"target":"topic","topic":"news","payload":"while down"}"#,
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Back on the same port: both bridges reconnect and re-subscribe.
    let nats = Nats::start(port);
    until_received(&mut reader, "after restart", |payload| {
        publish_ok(
            &a,
            &format!(r#"{{"target":"topic","topic":"news","payload":"{payload}"}}"#),
        );
    });
    until_received(&mut reader, "broadcast after restart", |payload| {
        publish_ok(
            &a,
            &format!(r#"{{"target":"broadcast","payload":"{payload}"}}"#),
        );
    });
    assert!(metric(&a, "holdfast_cluster_published_total") >= 1);
    assert!(metric(&b, "holdfast_cluster_received_total") >= 1);
    drop(nats);
}

#[test]
fn standalone_hosts_show_no_cluster_metrics() {
    let server = Server::start("shards = 1\n");
    let (_, body) = admin_request(
        server.admin.unwrap(),
        "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n",
    );
    assert!(!body.contains("holdfast_cluster_"), "{body}");
}
