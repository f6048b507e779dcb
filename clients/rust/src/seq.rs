//! Sequence numbers per topic: the subscribed topics, the last sequence number delivered on
//! each (what a resume will ask the server to continue from), and gap detection.

use std::collections::HashMap;

/// The topic of broadcasts; numbered like a topic but never subscribed to.
pub(crate) const BROADCAST_TOPIC: &str = "*";

/// A break in a topic's numbering, reported on the push stream right before the push that
/// revealed it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Gap {
    /// Pushes `first_missed_seq ..= last_missed_seq` of `topic` were not delivered.
    /// `dropped_here` of them reached this client but were dropped because the push stream
    /// was full; the rest never arrived (published while the client was reconnecting, or the
    /// server cut a slow session, and the server's history no longer held them): re-fetch the
    /// state these pushes would have changed. Reported right after a reconnect when the
    /// server could not replay what was missed (older than its history window): then the
    /// range is everything after the last push delivered up to the resume's seam.
    Missed {
        /// The topic.
        topic: String,
        /// First sequence number not delivered.
        first_missed_seq: u64,
        /// Last sequence number not delivered (the push that follows has this + 1).
        last_missed_seq: u64,
        /// How many of the missed pushes were dropped by this client (stream full).
        dropped_here: u64,
    },
    /// The topic's numbering went back: `received_seq` follows `last_seen_seq`. The server
    /// restarted (or, in cluster mode, the client reconnected to another host), so the old
    /// numbers mean nothing now; re-fetch the topic's state. Also reported as soon as a
    /// resume after a reconnect finds the topic in another epoch (its history is gone, so
    /// what was missed is unknown): then `received_seq` is the seq the next push will carry.
    Reset {
        /// The topic.
        topic: String,
        /// The last sequence number delivered before.
        last_seen_seq: u64,
        /// The sequence number of the push that follows.
        received_seq: u64,
    },
}

impl Gap {
    /// The topic the gap is on.
    pub fn topic(&self) -> &str {
        match self {
            Gap::Missed { topic, .. } | Gap::Reset { topic, .. } => topic,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct TopicSeq {
    /// Subscribed by the user (resubscribed after a reconnect); false for the broadcast topic.
    subscribed: bool,
    /// Last sequence number delivered to the push stream.
    last_seq: Option<u64>,
    /// Pushes dropped (stream full) since the last one delivered.
    dropped_since_delivery: u64,
    /// The epoch `last_seq` belongs to, from the server's SubscribeAck; 0 = not known yet.
    epoch: u64,
    /// The server could not look the topic's resume up (`epoch = 0`) and the resume is asked
    /// again: live pushes until its answer are dropped (their numbering is not known yet; the
    /// answer replays them, or its gap report covers them).
    awaiting_resume: bool,
}

/// The subscribed topics and their sequence state. At most `max_topics` subscribed topics,
/// plus the broadcast topic: pushes on anything else are delivered but not tracked.
#[derive(Debug, Default)]
pub(crate) struct TopicSeqs {
    topics: HashMap<String, TopicSeq>,
    subscribed: usize,
}

impl TopicSeqs {
    /// Subscribed topics.
    pub(crate) fn subscribed_count(&self) -> usize {
        self.subscribed
    }

    /// Marks `names` subscribed; returns those that were not already (to undo on refusal).
    pub(crate) fn subscribe(&mut self, names: &[String]) -> Vec<String> {
        let mut added = Vec::new();
        for name in names {
            let entry = self.topics.entry(name.clone()).or_default();
            if !entry.subscribed {
                entry.subscribed = true;
                self.subscribed += 1;
                added.push(name.clone());
            }
        }
        added
    }

    /// Forgets `names` (unsubscribed, or a subscribe the server refused).
    pub(crate) fn unsubscribe(&mut self, names: &[String]) {
        for name in names {
            if let Some(entry) = self.topics.get(name.as_str()) {
                if entry.subscribed {
                    self.subscribed -= 1;
                    self.topics.remove(name.as_str());
                }
            }
        }
    }

    /// The subscribed topics with the last sequence number delivered on each, sorted by name.
    pub(crate) fn subscriptions(&self) -> Vec<(String, Option<u64>)> {
        let mut list: Vec<_> = self
            .topics
            .iter()
            .filter(|(_, entry)| entry.subscribed)
            .map(|(name, entry)| (name.clone(), entry.last_seq))
            .collect();
        list.sort();
        list
    }

    /// The resume point (epoch, last seq delivered) of each of `names` that is subscribed;
    /// `(0, 0)` where there is none yet.
    pub(crate) fn resume_points(&self, names: &[String]) -> Vec<(String, u64, u64)> {
        names
            .iter()
            .filter_map(|name| {
                let entry = self.topics.get(name.as_str()).filter(|e| e.subscribed)?;
                Some(match (entry.epoch, entry.last_seq) {
                    (epoch, Some(last)) if epoch != 0 => (name.clone(), epoch, last),
                    _ => (name.clone(), 0, 0),
                })
            })
            .collect()
    }

    /// Applies the server's answer to a resume of `topic`: remembers the epoch, and when the
    /// server could not recover, returns what was lost (and moves the base to the seam, so
    /// the live pushes that follow are not reported again). `None` when nothing was lost.
    pub(crate) fn resumed(
        &mut self,
        topic: &str,
        epoch: u64,
        seam_seq: u64,
        recovered: bool,
    ) -> Option<Gap> {
        let entry = self.topics.get_mut(topic).filter(|e| e.subscribed)?;
        if epoch == 0 {
            return None; // the server could not look it up: nothing learned
        }
        entry.awaiting_resume = false;
        let previous_epoch = std::mem::replace(&mut entry.epoch, epoch);
        if recovered && entry.last_seq.is_some() {
            return None; // the missed pushes follow, replayed, then live ones
        }
        let gap = match entry.last_seq {
            None => None,
            Some(last) if previous_epoch == epoch && last < seam_seq => Some(Gap::Missed {
                topic: topic.to_owned(),
                first_missed_seq: last + 1,
                last_missed_seq: seam_seq,
                dropped_here: entry.dropped_since_delivery.min(seam_seq - last),
            }),
            Some(last) if previous_epoch == epoch && last == seam_seq => None,
            Some(last) => Some(Gap::Reset {
                topic: topic.to_owned(),
                last_seen_seq: last,
                received_seq: seam_seq.saturating_add(1),
            }),
        };
        entry.last_seq = Some(seam_seq);
        entry.dropped_since_delivery = 0;
        gap
    }

    /// Sets `topic`'s last delivered seq back to `last_seq` (a gap report that could not be
    /// delivered is then revealed again by the next push).
    pub(crate) fn rebase(&mut self, topic: &str, last_seq: u64) {
        if let Some(entry) = self.topics.get_mut(topic) {
            entry.last_seq = Some(last_seq);
        }
    }

    /// `topic`'s resume is asked again (`waiting`) after an answer with `epoch = 0`, or is not
    /// (the retries ran out). While waiting, its live pushes are dropped ([`Self::awaiting`]).
    pub(crate) fn set_awaiting_resume(&mut self, topic: &str, waiting: bool) {
        if let Some(entry) = self.topics.get_mut(topic) {
            entry.awaiting_resume = waiting;
        }
    }

    /// A new session: every topic is resumed afresh (the server holds a session's pushes until
    /// its resume is answered), so no earlier retry is awaited.
    pub(crate) fn forget_awaited_resumes(&mut self) {
        for entry in self.topics.values_mut() {
            entry.awaiting_resume = false;
        }
    }

    /// True when a push on `topic` arrives while its resume is asked again: it is dropped, not
    /// delivered. Delivered, it would carry numbers of an epoch the client does not know yet;
    /// the resume point sent again (the last push of the known epoch) makes the server replay
    /// it, and the client would get it twice.
    pub(crate) fn awaiting(&self, topic: &str) -> bool {
        self.topics
            .get(topic)
            .is_some_and(|entry| entry.awaiting_resume)
    }

    /// The last sequence number delivered on `topic`.
    pub(crate) fn last_seq(&self, topic: &str) -> Option<u64> {
        self.topics.get(topic).and_then(|entry| entry.last_seq)
    }

    fn tracked(&mut self, topic: &str, seq: u64) -> Option<&mut TopicSeq> {
        if seq == 0 {
            return None; // pushes to a connection or client id are not numbered
        }
        if topic == BROADCAST_TOPIC && !self.topics.contains_key(BROADCAST_TOPIC) {
            self.topics
                .insert(BROADCAST_TOPIC.to_owned(), TopicSeq::default());
        }
        self.topics.get_mut(topic)
    }

    /// The gap a push `(topic, seq)` would reveal if delivered now.
    pub(crate) fn gap_before(&mut self, topic: &str, seq: u64) -> Option<Gap> {
        let entry = *self.tracked(topic, seq)?;
        let last = entry.last_seq?;
        // Checked: the numbers come from the wire, and u64::MAX must not panic.
        if last.checked_add(1) == Some(seq) {
            None
        } else if seq > last {
            let missed = seq - last - 1;
            Some(Gap::Missed {
                topic: topic.to_owned(),
                first_missed_seq: last + 1,
                last_missed_seq: seq - 1,
                dropped_here: entry.dropped_since_delivery.min(missed),
            })
        } else {
            Some(Gap::Reset {
                topic: topic.to_owned(),
                last_seen_seq: last,
                received_seq: seq,
            })
        }
    }

    /// Records that push `(topic, seq)` went into the stream.
    pub(crate) fn delivered(&mut self, topic: &str, seq: u64) {
        if let Some(entry) = self.tracked(topic, seq) {
            entry.last_seq = Some(seq);
            entry.dropped_since_delivery = 0;
        }
    }

    /// Records that push `(topic, seq)` was dropped (stream full).
    pub(crate) fn dropped(&mut self, topic: &str, seq: u64) {
        if let Some(entry) = self.tracked(topic, seq) {
            // The first push of a topic ever dropped leaves no number to measure a gap
            // from; start from the one before it, so the drop is still reported.
            if entry.last_seq.is_none() {
                entry.last_seq = Some(seq - 1);
            }
            entry.dropped_since_delivery += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    fn deliver(seqs: &mut TopicSeqs, topic: &str, seq: u64) -> Option<Gap> {
        let gap = seqs.gap_before(topic, seq);
        seqs.delivered(topic, seq);
        gap
    }

    #[test]
    fn consecutive_pushes_report_nothing_and_the_first_sets_the_base() {
        let mut seqs = TopicSeqs::default();
        seqs.subscribe(&topics(&["news"]));
        for seq in 41..=45 {
            assert_eq!(deliver(&mut seqs, "news", seq), None);
        }
        assert_eq!(seqs.last_seq("news"), Some(45));
    }

    #[test]
    fn a_skip_is_reported_as_missed_with_its_exact_range() {
        let mut seqs = TopicSeqs::default();
        seqs.subscribe(&topics(&["news"]));
        deliver(&mut seqs, "news", 3);
        assert_eq!(
            deliver(&mut seqs, "news", 7),
            Some(Gap::Missed {
                topic: "news".into(),
                first_missed_seq: 4,
                last_missed_seq: 6,
                dropped_here: 0
            })
        );
    }

    #[test]
    fn numbering_going_back_is_a_reset() {
        let mut seqs = TopicSeqs::default();
        seqs.subscribe(&topics(&["news"]));
        deliver(&mut seqs, "news", 9);
        assert_eq!(
            deliver(&mut seqs, "news", 1),
            Some(Gap::Reset {
                topic: "news".into(),
                last_seen_seq: 9,
                received_seq: 1
            })
        );
        assert_eq!(deliver(&mut seqs, "news", 2), None);
    }

    #[test]
    fn local_drops_are_counted_in_the_gap_that_follows() {
        let mut seqs = TopicSeqs::default();
        seqs.subscribe(&topics(&["news"]));
        deliver(&mut seqs, "news", 1);
        seqs.dropped("news", 2);
        seqs.dropped("news", 3);
        // 4 never arrived at all.
        assert_eq!(
            deliver(&mut seqs, "news", 5),
            Some(Gap::Missed {
                topic: "news".into(),
                first_missed_seq: 2,
                last_missed_seq: 4,
                dropped_here: 2
            })
        );
        assert_eq!(deliver(&mut seqs, "news", 6), None, "count starts over");
    }

    #[test]
    fn dropping_the_very_first_push_is_still_reported() {
        let mut seqs = TopicSeqs::default();
        seqs.subscribe(&topics(&["news"]));
        seqs.dropped("news", 10);
        assert!(matches!(
            deliver(&mut seqs, "news", 11),
            Some(Gap::Missed {
                first_missed_seq: 10,
                last_missed_seq: 10,
                dropped_here: 1,
                ..
            })
        ));
    }

    #[test]
    fn numbers_at_the_top_of_the_range_do_not_overflow() {
        let mut seqs = TopicSeqs::default();
        seqs.subscribe(&topics(&["news"]));
        deliver(&mut seqs, "news", u64::MAX - 1);
        assert_eq!(deliver(&mut seqs, "news", u64::MAX), None);
        assert!(matches!(
            deliver(&mut seqs, "news", u64::MAX),
            Some(Gap::Reset { .. })
        ));
        seqs.dropped("news", 1);
        assert!(deliver(&mut seqs, "news", 1).is_some());
    }

    #[test]
    fn broadcasts_are_tracked_and_unnumbered_or_unsubscribed_pushes_are_not() {
        let mut seqs = TopicSeqs::default();
        deliver(&mut seqs, BROADCAST_TOPIC, 1);
        assert!(deliver(&mut seqs, BROADCAST_TOPIC, 3).is_some());
        assert_eq!(deliver(&mut seqs, "", 0), None);
        assert_eq!(deliver(&mut seqs, "", 0), None);
        assert_eq!(deliver(&mut seqs, "other", 5), None);
        assert_eq!(seqs.last_seq("other"), None, "not subscribed: not tracked");
        assert_eq!(
            seqs.subscriptions(),
            vec![],
            "broadcast is never resubscribed"
        );
    }

    #[test]
    fn a_recovered_resume_keeps_the_base_so_replayed_pushes_continue_it() {
        let mut seqs = TopicSeqs::default();
        seqs.subscribe(&topics(&["news"]));
        assert_eq!(seqs.resumed("news", 7, 0, false), None, "first subscribe");
        deliver(&mut seqs, "news", 1);
        deliver(&mut seqs, "news", 2);
        assert_eq!(
            seqs.resume_points(&topics(&["news", "gone"])),
            vec![("news".into(), 7, 2)]
        );
        assert_eq!(seqs.resumed("news", 7, 5, true), None);
        for seq in 3..=6 {
            assert_eq!(deliver(&mut seqs, "news", seq), None, "seq {seq}");
        }
    }

    #[test]
    fn an_unrecovered_resume_reports_the_lost_range_or_a_reset_on_a_new_epoch() {
        let mut seqs = TopicSeqs::default();
        seqs.subscribe(&topics(&["a", "b"]));
        seqs.resumed("a", 7, 0, false);
        seqs.resumed("b", 7, 0, false);
        deliver(&mut seqs, "a", 1);
        deliver(&mut seqs, "b", 1);
        assert_eq!(
            seqs.resumed("a", 7, 90, false),
            Some(Gap::Missed {
                topic: "a".into(),
                first_missed_seq: 2,
                last_missed_seq: 90,
                dropped_here: 0
            })
        );
        assert_eq!(deliver(&mut seqs, "a", 91), None, "live after the seam");
        assert_eq!(
            seqs.resumed("b", 8, 3, false),
            Some(Gap::Reset {
                topic: "b".into(),
                last_seen_seq: 1,
                received_seq: 4
            })
        );
        assert_eq!(
            seqs.resume_points(&topics(&["b"])),
            vec![("b".into(), 8, 3)]
        );
        assert_eq!(
            seqs.resumed("b", 0, 0, false),
            None,
            "epoch 0 teaches nothing"
        );
        assert_eq!(
            seqs.resume_points(&topics(&["b"])),
            vec![("b".into(), 8, 3)]
        );
    }

    #[test]
    fn a_lost_range_not_delivered_is_revealed_again_by_the_next_push() {
        let mut seqs = TopicSeqs::default();
        seqs.subscribe(&topics(&["news"]));
        seqs.resumed("news", 7, 0, false);
        deliver(&mut seqs, "news", 1);
        let Some(Gap::Missed {
            first_missed_seq, ..
        }) = seqs.resumed("news", 7, 9, false)
        else {
            panic!("a lost range")
        };
        seqs.rebase("news", first_missed_seq - 1);
        assert_eq!(
            deliver(&mut seqs, "news", 10),
            Some(Gap::Missed {
                topic: "news".into(),
                first_missed_seq: 2,
                last_missed_seq: 9,
                dropped_here: 0
            })
        );
    }

    #[test]
    fn subscriptions_remember_their_last_seq_and_unsubscribe_forgets() {
        let mut seqs = TopicSeqs::default();
        assert_eq!(seqs.subscribe(&topics(&["b", "a"])), topics(&["b", "a"]));
        assert_eq!(seqs.subscribe(&topics(&["a", "c"])), topics(&["c"]));
        deliver(&mut seqs, "a", 4);
        assert_eq!(
            seqs.subscriptions(),
            vec![
                ("a".into(), Some(4)),
                ("b".into(), None),
                ("c".into(), None)
            ]
        );
        seqs.unsubscribe(&topics(&["a", "zzz"]));
        assert_eq!(seqs.subscribed_count(), 2);
        assert_eq!(seqs.last_seq("a"), None);
    }
}
