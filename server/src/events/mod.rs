//! Events in: Event frames go into a bounded pipeline per shard (a flume channel of
//! `event_pipeline_capacity`) to one processing thread behind the [`Processor`] trait. When a
//! shard's pipeline is full, `event_overflow_policy` decides: `drop` (drop the newest, count it,
//! and tell the client with an Error if it asked for an Ack) or `backpressure` (park the event
//! and stop reading from that connection until there is room; the kernel's receive window then
//! slows the client). An Ack is sent only once the event is in the pipeline. On drain the
//! processor consumes everything still queued before the process exits.

pub mod sink;
pub mod trending;

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::conn::ConnId;
use crate::push::{owner_shard, Publish, Target, BROADCAST_TOPIC};
use crate::shard::ShardMsg;

/// Events parked per shard under the backpressure policy before further events are refused.
pub const EVENTS_PARKED_MAX: usize = 65_536;
/// How long the processor waits to hand a publish to a shard's inbox.
pub const PROCESSOR_PUBLISH_TIMEOUT_MS: u64 = 1_000;

/// What to do with an event when the shard's pipeline is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverflowPolicy {
    Drop,
    Backpressure,
}

/// An event accepted from a session, owned (its bytes copied out of the receive buffer).
#[derive(Clone, Debug)]
pub struct OwnedEvent {
    pub conn: ConnId,
    pub topic: Box<str>,
    pub payload: Bytes,
    pub received_at: Instant,
}

/// A processing stage. Runs on the processor thread, never on a shard.
pub trait Processor: Send {
    /// Takes one event.
    fn process(&mut self, event: OwnedEvent);
    /// Called every `tick_interval()`; may publish.
    fn tick(&mut self, now: Instant, publish: &mut dyn FnMut(Target, Bytes));
    fn tick_interval(&self) -> Duration;
}

/// Runs `processor` over every shard's pipeline until all shards have dropped their senders
/// and every queued event is processed. Returns the number of events processed.
pub fn run_processor(
    pipelines: Vec<flume::Receiver<OwnedEvent>>,
    mut processor: Box<dyn Processor>,
    inboxes: Vec<flume::Sender<ShardMsg>>,
) -> u64 {
    let mut processed = 0u64;
    let mut open = pipelines;
    let mut next_tick = Instant::now() + processor.tick_interval();
    let mut publish = |target: Target, payload: Bytes| {
        let key = match &target {
            Target::Topic(topic) => topic.as_str(),
            Target::Broadcast => BROADCAST_TOPIC,
            Target::Client(client) => client.as_str(),
            Target::Conn(_) => BROADCAST_TOPIC,
        };
        let shard = match &target {
            Target::Conn(id) => id.shard(),
            _ => owner_shard(key, inboxes.len()),
        };
        let message = ShardMsg::Publish(Publish {
            target,
            payload,
            reply: None,
        });
        if inboxes[shard]
            .send_timeout(message, Duration::from_millis(PROCESSOR_PUBLISH_TIMEOUT_MS))
            .is_err()
        {
            tracing::warn!(
                shard,
                "processor could not publish: shard inbox full or gone"
            );
        }
    };
    while !open.is_empty() {
        let wait = next_tick.saturating_duration_since(Instant::now());
        let mut selector = flume::Selector::new();
        for (i, pipeline) in open.iter().enumerate() {
            selector = selector.recv(pipeline, move |result| (i, result.ok()));
        }
        match selector.wait_timeout(wait) {
            Ok((_, Some(event))) => {
                processor.process(event);
                processed += 1;
            }
            Ok((i, None)) => {
                // That shard is gone and its pipeline is empty.
                open.swap_remove(i);
            }
            Err(_) => {}
        }
        let now = Instant::now();
        if now >= next_tick {
            processor.tick(now, &mut publish);
            next_tick = now + processor.tick_interval();
        }
    }
    processed
}
