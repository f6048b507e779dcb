//! The per-connection outbound queue. Frames the session encodes go straight into the open
//! tail `queued`; a frame shared with other connections (a pushed frame, encoded once per
//! publish) is queued by reference as its own chunk, in order. One send is in flight at a time
//! and carries everything queued when it started: a lone shared chunk goes to the kernel as is
//! (no copy: every subscriber's send points at the same bytes); several pieces are coalesced
//! into one buffer (one copy, only when frames wait behind a send in flight). The bytes of a
//! send belong to the ring until it completes. The queue is bounded by `max_outbound_bytes`
//! (queued + in flight); a connection that would exceed it is a slow consumer.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

/// Queues kept in a shard's pool for reuse (each keeps its allocation).
pub(crate) const OUTBOUND_POOL_MAX_ITEMS: usize = 1024;
/// A pooled queue's buffer is shrunk to this on return so the pool stays small.
pub(crate) const OUTBOUND_POOL_KEEP_BYTES: usize = 16 * 1024;

#[derive(Debug, Default)]
pub struct Outbound {
    /// Frozen pieces waiting for the next send, in order, all before `queued`: shared frames,
    /// and the tail as it was when a shared frame was queued after it.
    chunks: VecDeque<Bytes>,
    /// Bytes in `chunks`.
    chunk_bytes: usize,
    /// The open tail: frames encoded for this connection only, after every chunk.
    pub queued: BytesMut,
    /// Bytes handed to the ring and not yet completed.
    pub in_flight_bytes: usize,
    /// When the oldest frame queued was received (for the reply latency histogram).
    pub queued_since: Option<Instant>,
    /// `queued_since` of the batch in flight.
    pub in_flight_since: Option<Instant>,
}

impl Outbound {
    pub fn total_bytes(&self) -> usize {
        self.chunk_bytes + self.queued.len() + self.in_flight_bytes
    }

    pub fn is_idle(&self) -> bool {
        self.chunks.is_empty() && self.queued.is_empty() && self.in_flight_bytes == 0
    }

    /// Queues a frame shared by reference (a clone of the caller's `Bytes`, no copy), after
    /// everything queued so far.
    pub fn push_shared(&mut self, frame: Bytes) {
        if frame.is_empty() {
            return;
        }
        if !self.queued.is_empty() {
            let tail = self.queued.split().freeze();
            self.chunk_bytes += tail.len();
            self.chunks.push_back(tail);
        }
        self.chunk_bytes += frame.len();
        self.chunks.push_back(frame);
    }

    /// Drops everything queued but not yet handed to the kernel (a slow consumer's backlog).
    pub fn discard_queued(&mut self) {
        self.chunks.clear();
        self.chunk_bytes = 0;
        self.queued.clear();
    }

    /// Takes everything queued as one send batch.
    pub fn take_batch(&mut self) -> Option<Bytes> {
        if self.in_flight_bytes != 0 {
            return None;
        }
        let batch = match (self.chunks.len(), self.queued.is_empty()) {
            (0, true) => return None,
            (0, false) => self.queued.split().freeze(),
            (1, true) => self.chunks.pop_front().expect("one chunk"),
            _ => {
                let mut joined = BytesMut::with_capacity(self.chunk_bytes + self.queued.len());
                for chunk in self.chunks.drain(..) {
                    joined.extend_from_slice(&chunk);
                }
                joined.extend_from_slice(&self.queued);
                self.queued.clear();
                joined.freeze()
            }
        };
        self.chunk_bytes = 0;
        debug_assert!(self.chunks.is_empty() && self.queued.is_empty());
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
pub(crate) struct OutboundPool {
    // Boxed on purpose: a queue moves between this pool and a connection slot, where
    // `Option<Box<Outbound>>` keeps the slot at 32 bytes.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<Outbound>>,
}

impl OutboundPool {
    pub(crate) fn take(&mut self) -> Box<Outbound> {
        self.idle.pop().unwrap_or_default()
    }

    /// Returns an idle queue; drops it when the pool is full.
    pub(crate) fn give(&mut self, mut outbound: Box<Outbound>) {
        debug_assert!(outbound.is_idle());
        if self.idle.len() < OUTBOUND_POOL_MAX_ITEMS {
            outbound.discard_queued();
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

    #[test]
    fn a_lone_shared_frame_is_sent_without_a_copy() {
        let frame = Bytes::from_static(b"pushed frame");
        let mut out = Outbound::default();
        out.push_shared(frame.clone());
        assert_eq!(out.total_bytes(), frame.len());
        let batch = out.take_batch().unwrap();
        assert_eq!(batch.as_ptr(), frame.as_ptr(), "the same bytes, not a copy");
        assert!(out.complete(batch, frame.len()).is_none());
        assert!(out.is_idle());
    }

    #[test]
    fn shared_and_own_frames_keep_their_order_when_coalesced() {
        let mut out = Outbound::default();
        out.queued.extend_from_slice(b"reply1,");
        out.push_shared(Bytes::from_static(b"push1,"));
        out.queued.extend_from_slice(b"reply2,");
        out.push_shared(Bytes::from_static(b"push2"));
        assert_eq!(out.total_bytes(), 25);
        let batch = out.take_batch().unwrap();
        assert_eq!(&batch[..], b"reply1,push1,reply2,push2");
        assert!(out.complete(batch, 25).is_none());
        assert!(out.is_idle());
    }

    #[test]
    fn discarding_drops_queued_frames_but_not_the_send_in_flight() {
        let mut out = Outbound::default();
        out.queued.extend_from_slice(b"in flight");
        let batch = out.take_batch().unwrap();
        out.push_shared(Bytes::from_static(b"push"));
        out.queued.extend_from_slice(b"reply");
        out.discard_queued();
        assert_eq!(out.total_bytes(), batch.len());
        assert!(out.take_batch().is_none());
        assert!(out.complete(batch, 9).is_none());
        assert!(out.is_idle());
    }
}
