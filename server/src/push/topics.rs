//! One shard's topic index: topic -> local subscribers, and each subscribed connection's
//! topics (for cleanup on close). Connections with no subscription cost nothing here.

use crate::conn::ConnKey;
use std::collections::HashMap;
use std::sync::Arc;

/// Why a subscribe was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SubscribeError {
    TooManyTopics,
}

#[derive(Default)]
pub(crate) struct TopicIndex {
    subscribers: HashMap<Arc<str>, Vec<ConnKey>>,
    by_slot: HashMap<u32, (u32, Vec<Arc<str>>)>,
    /// Cluster mode: topics that gained their first (`true`) or lost their last local
    /// subscriber since the last [`TopicIndex::take_changes`]; `None` = not tracked.
    changes: Option<Vec<(Arc<str>, bool)>>,
}

impl TopicIndex {
    /// Adds `conn` to `topic`'s subscribers (idempotent).
    pub(crate) fn subscribe(
        &mut self,
        conn: ConnKey,
        topic: &str,
        max_topics_per_session: usize,
    ) -> Result<(), SubscribeError> {
        let (generation, topics) = self
            .by_slot
            .entry(conn.slot)
            .or_insert_with(|| (conn.generation, Vec::new()));
        assert_eq!(
            *generation, conn.generation,
            "a closed connection's topics were removed"
        );
        if topics.iter().any(|t| &**t == topic) {
            return Ok(());
        }
        if topics.len() >= max_topics_per_session {
            return Err(SubscribeError::TooManyTopics);
        }
        let name: Arc<str> = match self.subscribers.get_key_value(topic) {
            Some((name, _)) => name.clone(),
            None => {
                let name: Arc<str> = Arc::from(topic);
                if let Some(changes) = &mut self.changes {
                    changes.push((name.clone(), true));
                }
                name
            }
        };
        topics.push(name.clone());
        self.subscribers.entry(name).or_default().push(conn);
        Ok(())
    }

    /// Adds `conn` to every topic in `topics`, or to none: if the new ones would take the
    /// session past `max_topics_per_session`, nothing changes.
    pub(crate) fn subscribe_all(
        &mut self,
        conn: ConnKey,
        topics: &[&str],
        max_topics_per_session: usize,
    ) -> Result<(), SubscribeError> {
        let held: &[Arc<str>] = match self.by_slot.get(&conn.slot) {
            Some((generation, held)) => {
                assert_eq!(
                    *generation, conn.generation,
                    "a closed connection's topics were removed"
                );
                held
            }
            None => &[],
        };
        let mut new_topics = 0;
        for (i, topic) in topics.iter().enumerate() {
            let repeated = topics[..i].contains(topic);
            if !repeated && !held.iter().any(|t| &**t == *topic) {
                new_topics += 1;
            }
        }
        if held.len() + new_topics > max_topics_per_session {
            return Err(SubscribeError::TooManyTopics);
        }
        for topic in topics {
            self.subscribe(conn, topic, max_topics_per_session)
                .expect("room was checked for every new topic");
        }
        Ok(())
    }

    /// Whether `conn` is subscribed to `topic` now.
    pub(crate) fn is_subscribed(&self, conn: ConnKey, topic: &str) -> bool {
        self.by_slot
            .get(&conn.slot)
            .is_some_and(|(generation, topics)| {
                *generation == conn.generation && topics.iter().any(|t| &**t == topic)
            })
    }

    /// Removes `conn` from `topic` (no-op if it was not subscribed).
    pub(crate) fn unsubscribe(&mut self, conn: ConnKey, topic: &str) {
        if let Some((_, topics)) = self.by_slot.get_mut(&conn.slot) {
            topics.retain(|t| &**t != topic);
        }
        self.remove_subscriber(topic, conn);
    }

    /// Drops every subscription of a closing connection.
    pub(crate) fn remove_conn(&mut self, conn: ConnKey) {
        let Some((generation, topics)) = self.by_slot.remove(&conn.slot) else {
            return;
        };
        debug_assert_eq!(generation, conn.generation);
        for topic in topics {
            self.remove_subscriber(&topic, conn);
        }
    }

    fn remove_subscriber(&mut self, topic: &str, conn: ConnKey) {
        let Some(subscribers) = self.subscribers.get_mut(topic) else {
            return;
        };
        if let Some(at) = subscribers.iter().position(|s| *s == conn) {
            subscribers.swap_remove(at);
        }
        if subscribers.is_empty() {
            if let Some((name, _)) = self.subscribers.remove_entry(topic) {
                if let Some(changes) = &mut self.changes {
                    changes.push((name, false));
                }
            }
        }
    }

    /// Starts recording first-subscriber / last-subscriber changes (cluster mode).
    pub(crate) fn track_changes(&mut self) {
        self.changes.get_or_insert_with(Vec::new);
    }

    /// The changes recorded since the last call, oldest first.
    pub(crate) fn take_changes(&mut self) -> Vec<(Arc<str>, bool)> {
        self.changes
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The local subscribers of `topic`.
    pub(crate) fn subscribers(&self, topic: &str) -> &[ConnKey] {
        self.subscribers.get(topic).map_or(&[], Vec::as_slice)
    }

    /// Topics with at least one local subscriber.
    #[cfg(test)]
    pub(crate) fn topic_count(&self) -> usize {
        self.subscribers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(slot: u32) -> ConnKey {
        ConnKey {
            slot,
            generation: 1,
        }
    }

    #[test]
    fn subscribe_unsubscribe_and_close_keep_both_sides_in_step() {
        let mut index = TopicIndex::default();
        index.subscribe(conn(1), "a", 4).unwrap();
        index.subscribe(conn(1), "a", 4).unwrap();
        index.subscribe(conn(2), "a", 4).unwrap();
        index.subscribe(conn(1), "b", 4).unwrap();
        assert_eq!(
            index.subscribers("a").len(),
            2,
            "subscribing twice is one subscription"
        );
        index.unsubscribe(conn(2), "a");
        assert_eq!(index.subscribers("a"), &[conn(1)]);
        index.remove_conn(conn(1));
        assert!(index.subscribers("a").is_empty() && index.subscribers("b").is_empty());
        assert_eq!(index.topic_count(), 0);
    }

    #[test]
    fn first_and_last_subscriber_changes_are_recorded_when_tracked() {
        let mut index = TopicIndex::default();
        index.subscribe(conn(1), "a", 4).unwrap();
        assert!(index.take_changes().is_empty(), "untracked by default");
        index.track_changes();
        index.subscribe(conn(2), "a", 4).unwrap();
        index.subscribe(conn(2), "b", 4).unwrap();
        index.unsubscribe(conn(1), "a");
        index.remove_conn(conn(2));
        let changes: Vec<(String, bool)> = index
            .take_changes()
            .into_iter()
            .map(|(t, on)| (t.to_string(), on))
            .collect();
        assert_eq!(
            changes,
            [
                ("b".to_owned(), true),
                ("a".to_owned(), false),
                ("b".to_owned(), false)
            ]
        );
        assert!(index.take_changes().is_empty());
    }

    #[test]
    fn topics_per_session_are_bounded() {
        let mut index = TopicIndex::default();
        index.subscribe(conn(1), "a", 1).unwrap();
        assert_eq!(
            index.subscribe(conn(1), "b", 1),
            Err(SubscribeError::TooManyTopics)
        );
    }
}
