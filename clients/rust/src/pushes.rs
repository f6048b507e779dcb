//! The push stream: what the server pushed, in the order it arrived, with a [`Gap`] report
//! in front of any push whose topic skipped sequence numbers.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::seq::Gap;

/// One message pushed by the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// The topic it was published to: `*` for a broadcast, empty for a push addressed to
    /// this connection or client id.
    pub topic: String,
    /// The topic's sequence number (1, 2, 3, … per topic as the server numbers them); 0 for
    /// pushes addressed to a connection or client id, which are not numbered.
    pub seq: u64,
    /// The payload, as published.
    pub payload: Bytes,
}

/// One item of the [`PushStream`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incoming {
    /// A push.
    Push(Push),
    /// The push that follows on the same topic does not continue where the last delivered
    /// one left off. Comes right before that push.
    Gap(Gap),
}

/// Pushes in arrival order (per topic, in sequence order), and gap reports.
///
/// Backed by a bounded channel of
/// [`ClientConfig::push_buffer_max_items`](crate::ClientConfig::push_buffer_max_items) items.
/// If it is not read and fills up, newly arriving pushes are dropped (counted in
/// [`Stats::pushes_dropped`](crate::Stats::pushes_dropped)); requests, events and heartbeats
/// go on unaffected. Once there is room again, the next push delivered on a topic that lost
/// pushes is preceded by [`Gap::Missed`] with the missed range and how many of those were
/// dropped here. Dropping the stream discards all further pushes.
///
/// The stream ends (`None`) once the client is closed and everything buffered has been read.
/// It implements [`futures_core::Stream`].
#[derive(Debug)]
pub struct PushStream {
    pub(crate) rx: mpsc::Receiver<Incoming>,
}

impl PushStream {
    /// The next item, waiting for one; `None` once the client is closed and the buffer is
    /// empty.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.rx.recv().await
    }

    /// The next item if one is buffered now.
    pub fn try_recv(&mut self) -> Option<Incoming> {
        self.rx.try_recv().ok()
    }

    /// Items buffered and not yet read.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

impl futures_core::Stream for PushStream {
    type Item = Incoming;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        self.rx.poll_recv(cx)
    }
}
