//! The per-connection outbound queue: frames are encoded straight into `queued`; one send is in
//! flight at a time and carries everything queued when it started (coalescing). The bytes of a
//! send belong to the ring until it completes. The queue is bounded by `max_outbound_bytes`
//! (queued + in flight); a connection that would exceed it is a slow consumer.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

/// Queues kept in a shard's pool for reuse (each keeps its allocation).
pub const OUTBOUND_POOL_MAX_ITEMS: usize = 1024;
/// A pooled queue's buffer is shrunk to this on return so the pool stays small.
pub const OUTBOUND_POOL_KEEP_BYTES: usize = 16 * 1024;

#[derive(Debug, Default)]
pub struct Outbound {
    /// Frames waiting for the next send.
    pub queued: BytesMut,
    /// Bytes handed to the ring and not yet completed.
    pub in_flight_bytes: usize,
    /// When the oldest frame in `queued` was received (for the reply latency histogram).
    pub queued_since: Option<Instant>,
    /// `queued_since` of the batch in flight.
    pub in_flight_since: Option<Instant>,
}

impl Outbound {
    pub fn total_bytes(&self) -> usize {
        self.queued.len() + self.in_flight_bytes
    }

    pub fn is_idle(&self) -> bool {
        self.queued.is_empty() && self.in_flight_bytes == 0
    }

    /// Takes everything queued as one send batch.
    pub fn take_batch(&mut self) -> Option<Bytes> {
        if self.queued.is_empty() || self.in_flight_bytes != 0 {
            return None;
        }
        let batch = self.queued.split().freeze();
        self.in_flight_bytes = batch.len();
        self.in_flight_since = self.queued_since.take();
        Some(batch)
    }

    /// Records a send completion of `sent_bytes` out of `batch`; returns the unsent rest, if
    /// the kernel took only part of it.
    pub fn complete(&mut self, mut batch: Bytes, sent_bytes: usize) -> Option<Bytes> {
        assert_eq!(batch.len(), self.in_flight_bytes);
        assert!(sent_bytes <= batch.len());
        self.in_flight_bytes -= sent_bytes;
        if sent_bytes == batch.len() {
            return None;
        }
        let rest = batch.split_off(sent_bytes);
        Some(rest)
    }
}

/// A shard's pool of idle outbound queues.
#[derive(Default)]
pub struct OutboundPool {
    // Boxed on purpose: a queue moves between this pool and a connection slot, where
    // `Option<Box<Outbound>>` keeps the slot at 32 bytes.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<Outbound>>,
}

impl OutboundPool {
    pub fn take(&mut self) -> Box<Outbound> {
        self.idle.pop().unwrap_or_default()
    }

    /// Returns an idle queue; drops it when the pool is full.
    pub fn give(&mut self, mut outbound: Box<Outbound>) {
        debug_assert!(outbound.is_idle());
        if self.idle.len() < OUTBOUND_POOL_MAX_ITEMS {
            outbound.queued.clear();
            outbound.queued_since = None;
            outbound.in_flight_since = None;
            if outbound.queued.capacity() > OUTBOUND_POOL_KEEP_BYTES {
                outbound.queued = BytesMut::new();
            }
            self.idle.push(outbound);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_coalesces_everything_queued_and_partial_send_returns_rest() {
        let mut out = Outbound::default();
        out.queued.extend_from_slice(b"abc");
        out.queued.extend_from_slice(b"defg");
        let batch = out.take_batch().unwrap();
        assert_eq!(&batch[..], b"abcdefg");
        assert!(out.take_batch().is_none(), "one send in flight");
        let rest = out.complete(batch, 3).unwrap();
        assert_eq!(&rest[..], b"defg");
        assert_eq!(out.total_bytes(), 4);
    }
}
