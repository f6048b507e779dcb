//! Events in: Event frames go into a bounded pipeline per shard (a flume channel of
//! `event_pipeline_capacity`) to one processing thread behind the [`Processor`] trait. When a
//! shard's pipeline is full, `event_overflow_policy` decides: `drop` (drop the newest, count it,
//! and tell the client with an Error if it asked for an Ack) or `backpressure` (park the event,
//! hold the rest of what was read undecoded, and stop reading from that connection until the
//! event is taken; the kernel's receive window then slows the client). An Ack is sent only
//! once the event is in the pipeline. On drain the processor consumes everything still queued
//! before the process exits.

pub mod sink;
pub mod trending;

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::conn::ConnId;
use crate::mesh::{Mesh, ShardMsg};
use crate::mesh::{Publish, Target};

/// Events the processor takes from one shard's pipeline before turning to the next.
pub const PROCESSOR_BATCH_MAX_EVENTS: usize = 1_024;
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
    mesh: Mesh,
) -> u64 {
    let mut processed = 0u64;
    // (shard index, pipeline): a pipeline leaves the list when its shard is gone.
    let mut open: Vec<(usize, flume::Receiver<OwnedEvent>)> =
        pipelines.into_iter().enumerate().collect();
    let mut next_tick = Instant::now() + processor.tick_interval();
    let mut publish = |target: Target, payload: Bytes| {
        let shard = target.owner_shard(mesh.shards());
        let message = ShardMsg::Publish(Publish {
            target,
            payload,
            msg_id: None,
            reply: None,
        });
        if mesh
            .send_timeout(
                shard,
                message,
                Duration::from_millis(PROCESSOR_PUBLISH_TIMEOUT_MS),
            )
            .is_err()
        {
            tracing::warn!(
                shard,
                "processor could not publish: shard inbox full or gone"
            );
        }
    };
    while !open.is_empty() {
        // Take what is queued without blocking, up to a batch per pipeline per pass so every
        // shard is served in turn and the tick is never late by more than a few batches.
        // Blocking goes through a Selector, which costs a syscall to build (flume seeds its
        // fairness RNG from getrandom): once per idle moment, not once per event.
        let mut drained = 0usize;
        let mut i = 0;
        while i < open.len() {
            let (shard, pipeline) = &open[i];
            // A full pipeline may have parked events behind it (backpressure policy).
            let was_full = pipeline.is_full();
            let mut taken = 0;
            let disconnected = loop {
                if taken == PROCESSOR_BATCH_MAX_EVENTS {
                    break false;
                }
                match pipeline.try_recv() {
                    Ok(event) => {
                        processor.process(event);
                        taken += 1;
                    }
                    Err(flume::TryRecvError::Empty) => break false,
                    // That shard is gone and its pipeline is empty.
                    Err(flume::TryRecvError::Disconnected) => break true,
                }
            };
            drained += taken;
            if was_full && taken > 0 {
                tell_events_taken(&mesh, *shard);
            }
            if disconnected {
                open.swap_remove(i);
            } else {
                i += 1;
            }
        }
        processed += drained as u64;
        if drained == 0 && !open.is_empty() {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let mut selector = flume::Selector::new();
            for (i, (_, pipeline)) in open.iter().enumerate() {
                selector = selector.recv(pipeline, move |result| (i, result.ok()));
            }
            match selector.wait_timeout(wait) {
                Ok((i, Some(event))) => {
                    let (shard, pipeline) = &open[i];
                    // Full until this one was taken: the shard may have parked events.
                    if pipeline.len() + 1 >= pipeline.capacity().unwrap_or(usize::MAX) {
                        tell_events_taken(&mesh, *shard);
                    }
                    processor.process(event);
                    processed += 1;
                }
                Ok((i, None)) => {
                    open.swap_remove(i);
                }
                Err(_) => {}
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            processor.tick(now, &mut publish);
            next_tick = now + processor.tick_interval();
        }
    }
    processed
}

/// Tells a shard that its full pipeline has room again, so parked events move now rather
/// than at its next tick. Best effort: a full inbox means the shard turns soon anyway.
fn tell_events_taken(mesh: &Mesh, shard: usize) {
    let _ = mesh.try_send(shard, ShardMsg::EventsTaken);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records which pipeline each event came from (its topic) and counts ticks.
    struct Record {
        seen: std::sync::Arc<std::sync::Mutex<Vec<Box<str>>>>,
    }

    impl Processor for Record {
        fn process(&mut self, event: OwnedEvent) {
            self.seen.lock().unwrap().push(event.topic);
        }
        fn tick(&mut self, _now: Instant, _publish: &mut dyn FnMut(Target, Bytes)) {}
        fn tick_interval(&self) -> Duration {
            Duration::from_millis(10)
        }
    }

    fn event(topic: &str) -> OwnedEvent {
        OwnedEvent {
            conn: ConnId::new(0, 0, 0),
            topic: topic.into(),
            payload: Bytes::new(),
            received_at: Instant::now(),
        }
    }

    #[test]
    fn processor_takes_every_event_of_every_pipeline_serving_them_in_turn() {
        const PER_PIPELINE: usize = 3 * PROCESSOR_BATCH_MAX_EVENTS;
        let (a_tx, a_rx) = flume::bounded(PER_PIPELINE);
        let (b_tx, b_rx) = flume::bounded(PER_PIPELINE);
        for _ in 0..PER_PIPELINE {
            a_tx.send(event("a")).unwrap();
            b_tx.send(event("b")).unwrap();
        }
        drop((a_tx, b_tx));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let processor = Box::new(Record { seen: seen.clone() });
        let processed = run_processor(
            vec![a_rx, b_rx],
            processor,
            Mesh::from_inboxes(Vec::new()).unwrap(),
        );
        assert_eq!(processed, 2 * PER_PIPELINE as u64);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2 * PER_PIPELINE);
        // Served in turn: no pipeline waits for the other to empty.
        let first_b = seen.iter().position(|t| &**t == "b").unwrap();
        assert_eq!(first_b, PROCESSOR_BATCH_MAX_EVENTS);
        assert_eq!(&*seen[2 * PROCESSOR_BATCH_MAX_EVENTS], "a");
    }

    #[test]
    fn processor_tells_a_shard_only_when_it_takes_from_that_shards_full_pipeline() {
        let (full_tx, full_rx) = flume::bounded(1);
        let (roomy_tx, roomy_rx) = flume::bounded(4);
        full_tx.send(event("full")).unwrap();
        roomy_tx.send(event("roomy")).unwrap();
        drop((full_tx, roomy_tx));
        let (inbox0_tx, inbox0_rx) = flume::bounded(8);
        let (inbox1_tx, inbox1_rx) = flume::bounded(8);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let processor = Box::new(Record { seen: seen.clone() });
        let processed = run_processor(
            vec![full_rx, roomy_rx],
            processor,
            Mesh::from_inboxes(vec![inbox0_tx, inbox1_tx]).unwrap(),
        );
        assert_eq!(processed, 2);
        assert!(matches!(inbox0_rx.try_recv(), Ok(ShardMsg::EventsTaken)));
        assert!(inbox0_rx.try_recv().is_err(), "one message per batch");
        assert!(
            inbox1_rx.try_recv().is_err(),
            "that pipeline was never full"
        );
    }
}
