//! The shard's end of its event pipeline: the bounded sender, the overflow policy, and events
//! parked under backpressure (in arrival order, per connection order kept).

use std::collections::{HashMap, VecDeque};

use super::{OverflowPolicy, OwnedEvent};
use crate::conn::ConnId;

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
    /// Parked events per connection, by full id (a slot's next tenant is another connection).
    parked_per_conn: HashMap<ConnId, u32>,
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
            parked_per_conn: HashMap::new(),
        }
    }

    /// Offers an event. A connection with parked events parks every later one too, so its
    /// events reach the processor in order.
    pub fn offer(&mut self, event: OwnedEvent, ack_id: Option<u64>) -> Offer {
        if self.parked_per_conn.contains_key(&event.conn) {
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
        *self.parked_per_conn.entry(event.conn).or_default() += 1;
        self.parked.push_back(Parked { event, ack_id });
        Offer::Parked
    }

    /// Moves parked events into the pipeline while it has room. `on_moved(conn, ack_id, last)`
    /// is called for each, with `last` true when it was its connection's last parked event.
    pub fn unpark(&mut self, mut on_moved: impl FnMut(ConnId, Option<u64>, bool)) {
        while let Some(Parked { event, ack_id }) = self.parked.pop_front() {
            let conn = event.conn;
            if let Err(refused) = self.sender.try_send(event) {
                let event = refused.into_inner();
                self.parked.push_front(Parked { event, ack_id });
                return;
            }
            let left = self
                .parked_per_conn
                .get_mut(&conn)
                .expect("counted when parked");
            *left -= 1;
            let last = *left == 0;
            if last {
                self.parked_per_conn.remove(&conn);
            }
            on_moved(conn, ack_id, last);
        }
    }

    /// Whether `conn` has events parked.
    pub fn has_parked(&self, conn: ConnId) -> bool {
        self.parked_per_conn.contains_key(&conn)
    }

    /// Drops the parked events of a connection that closed: they were never acked, so they
    /// are dropped, not accepted, and nobody waits behind them. Returns how many.
    pub fn drop_conn(&mut self, conn: ConnId) -> u32 {
        let Some(count) = self.parked_per_conn.remove(&conn) else {
            return 0;
        };
        self.parked.retain(|parked| parked.event.conn != conn);
        count
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(conn: ConnId) -> OwnedEvent {
        OwnedEvent {
            conn,
            topic: "t".into(),
            payload: bytes::Bytes::new(),
            received_at: std::time::Instant::now(),
        }
    }

    /// A closed connection's parked events are dropped, not accepted later, and the next
    /// connection in its slot is not parked behind them.
    #[test]
    fn a_closed_connections_parked_events_are_dropped_and_its_slot_successor_is_not_held() {
        let (sender, receiver) = flume::bounded(1);
        let mut sink = EventSink::new(sender, OverflowPolicy::Backpressure, 8);
        let dead = ConnId::new(0, 5, 1);
        let next_tenant = ConnId::new(0, 5, 2);
        assert_eq!(sink.offer(event(dead), Some(1)), Offer::Accepted);
        assert_eq!(sink.offer(event(dead), Some(2)), Offer::Parked);
        assert_eq!(sink.offer(event(dead), Some(3)), Offer::Parked);
        assert_eq!(sink.drop_conn(dead), 2);
        assert_eq!(sink.parked_len(), 0);
        receiver.try_recv().unwrap();
        assert_eq!(
            sink.offer(event(next_tenant), Some(4)),
            Offer::Accepted,
            "the slot's next connection waits behind nobody"
        );
        let mut moved = Vec::new();
        sink.unpark(|conn, ack_id, last| moved.push((conn, ack_id, last)));
        assert!(
            moved.is_empty(),
            "nothing of the dead connection is accepted"
        );
    }

    #[test]
    fn parked_events_move_in_order_and_the_last_one_says_so() {
        let (sender, receiver) = flume::bounded(1);
        let mut sink = EventSink::new(sender, OverflowPolicy::Backpressure, 8);
        let conn = ConnId::new(0, 1, 1);
        assert_eq!(sink.offer(event(conn), None), Offer::Accepted);
        assert_eq!(sink.offer(event(conn), Some(2)), Offer::Parked);
        assert_eq!(sink.offer(event(conn), Some(3)), Offer::Parked);
        let mut moved = Vec::new();
        receiver.try_recv().unwrap();
        sink.unpark(|conn, ack_id, last| moved.push((conn, ack_id, last)));
        receiver.try_recv().unwrap();
        sink.unpark(|conn, ack_id, last| moved.push((conn, ack_id, last)));
        assert_eq!(moved, vec![(conn, Some(2), false), (conn, Some(3), true)]);
    }
}
