//! The built-in processor: counts events per item (the Event's topic names the item) over a
//! sliding window of one-second buckets and, every interval, publishes the top K items as JSON
//! to a topic. Bounded: at most `TRENDING_ITEMS_MAX` distinct items per bucket.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{OwnedEvent, Processor};
use crate::mesh::Target;

/// Distinct items counted per one-second bucket; more are counted as `overflow`.
pub const TRENDING_ITEMS_MAX: usize = 100_000;

pub struct Trending {
    topic: String,
    window_buckets: usize,
    interval: Duration,
    top_k: usize,
    buckets: VecDeque<HashMap<Box<str>, u64>>,
    bucket_started: Instant,
    overflow: u64,
}

impl Trending {
    pub fn new(topic: String, window_s: u64, interval: Duration, top_k: usize) -> Trending {
        assert!(window_s > 0 && top_k > 0);
        let mut buckets = VecDeque::new();
        buckets.push_back(HashMap::new());
        Trending {
            topic,
            window_buckets: window_s as usize,
            interval,
            top_k,
            buckets,
            bucket_started: Instant::now(),
            overflow: 0,
        }
    }

    fn rotate(&mut self, now: Instant) {
        while now.duration_since(self.bucket_started) >= Duration::from_secs(1) {
            self.bucket_started += Duration::from_secs(1);
            self.buckets.push_back(HashMap::new());
            if self.buckets.len() > self.window_buckets {
                self.buckets.pop_front();
            }
        }
    }

    /// The top items over the window, most frequent first (ties by name).
    pub fn top(&self) -> Vec<(Box<str>, u64)> {
        let mut totals: HashMap<&str, u64> = HashMap::new();
        for bucket in &self.buckets {
            for (item, count) in bucket {
                *totals.entry(item).or_default() += count;
            }
        }
        let mut ranked: Vec<(Box<str>, u64)> =
            totals.into_iter().map(|(k, v)| (k.into(), v)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(self.top_k);
        ranked
    }
}

impl Processor for Trending {
    fn process(&mut self, event: OwnedEvent) {
        self.rotate(Instant::now());
        let bucket = self.buckets.back_mut().expect("one bucket at least");
        if let Some(count) = bucket.get_mut(&event.topic) {
            *count += 1;
        } else if bucket.len() < TRENDING_ITEMS_MAX {
            bucket.insert(event.topic, 1);
        } else {
            self.overflow += 1;
        }
    }

    fn tick(&mut self, now: Instant, publish: &mut dyn FnMut(Target, Bytes)) {
        self.rotate(now);
        let top = self.top();
        if top.is_empty() {
            return;
        }
        let items: Vec<serde_json::Value> = top
            .iter()
            .map(|(item, count)| serde_json::json!({"item": &**item, "count": count}))
            .collect();
        let body = serde_json::json!({"window_s": self.window_buckets, "top": items, "overflow": self.overflow});
        publish(
            Target::Topic(self.topic.clone()),
            Bytes::from(body.to_string()),
        );
    }

    fn tick_interval(&self) -> Duration {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::ConnId;

    fn event(item: &str) -> OwnedEvent {
        OwnedEvent {
            conn: ConnId(0),
            topic: item.into(),
            payload: Bytes::new(),
            received_at: Instant::now(),
        }
    }

    #[test]
    fn top_k_ranks_by_count_and_publishes_to_its_topic() {
        let mut trending = Trending::new("trending".into(), 60, Duration::from_millis(100), 2);
        for item in ["a", "b", "b", "c", "c", "c"] {
            trending.process(event(item));
        }
        assert_eq!(trending.top(), vec![("c".into(), 3), ("b".into(), 2)]);
        let mut published = Vec::new();
        trending.tick(Instant::now(), &mut |target, payload| {
            published.push((target, payload))
        });
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].0, Target::Topic("trending".into()));
        let json: serde_json::Value = serde_json::from_slice(&published[0].1).unwrap();
        assert_eq!(json["top"][0]["item"], "c");
    }

    #[test]
    fn counts_leave_the_window() {
        let mut trending = Trending::new("t".into(), 2, Duration::from_secs(1), 5);
        trending.process(event("old"));
        let later = trending.bucket_started + Duration::from_secs(3);
        trending.rotate(later);
        assert!(trending.top().is_empty());
    }
}
