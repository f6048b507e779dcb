//! The shard's end of its event pipeline: the bounded sender, the overflow policy, and events
//! parked under backpressure (in arrival order, per connection order kept).

use std::collections::{HashMap, VecDeque};

use super::{OverflowPolicy, OwnedEvent};

/// An event waiting for room in the pipeline; `ack_id` is set if the client asked for an Ack.
#[derive(Debug)]
pub struct Parked {
    pub event: OwnedEvent,
    pub ack_id: Option<u64>,
}

/// What happened to an event offered to the pipeline.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// In the pipeline: Ack now if asked.
    Accepted,
    /// Dropped by the `drop` policy (counted): tell the client if it asked for an Ack.
    Dropped,
    /// Parked by the `backpressure` policy: stop reading from this connection.
    Parked,
    /// Refused: the parking area is full, or the processor is gone (shutting down).
    Refused,
}

pub struct EventSink {
    sender: flume::Sender<OwnedEvent>,
    policy: OverflowPolicy,
    /// Events parked at most (event_parked_max); more are refused.
    parked_max: usize,
    parked: VecDeque<Parked>,
    parked_per_slot: HashMap<u32, u32>,
}

impl EventSink {
    pub fn new(
        sender: flume::Sender<OwnedEvent>,
        policy: OverflowPolicy,
        parked_max: usize,
    ) -> EventSink {
        assert!(parked_max > 0, "validated by Config");
        EventSink {
            sender,
            policy,
            parked_max,
            parked: VecDeque::new(),
            parked_per_slot: HashMap::new(),
        }
    }

    /// Offers an event. A connection with parked events parks every later one too, so its
    /// events reach the processor in order.
    pub fn offer(&mut self, event: OwnedEvent, ack_id: Option<u64>) -> Offer {
        let slot = event.conn.slot();
        if self.parked_per_slot.contains_key(&slot) {
            return self.park(event, ack_id);
        }
        match self.sender.try_send(event) {
            Ok(()) => Offer::Accepted,
            Err(flume::TrySendError::Full(event)) => match self.policy {
                OverflowPolicy::Drop => Offer::Dropped,
                OverflowPolicy::Backpressure => self.park(event, ack_id),
            },
            Err(flume::TrySendError::Disconnected(_)) => Offer::Refused,
        }
    }

    fn park(&mut self, event: OwnedEvent, ack_id: Option<u64>) -> Offer {
        if self.parked.len() >= self.parked_max {
            return Offer::Refused;
        }
        *self.parked_per_slot.entry(event.conn.slot()).or_default() += 1;
        self.parked.push_back(Parked { event, ack_id });
        Offer::Parked
    }

    /// Moves parked events into the pipeline while it has room. `on_moved(parked, last)` is
    /// called for each, with `last` true when it was its connection's last parked event.
    pub fn unpark(&mut self, mut on_moved: impl FnMut(&Parked, bool)) {
        while !self.parked.is_empty() {
            if self.sender.is_full() {
                return;
            }
            let parked = self.parked.pop_front().expect("not empty");
            let slot = parked.event.conn.slot();
            if self.sender.try_send(parked.event.clone()).is_err() {
                self.parked.push_front(parked);
                return;
            }
            let left = self
                .parked_per_slot
                .get_mut(&slot)
                .expect("counted when parked");
            *left -= 1;
            let last = *left == 0;
            if last {
                self.parked_per_slot.remove(&slot);
            }
            on_moved(&parked, last);
        }
    }

    pub fn parked_len(&self) -> usize {
        self.parked.len()
    }

    /// Stops feeding the processor: the shard is done, so the processor can finish.
    pub fn close(&mut self) {
        let (closed, _) = flume::bounded(1);
        self.sender = closed;
    }
}
