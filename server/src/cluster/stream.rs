//! JetStream cluster mode, the part that is pure data: how a topic's publish is stamped so that
//! its sequence number is one sequence on every host, how a host reads the stamp back and
//! classifies what arrives, and the stream itself (created or checked at start).
//!
//! - **Subjects.** One stream holds every topic, under `holdfast.js.t.<topic>` (a plain NATS
//!   token list) or `holdfast.js.h.<hex>` (anything else), and broadcasts under
//!   `holdfast.js.b`; the stream's subject filter is [`STREAM_SUBJECTS`].
//! - **Stamp.** Each message carries `Holdfast-Seq` (the topic's sequence number, from 1),
//!   `Holdfast-Prev` (the number before it, 0 for the first) and `Holdfast-Run` (the epoch the
//!   numbers belong to). A publisher stamps `seq = last + 1` after the topic's last message and
//!   publishes with `Nats-Expected-Last-Subject-Sequence` set to that message's stream
//!   sequence: if another host published to the topic meanwhile, JetStream refuses, and the
//!   publisher reads the last message again and retries (cluster/jetstream.rs). So no two
//!   messages of a topic share a number, whichever host stamped them.
//! - **Run (the topic's epoch).** A topic's first run is [`first_run`]`(stream run, topic)`,
//!   which every host computes alike, so a host answers a subscribe with the right epoch
//!   before it has seen any message of the topic. The stream run derives from the stream's
//!   name and creation time: a stream deleted and created again starts new runs. A topic whose
//!   messages all left the stream (aged out) while a host watched starts again at 1 in a new
//!   run, [`restart_run`], so its old numbers are never reused under the same epoch.

use std::time::Duration;

use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{self, Context};

use super::{subject, unhex};
use crate::mesh::{Target, BROADCAST_TOPIC};

/// The stream's subject filter: every subject below.
pub(crate) const STREAM_SUBJECTS: &str = "holdfast.js.>";
const TOPIC_PREFIX: &str = "holdfast.js.t.";
const TOPIC_HEX_PREFIX: &str = "holdfast.js.h.";
/// Broadcasts: one subject, so broadcasts have one sequence too.
pub(crate) const SUBJECT_BROADCAST: &str = "holdfast.js.b";

pub(crate) const SEQ_HEADER: &str = "Holdfast-Seq";
pub(crate) const PREV_HEADER: &str = "Holdfast-Prev";
pub(crate) const RUN_HEADER: &str = "Holdfast-Run";

/// The stream subject of a topic or broadcast target (`None` for other targets).
pub(crate) fn target_subject(target: &Target) -> Option<String> {
    match target {
        Target::Topic(topic) => Some(subject(TOPIC_PREFIX, TOPIC_HEX_PREFIX, topic)),
        Target::Broadcast => Some(SUBJECT_BROADCAST.to_owned()),
        Target::Conn(_) | Target::Client(_) => None,
    }
}

/// The target a stream subject stands for, if it is one of ours.
pub(crate) fn subject_target(subject: &str) -> Option<Target> {
    if subject == SUBJECT_BROADCAST {
        return Some(Target::Broadcast);
    }
    let topic = if let Some(topic) = subject.strip_prefix(TOPIC_PREFIX) {
        topic.to_owned()
    } else {
        unhex(subject.strip_prefix(TOPIC_HEX_PREFIX)?)?
    };
    crate::mesh::valid_topic(&topic).then_some(Target::Topic(topic))
}

/// The history key of a topic or broadcast target (`"*"` for broadcasts).
pub(crate) fn target_key(target: &Target) -> Option<&str> {
    match target {
        Target::Topic(topic) => Some(topic),
        Target::Broadcast => Some(BROADCAST_TOPIC),
        Target::Conn(_) | Target::Client(_) => None,
    }
}

pub(crate) use crate::mesh::Stamp;

/// Why a message in the stream is not one a host can sequence.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StampError {
    #[error("header {0} is missing")]
    Missing(&'static str),
    #[error("header {0} is not a decimal u64")]
    NotANumber(&'static str),
    #[error("Holdfast-Seq {seq} does not follow Holdfast-Prev {prev}")]
    NotIncreasing { seq: u64, prev: u64 },
}

impl Stamp {
    /// The stamp of the publish after `last` (the topic's last message in the stream, if
    /// any). With none, the topic starts at 1 in `fresh_run`.
    pub(crate) fn next(last: Option<Stamp>, fresh_run: u64) -> Stamp {
        match last {
            Some(last) => Stamp {
                seq: last.seq + 1,
                prev: last.seq,
                run: last.run,
            },
            None => Stamp {
                seq: 1,
                prev: 0,
                run: fresh_run,
            },
        }
    }

    /// The headers to publish with, in order.
    pub(crate) fn headers(&self) -> [(&'static str, String); 3] {
        [
            (SEQ_HEADER, self.seq.to_string()),
            (PREV_HEADER, self.prev.to_string()),
            (RUN_HEADER, self.run.to_string()),
        ]
    }

    /// Reads a stamp back from a message's headers (`get` looks one up by name).
    pub(crate) fn parse<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Stamp, StampError> {
        let number = |name: &'static str| -> Result<u64, StampError> {
            get(name)
                .ok_or(StampError::Missing(name))?
                .trim()
                .parse()
                .map_err(|_| StampError::NotANumber(name))
        };
        let stamp = Stamp {
            seq: number(SEQ_HEADER)?,
            prev: number(PREV_HEADER)?,
            run: number(RUN_HEADER)?,
        };
        if stamp.seq == 0 || stamp.prev >= stamp.seq {
            return Err(StampError::NotIncreasing {
                seq: stamp.seq,
                prev: stamp.prev,
            });
        }
        Ok(stamp)
    }
}

/// FNV-1a over `parts`, never 0 (the protocol keeps epoch 0 for "unknown").
fn hash(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|part| part.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash.max(1)
}

/// The run of a stream: its name and creation time (nanoseconds since the Unix epoch).
pub(crate) fn run_of(stream_name: &str, created_unix_ns: u128) -> u64 {
    hash(&[stream_name.as_bytes(), &created_unix_ns.to_le_bytes()])
}

/// A topic's first run in a stream (`key`: the topic, or `"*"` for broadcasts).
pub(crate) fn first_run(stream_run: u64, key: &str) -> u64 {
    hash(&[&stream_run.to_le_bytes(), key.as_bytes()])
}

/// The run of a topic that starts again after its messages left the stream; the stream
/// sequence of its last message before that makes it differ from every earlier run.
pub(crate) fn restart_run(stream_run: u64, key: &str, last_stream_seq: u64) -> u64 {
    hash(&[
        &stream_run.to_le_bytes(),
        key.as_bytes(),
        &last_stream_seq.to_le_bytes(),
    ])
}

/// What a host does with a message of a topic, given the topic's run and last seq here.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// The next one: deliver it.
    Next,
    /// Already delivered (a consumer that started again overlapped what it had sent).
    Duplicate,
    /// Numbers between were not seen here (they left the stream before this host read
    /// them): deliver it; the topic's history here starts again at it.
    Gap,
    /// The topic's numbers start over in another run: its history here starts again.
    NewRun,
}

/// Classifies `stamp` against this host's `run` and `last_seq` of the topic (0: none yet).
/// A run's first message (prev 0) after others of the same run is a new run too: the topic
/// started again (see the module comment) and its old numbers are gone.
pub(crate) fn arrival(stamp: Stamp, run: u64, last_seq: u64) -> Arrival {
    if stamp.run != run || (stamp.prev == 0 && last_seq > 0) {
        Arrival::NewRun
    } else if stamp.seq <= last_seq {
        Arrival::Duplicate
    } else if stamp.prev == last_seq {
        Arrival::Next
    } else {
        Arrival::Gap
    }
}

/// How long the stream remembers a `Nats-Msg-Id` (a retry within it is stored once): the
/// window of a publisher's `msg_id` (push::request), at most the stream's max age.
pub(crate) const STREAM_DUPLICATE_WINDOW_MS: u64 = 120_000;

/// The stream's name and limits (what the stream is created with, or checked against).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StreamLimits {
    pub name: String,
    pub max_age: Duration,
    pub max_messages: i64,
    pub max_bytes: i64,
}

/// Creates the stream (or opens it if it exists) and returns it with its run.
pub(crate) async fn open(js: &Context, limits: &StreamLimits) -> Result<(Stream, u64), String> {
    let config = jetstream::stream::Config {
        name: limits.name.clone(),
        subjects: vec![STREAM_SUBJECTS.to_owned()],
        max_age: limits.max_age,
        max_messages: limits.max_messages,
        max_bytes: limits.max_bytes,
        duplicate_window: limits
            .max_age
            .min(Duration::from_millis(STREAM_DUPLICATE_WINDOW_MS)),
        ..Default::default()
    };
    let mut stream = js
        .get_or_create_stream(config)
        .await
        .map_err(|e| format!("JetStream stream {}: {e}", limits.name))?;
    let info = stream
        .info()
        .await
        .map_err(|e| format!("JetStream stream {} info: {e}", limits.name))?;
    let subjects = &info.config.subjects;
    if !subjects.iter().any(|s| s == STREAM_SUBJECTS) {
        return Err(format!(
            "JetStream stream {} exists with subjects {subjects:?}, not {STREAM_SUBJECTS}",
            limits.name
        ));
    }
    let created_unix_ns = u128::try_from(info.created.unix_timestamp_nanos()).unwrap_or(0);
    let run = run_of(&limits.name, created_unix_ns);
    Ok((stream, run))
}

/// The stamp and stream sequence of `subject`'s last message (`None`: none, or one with no
/// stamp of ours, such as a plain NATS publish).
pub(crate) async fn last_of(
    stream: &Stream,
    subject: &str,
) -> Result<Option<(Stamp, u64)>, String> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(
            Stamp::parse(|name| message.headers.get(name).map(|v| v.as_str()))
                .ok()
                .map(|stamp| (stamp, message.sequence)),
        ),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(format!("last message of {subject}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn round_trip(stamp: Stamp) -> Result<Stamp, StampError> {
        let headers: HashMap<&str, String> = stamp.headers().into_iter().collect();
        Stamp::parse(|name| headers.get(name).map(String::as_str))
    }

    fn stamp(seq: u64, prev: u64, run: u64) -> Stamp {
        Stamp { seq, prev, run }
    }

    #[test]
    fn a_stamp_follows_the_last_in_its_run_and_a_fresh_topic_starts_at_one() {
        let first = Stamp::next(None, 7);
        assert_eq!(first, stamp(1, 0, 7));
        let second = Stamp::next(Some(first), 9);
        assert_eq!(second, stamp(2, 1, 7), "the last message's run goes on");
    }

    #[test]
    fn headers_round_trip_and_bad_ones_are_refused_by_name() {
        let full = stamp(42, 41, u64::MAX);
        assert_eq!(round_trip(full), Ok(full));
        let none = Stamp::parse(|_| None);
        assert_eq!(none, Err(StampError::Missing(SEQ_HEADER)));
        let text = Stamp::parse(|name| Some(if name == PREV_HEADER { "x" } else { "3" }));
        assert_eq!(text, Err(StampError::NotANumber(PREV_HEADER)));
        let backwards = Stamp::parse(|_| Some("5"));
        assert_eq!(
            backwards,
            Err(StampError::NotIncreasing { seq: 5, prev: 5 })
        );
        let zero = Stamp::parse(|_| Some("0"));
        assert!(zero.is_err(), "seq 0 is never stamped");
    }

    #[test]
    fn arrivals_deliver_the_next_drop_duplicates_and_see_gaps_and_new_runs() {
        assert_eq!(arrival(stamp(1, 0, 7), 7, 0), Arrival::Next);
        assert_eq!(
            arrival(stamp(4, 3, 7), 7, 0),
            Arrival::Gap,
            "history starts mid-way"
        );
        assert_eq!(arrival(stamp(4, 3, 7), 7, 3), Arrival::Next);
        assert_eq!(arrival(stamp(3, 2, 7), 7, 3), Arrival::Duplicate);
        assert_eq!(arrival(stamp(2, 1, 7), 7, 3), Arrival::Duplicate);
        assert_eq!(arrival(stamp(6, 5, 7), 7, 3), Arrival::Gap);
        assert_eq!(arrival(stamp(1, 0, 9), 7, 3), Arrival::NewRun);
        assert_eq!(arrival(stamp(5, 4, 9), 7, 0), Arrival::NewRun);
        assert_eq!(
            arrival(stamp(1, 0, 7), 7, 3),
            Arrival::NewRun,
            "a first message after others of its run: the topic started over"
        );
    }

    #[test]
    fn subjects_sit_under_the_stream_filter_and_round_trip() {
        let filter = STREAM_SUBJECTS.trim_end_matches('>');
        let targets = [
            Target::Topic("news.eu".into()),
            Target::Topic("a b".into()),
            Target::Topic("ünï".into()),
            Target::Broadcast,
        ];
        for target in targets {
            let subject = target_subject(&target).unwrap();
            assert!(subject.starts_with(filter), "{subject}");
            assert_eq!(subject_target(&subject), Some(target));
        }
        assert_eq!(
            target_subject(&Target::Topic("news.eu".into())).unwrap(),
            "holdfast.js.t.news.eu"
        );
        assert_eq!(
            target_subject(&Target::Topic("a b".into())).unwrap(),
            "holdfast.js.h.612062"
        );
        assert_eq!(target_subject(&Target::Client("c".into())), None);
        assert_eq!(subject_target("holdfast.js.h.zz"), None);
        assert_eq!(subject_target("holdfast.topic.news"), None);
    }

    #[test]
    fn runs_differ_per_stream_per_topic_and_per_restart() {
        let run = run_of("HOLDFAST", 1_700_000_000_000_000_000);
        assert_ne!(run, 0);
        assert_eq!(run, run_of("HOLDFAST", 1_700_000_000_000_000_000));
        assert_ne!(run, run_of("HOLDFAST", 1_700_000_000_000_000_001));
        assert_ne!(run, run_of("OTHER", 1_700_000_000_000_000_000));
        let first = first_run(run, "news");
        assert_eq!(
            first,
            first_run(run, "news"),
            "every host computes it alike"
        );
        assert_ne!(first, first_run(run, "sport"));
        assert_ne!(first, restart_run(run, "news", 10));
        assert_ne!(restart_run(run, "news", 10), restart_run(run, "news", 11));
    }
}
