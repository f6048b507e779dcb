//! Which broadcasts a session got live before it resumed `"*"`. Every open session gets every
//! broadcast from its Hello on (it subscribes to nothing), so a session that asks to resume
//! `"*"` a moment after its Hello may already hold some of what the replay would repeat.
//!
//! Broadcasts reach a shard in seq order (one owner sequences them and sends each shard its
//! `Deliver`s on one FIFO channel), so the shard needs only the seq of the last broadcast it
//! delivered, plus, for each session, where its live broadcasts began (its *start*): the
//! session got live exactly the broadcasts after its start up to the shard's last seq when it
//! asked. A `Deliver` lost to a full inbox shows as a seq that is not the last + 1; it starts a
//! new *run*, and a start from an older run is no longer exact.
//!
//! Nothing of this is in the 32-byte connection slot but one flag bit,
//! `ConnFlags::BROADCAST_UNSEEN`: set at Hello, cleared by the first broadcast delivered to
//! the session or by its resume of `"*"`. A session resuming with the flag set got nothing
//! live and its replay goes out whole. The first broadcast that clears it records the start
//! (that broadcast's seq - 1) in a side table keyed by slot (with the generation): at most
//! [`BROADCAST_STARTS_MAX`] per shard, each dropped at the session's resume of `"*"`, at its
//! close, or [`BROADCAST_START_MAX_AGE_MS`] after it was recorded. So a session holds nothing
//! here until a broadcast reaches it, and nothing once that is 10 s past: idle sessions on a
//! quiet server cost nothing. A session without a start (at the cap, too late, or resuming
//! `"*"` a second time) is answered by what is still exact: a replay that holds nothing at or
//! below the shard's last broadcast seq is the held-back tail and goes out; one that would is
//! "not recovered" (see [`LiveBroadcasts::trim`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use holdfast_protocol::{next_frame, Payload};

use super::resume::TopicReply;
use crate::conn::ConnKey;

/// Most sessions per shard whose start is held (those a broadcast reached in the last
/// [`BROADCAST_START_MAX_AGE_MS`] that have not resumed `"*"` since). At the cap a session
/// gets no start: its resume of `"*"` is answered as one without a start (module docs).
/// About 48 bytes each in the map: 3 MiB per shard at the cap.
pub(crate) const BROADCAST_STARTS_MAX: usize = 65_536;

/// How long a start is held after the first broadcast reached the session. A client resumes
/// right after the Welcome; one that waits longer is answered as one without a start.
pub(crate) const BROADCAST_START_MAX_AGE_MS: u64 = 10_000;

/// How often the table is swept of starts older than [`BROADCAST_START_MAX_AGE_MS`].
const SWEEP_INTERVAL_MS: u64 = 1_000;

/// One session's start: it got every broadcast of `run` after `last_seq` live.
#[derive(Clone, Copy, Debug)]
struct Start {
    generation: u32,
    run: u32,
    last_seq: u64,
    recorded_at: Instant,
}

/// What a resume of `"*"` must leave out, or answer "not recovered", because the session got
/// broadcasts live before it asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LiveBroadcasts {
    /// A replayed broadcast at or below this seq is one the session may not have got, and it
    /// could not come in order any more (newer ones went out live before the Ack).
    pub unvouched_through_seq: u64,
    /// Replayed broadcasts above `unvouched_through_seq` up to this seq reached the session
    /// live: they are not sent again.
    pub live_through_seq: u64,
    /// The shard's run when the session asked: the numbers above are of that run.
    pub run: u32,
}

impl LiveBroadcasts {
    /// Takes out of `reply` (the owner's answer for `"*"`) what the session already got live.
    /// A replay that would hold a broadcast the session may have missed before newer ones it
    /// got live is answered "not recovered" with nothing replayed: it could not come in order.
    /// So is one whose numbers may not be those the session got live: the shard's run changed
    /// since it asked (`run_now`), or the replay ends below the last seq it got live (only a
    /// new numbering does that: the owner sequenced all that reached this shard before it
    /// answered).
    pub(crate) fn trim(&self, reply: &mut TopicReply, run_now: u32) {
        let (Some(first), Some(last)) = (reply.frames.first(), reply.frames.last()) else {
            return;
        };
        let (first_seq, last_seq) = (push_seq(first), push_seq(last));
        let numbered_alike =
            run_now == self.run && last_seq.is_some_and(|seq| seq >= self.live_through_seq);
        if !numbered_alike || first_seq.is_none_or(|seq| seq <= self.unvouched_through_seq) {
            reply.resumed.recovered = 0;
            reply.frames.clear();
            return;
        }
        reply
            .frames
            .retain(|frame| push_seq(frame).is_none_or(|seq| seq > self.live_through_seq));
    }
}

/// The seq of an encoded Push frame (`None` if it is not one: never for frames this server
/// encoded).
fn push_seq(frame: &Bytes) -> Option<u64> {
    let max_frame_bytes = u32::try_from(frame.len()).ok()?;
    match next_frame(frame, max_frame_bytes).ok()??.payload {
        Payload::Push(push) => Some(push.seq.to_native()),
        _ => None,
    }
}

/// One shard's broadcast position and the starts of sessions a broadcast reached lately.
#[derive(Debug, Default)]
pub(crate) struct BroadcastSeen {
    /// Seq of the last broadcast this shard delivered (0: none yet).
    last_seq: u64,
    /// Changes whenever a broadcast's seq is not `last_seq + 1`.
    run: u32,
    /// slot -> start, for sessions a broadcast reached lately that have not resumed `"*"`.
    starts: HashMap<u32, Start>,
    next_sweep: Option<Instant>,
}

impl BroadcastSeen {
    /// A broadcast is being delivered on this shard: records its seq. Then call
    /// [`BroadcastSeen::first_live`] for each session it is the first broadcast of.
    pub(crate) fn delivered(&mut self, frame: &Bytes) {
        let seq = push_seq(frame).unwrap_or(0);
        if self.last_seq.checked_add(1) != Some(seq) {
            self.run = self.run.wrapping_add(1);
        }
        self.last_seq = seq;
    }

    /// The broadcast just `delivered` is the first to reach session `conn` (it had
    /// `BROADCAST_UNSEEN`): its live broadcasts start here.
    pub(crate) fn first_live(&mut self, conn: ConnKey, now: Instant) {
        if self.starts.len() >= BROADCAST_STARTS_MAX && !self.starts.contains_key(&conn.slot) {
            return;
        }
        let start = Start {
            generation: conn.generation,
            run: self.run,
            last_seq: self.last_seq.saturating_sub(1),
            recorded_at: now,
        };
        self.starts.insert(conn.slot, start);
        debug_assert!(self.starts.len() <= BROADCAST_STARTS_MAX);
    }

    /// `conn` resumes `"*"`; `unseen`: no broadcast reached it since its Hello (its
    /// `BROADCAST_UNSEEN` flag). What its replay must leave out (`None`: the replay goes out
    /// whole). Its start is dropped.
    pub(crate) fn take(&mut self, conn: ConnKey, unseen: bool) -> Option<LiveBroadcasts> {
        let start = self
            .starts
            .remove(&conn.slot)
            .filter(|start| start.generation == conn.generation);
        if unseen {
            debug_assert!(start.is_none(), "a start is recorded as the flag clears");
            return None;
        }
        match start {
            Some(start) if start.run == self.run => {
                debug_assert!(start.last_seq < self.last_seq);
                Some(LiveBroadcasts {
                    unvouched_through_seq: start.last_seq,
                    live_through_seq: self.last_seq,
                    run: self.run,
                })
            }
            // Not known which broadcasts up to the last one reached it.
            _ => Some(LiveBroadcasts {
                unvouched_through_seq: self.last_seq,
                live_through_seq: self.last_seq,
                run: self.run,
            }),
        }
    }

    /// Changes whenever a broadcast's seq is not the last + 1 (a lost `Deliver`, a new run).
    pub(crate) fn run(&self) -> u32 {
        self.run
    }

    /// A closing connection's start goes with it.
    pub(crate) fn remove_conn(&mut self, conn: ConnKey) {
        if self
            .starts
            .get(&conn.slot)
            .is_some_and(|start| start.generation == conn.generation)
        {
            self.starts.remove(&conn.slot);
        }
    }

    /// Drops the starts older than [`BROADCAST_START_MAX_AGE_MS`] (at most once a second), and
    /// gives back the memory of a table that shrank.
    pub(crate) fn expire(&mut self, now: Instant) {
        if self.starts.capacity() == 0 || self.next_sweep.is_some_and(|at| now < at) {
            return;
        }
        let max_age = Duration::from_millis(BROADCAST_START_MAX_AGE_MS);
        self.starts
            .retain(|_, start| now.saturating_duration_since(start.recorded_at) < max_age);
        if self.starts.len() < self.starts.capacity() / 4 {
            self.starts.shrink_to(self.starts.len() * 2);
        }
        self.next_sweep = Some(now + Duration::from_millis(SWEEP_INTERVAL_MS));
    }

    #[cfg(test)]
    fn starts_len(&self) -> usize {
        self.starts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use holdfast_protocol::encode_frame;
    use holdfast_protocol::payload::{Push, TopicResumed};

    fn push(seq: u64) -> Bytes {
        let mut out = BytesMut::new();
        let push = Push {
            topic: "*",
            seq,
            payload: b"b",
        };
        encode_frame(&mut out, 0, 0, &push, 1 << 16).unwrap();
        out.freeze()
    }

    fn key(generation: u32) -> ConnKey {
        ConnKey {
            slot: 5,
            generation,
        }
    }

    fn reply(seqs: std::ops::RangeInclusive<u64>) -> TopicReply {
        TopicReply {
            resumed: TopicResumed {
                epoch: 7,
                seq: *seqs.end(),
                oldest_seq: 1,
                recovered: 1,
            },
            frames: seqs.map(push).collect(),
        }
    }

    fn seqs(reply: &TopicReply) -> Vec<u64> {
        reply.frames.iter().map(|f| push_seq(f).unwrap()).collect()
    }

    #[test]
    fn what_reached_a_session_live_is_not_replayed_again() {
        let mut seen = BroadcastSeen::default();
        seen.delivered(&push(1));
        // Opened after 1; 2 is its first broadcast, 3 follows.
        seen.delivered(&push(2));
        seen.first_live(key(1), Instant::now());
        seen.delivered(&push(3));
        let live = seen.take(key(1), false).expect("2 and 3 went out live");
        assert_eq!(
            live,
            LiveBroadcasts {
                unvouched_through_seq: 1,
                live_through_seq: 3,
                run: seen.run(),
            }
        );
        // Resumed from 1: 2..=3 came live, 4..=5 were held back while it asked.
        let mut from_1 = reply(2..=5);
        live.trim(&mut from_1, seen.run());
        assert_eq!((seqs(&from_1), from_1.resumed.recovered), (vec![4, 5], 1));
        // Resumed from 0: 1 was missed before the Hello and cannot come before 2 and 3 now.
        let mut from_0 = reply(1..=5);
        live.trim(&mut from_0, seen.run());
        assert_eq!((seqs(&from_0), from_0.resumed.recovered), (vec![], 0));
    }

    #[test]
    fn nothing_live_since_the_hello_leaves_the_replay_whole() {
        let mut seen = BroadcastSeen::default();
        seen.delivered(&push(1));
        assert_eq!(seen.take(key(1), true), None);
    }

    #[test]
    fn without_a_start_only_a_replay_above_the_last_live_seq_is_recovered() {
        let mut seen = BroadcastSeen::default();
        seen.delivered(&push(1));
        seen.first_live(key(1), Instant::now());
        seen.delivered(&push(2));
        let unknown = seen
            .take(key(2), false)
            .expect("another generation has no start");
        let mut held_tail = reply(3..=4);
        unknown.trim(&mut held_tail, seen.run());
        assert_eq!(
            (seqs(&held_tail), held_tail.resumed.recovered),
            (vec![3, 4], 1)
        );
        let mut older = reply(2..=4);
        unknown.trim(&mut older, seen.run());
        assert_eq!((seqs(&older), older.resumed.recovered), (vec![], 0));
    }

    #[test]
    fn a_lost_deliver_makes_an_older_start_inexact() {
        let mut seen = BroadcastSeen::default();
        seen.delivered(&push(1));
        seen.first_live(key(1), Instant::now());
        seen.delivered(&push(3)); // 2 never reached this shard
        let live = seen.take(key(1), false).unwrap();
        let mut from_0 = reply(1..=3);
        live.trim(&mut from_0, seen.run());
        assert_eq!(from_0.resumed.recovered, 0, "2 may be missing: not vouched");
    }

    #[test]
    fn a_first_broadcast_after_a_lost_one_starts_exactly_there() {
        let mut seen = BroadcastSeen::default();
        seen.delivered(&push(1));
        seen.delivered(&push(3)); // 2 lost; the session's first is 3
        seen.first_live(key(1), Instant::now());
        let live = seen.take(key(1), false).unwrap();
        let mut from_2 = reply(3..=4);
        live.trim(&mut from_2, seen.run());
        assert_eq!((seqs(&from_2), from_2.resumed.recovered), (vec![4], 1));
    }

    #[test]
    fn a_new_numbering_during_the_resume_is_not_recovered() {
        let mut seen = BroadcastSeen::default();
        seen.delivered(&push(1));
        seen.first_live(key(1), Instant::now()); // 1 was its first: got 1 and 2 live
        seen.delivered(&push(2));
        let live = seen.take(key(1), false).unwrap();
        // The owner's numbering restarted before it answered and none of it came here yet.
        let mut restarted = reply(1..=1);
        live.trim(&mut restarted, seen.run());
        assert_eq!(
            restarted.resumed.recovered, 0,
            "ends below the last live seq"
        );
        // A broadcast of another numbering came here between the ask and the answer.
        let run_asked = seen.run();
        seen.delivered(&push(7));
        assert_ne!(seen.run(), run_asked);
        let mut after = reply(3..=7);
        live.trim(&mut after, seen.run());
        assert_eq!((seqs(&after), after.resumed.recovered), (vec![], 0));
        // The same replay with the run unchanged goes out.
        let mut same_run = reply(3..=7);
        live.trim(&mut same_run, run_asked);
        assert_eq!(same_run.resumed.recovered, 1);
    }

    #[test]
    fn starts_are_bounded_by_count_and_age_and_dropped_at_close() {
        let now = Instant::now();
        let mut seen = BroadcastSeen::default();
        seen.delivered(&push(1));
        for slot in 0..BROADCAST_STARTS_MAX as u32 + 10 {
            let conn = ConnKey {
                slot,
                generation: 1,
            };
            seen.first_live(conn, now);
        }
        assert_eq!(seen.starts_len(), BROADCAST_STARTS_MAX);
        seen.remove_conn(ConnKey {
            slot: 0,
            generation: 1,
        });
        assert_eq!(seen.starts_len(), BROADCAST_STARTS_MAX - 1);
        seen.expire(now + Duration::from_millis(BROADCAST_START_MAX_AGE_MS - 1));
        assert_eq!(seen.starts_len(), BROADCAST_STARTS_MAX - 1);
        seen.expire(now + Duration::from_millis(BROADCAST_START_MAX_AGE_MS + SWEEP_INTERVAL_MS));
        assert_eq!(seen.starts_len(), 0);
        assert_eq!(seen.starts.capacity(), 0, "the memory goes back");
    }
}
