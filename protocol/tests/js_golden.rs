//! The JavaScript client (clients/js/holdfast.js) against this crate, byte for byte: frames made
//! by the reference encoder are kept in clients/js/test/golden.json, which the JS tests read
//! (they encode the same values and must get the same bytes, and decode the server's frames).
//! `golden_frames_match_the_committed_file` fails if the encoder and the file drift apart (run
//! with HOLDFAST_UPDATE_GOLDEN=1 to rewrite it); `js_client_tests_pass_under_node` runs
//! `node --test` on clients/js/test (Node.js from Debian's `nodejs`, see run.sh).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bytes::BytesMut;
use holdfast_protocol::payload::{
    ErrorBody, Event, Goodbye, Hello, Push, Request, Response, ResumeTopic, Subscribe,
    SubscribeAck, SubscribeResume, TopicName, TopicResumed, Unsubscribe, Welcome,
};
use holdfast_protocol::{encode_frame, encode_raw, token, Kind, FLAG_ACK_REQUESTED};

const MAX: u32 = 65_536;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn golden_path() -> PathBuf {
    repo_root().join("clients/js/test/golden.json")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every golden frame: (name, bytes). The JS test knows what each name holds.
fn golden_frames() -> Vec<(&'static str, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut add = |name: &'static str, fill: &dyn Fn(&mut BytesMut)| {
        let mut out = BytesMut::new();
        fill(&mut out);
        frames.push((name, out.to_vec()));
    };
    let alice_token = token::sign(b"0123456789abcdef", "alice", 1_800_000_000);
    add("hello_anonymous", &|out| {
        encode_raw(out, Kind::Hello, 0, 1, &[], MAX).unwrap();
    });
    add("hello_alice_token", &|out| {
        let hello = Hello {
            client_id: "alice",
            token: &alice_token,
            versions: &[1],
            heartbeat_ms: 5000,
        };
        encode_frame(out, 0, 1, &hello, MAX).unwrap();
    });
    add("hello_empty_fields", &|out| {
        let hello = Hello {
            client_id: "",
            token: &[],
            versions: &[1],
            heartbeat_ms: 0,
        };
        encode_frame(out, 0, 2, &hello, MAX).unwrap();
    });
    add("subscribe_two_ack", &|out| {
        let names = [TopicName { name: "news" }, TopicName { name: "sports/é" }];
        let topics = Subscribe { topics: &names };
        encode_frame(out, FLAG_ACK_REQUESTED, 3, &topics, MAX).unwrap();
    });
    add("subscribe_one", &|out| {
        let names = [TopicName { name: "t" }];
        encode_frame(out, 0, 4, &Subscribe { topics: &names }, MAX).unwrap();
    });
    add("unsubscribe_none", &|out| {
        encode_frame(out, 0, 5, &Unsubscribe { topics: &[] }, MAX).unwrap();
    });
    add("event_clicks", &|out| {
        let event = Event {
            topic: "clicks",
            payload: &[0, 1, 2, 255],
        };
        encode_frame(out, FLAG_ACK_REQUESTED, 6, &event, MAX).unwrap();
    });
    add("request_echo", &|out| {
        let request = Request {
            method: "kv.get",
            body: b"key",
        };
        encode_frame(out, 0, 7, &request, MAX).unwrap();
    });
    add("pong_42", &|out| {
        encode_raw(out, Kind::Pong, 0, 42, &[], MAX).unwrap();
    });
    add("goodbye_client", &|out| {
        let goodbye = Goodbye {
            reason: "client closing",
            reconnect_after_ms: 0,
        };
        encode_frame(out, 0, 8, &goodbye, MAX).unwrap();
    });
    // PROTOCOL.md's annotated SubscribeResume (news after seq 41 of an epoch), and one with a
    // topic that has no resume point yet.
    add("subscribe_resume_news", &|out| {
        let topics = [ResumeTopic {
            name: "news",
            epoch: 0x1122_3344_5566_7788,
            last_seq: 41,
        }];
        let resume = SubscribeResume { topics: &topics };
        encode_frame(out, 0, 9, &resume, MAX).unwrap();
    });
    add("subscribe_resume_two_ack", &|out| {
        let topics = [
            ResumeTopic {
                name: "news",
                epoch: 7,
                last_seq: u64::MAX - 1,
            },
            ResumeTopic {
                name: "sports/é",
                epoch: 0,
                last_seq: 0,
            },
        ];
        let resume = SubscribeResume { topics: &topics };
        encode_frame(out, FLAG_ACK_REQUESTED, 10, &resume, MAX).unwrap();
    });
    // Server frames the client decodes.
    add("welcome", &|out| {
        let welcome = Welcome {
            session_id: 0x0102_0304_0506_0708,
            heartbeat_ms: 5000,
            heartbeat_timeout_ms: 45_000,
            max_frame_bytes: 65_536,
            max_inflight_requests: 64,
        };
        encode_frame(out, 0, 1, &welcome, MAX).unwrap();
    });
    add("push_news_7", &|out| {
        let push = Push {
            topic: "news",
            seq: 7,
            payload: b"hello \xe2\x9c\x93",
        };
        encode_frame(out, 0, 0, &push, MAX).unwrap();
    });
    add("push_big_seq_empty", &|out| {
        let push = Push {
            topic: "n",
            seq: u64::MAX - 1,
            payload: &[],
        };
        encode_frame(out, 0, 0, &push, MAX).unwrap();
    });
    add("error_no_method", &|out| {
        let error = ErrorBody {
            code: 13,
            reason: "no method",
        };
        encode_frame(out, 0, 7, &error, MAX).unwrap();
    });
    add("goodbye_server", &|out| {
        let goodbye = Goodbye {
            reason: "shutting down",
            reconnect_after_ms: 1500,
        };
        encode_frame(out, 0, 0, &goodbye, MAX).unwrap();
    });
    add("response_body", &|out| {
        let response = Response { body: b"value" };
        encode_frame(out, 0, 7, &response, MAX).unwrap();
    });
    add("ack_3", &|out| {
        encode_raw(out, Kind::Ack, 0, 3, &[], MAX).unwrap();
    });
    add("subscribe_ack_9", &|out| {
        let topics = [TopicResumed {
            epoch: 0x1122_3344_5566_7788,
            seq: 45,
            oldest_seq: 12,
            recovered: 1,
        }];
        encode_frame(out, 0, 9, &SubscribeAck { topics: &topics }, MAX).unwrap();
    });
    add("subscribe_ack_two", &|out| {
        let topics = [
            TopicResumed {
                epoch: 8,
                seq: 3,
                oldest_seq: 0,
                recovered: 0,
            },
            TopicResumed {
                epoch: 0,
                seq: 0,
                oldest_seq: 0,
                recovered: 0,
            },
        ];
        encode_frame(out, 0, 10, &SubscribeAck { topics: &topics }, MAX).unwrap();
    });
    add("ping_9", &|out| {
        encode_raw(out, Kind::Ping, 0, 9, &[], MAX).unwrap();
    });
    frames
}

fn golden_json() -> String {
    let mut json = String::from("{\n");
    let frames = golden_frames();
    for (i, (name, bytes)) in frames.iter().enumerate() {
        let comma = if i + 1 == frames.len() { "" } else { "," };
        json.push_str(&format!("  \"{name}\": \"{}\"{comma}\n", hex(bytes)));
    }
    json.push_str("}\n");
    json
}

#[test]
fn golden_frames_match_the_committed_file() {
    let expected = golden_json();
    if std::env::var_os("HOLDFAST_UPDATE_GOLDEN").is_some() {
        std::fs::write(golden_path(), &expected).unwrap();
    }
    let committed = std::fs::read_to_string(golden_path()).unwrap_or_default();
    assert_eq!(
        committed, expected,
        "clients/js/test/golden.json differs from the encoder: rerun with HOLDFAST_UPDATE_GOLDEN=1 \
         and check the JS client still passes"
    );
}

#[test]
fn js_client_tests_pass_under_node() {
    let mut child = Command::new("node")
        .arg("--test")
        .arg("clients/js/test/")
        .current_dir(repo_root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node (Debian package nodejs, installed by run.sh) runs the JS client tests");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("node --test took over 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node --test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("# fail 0"), "{stdout}");
    assert!(!stdout.contains("# pass 0"), "node ran no test:\n{stdout}");
}
