//! A shard's doorbell: an eventfd that whoever puts a message in the shard's inbox writes to,
//! but only while the shard sleeps and has said so (`listen`). The shard keeps a read of the
//! eventfd in its ring (shard/io.rs, `Op::Doorbell`), so an inbox message ends a sleep in the
//! ring like any completion, and the shard need not park through glommio (whose park and
//! wake-up cost more than the round trip it waits for: docs/PERFORMANCE.md, "Never parking
//! through glommio"); when it does park, the read's completion signals the eventfd glommio
//! sleeps on, so the message ends the park too.
//!
//! The handshake is Dekker's: the shard stores `listening` and then looks at its inbox; a
//! sender puts its message in the inbox and then takes `listening`. With a full fence on both
//! sides at least one of the two sees the other, so a message is never left unannounced while
//! the shard sleeps. A busy shard does not listen, so a send then costs one atomic swap and no
//! system call.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};

pub(crate) struct Doorbell {
    eventfd: File,
    listening: AtomicBool,
}

impl Doorbell {
    pub(crate) fn new() -> std::io::Result<Doorbell> {
        Ok(Doorbell {
            eventfd: File::from(crate::ring::new_eventfd()?),
            listening: AtomicBool::new(false),
        })
    }

    /// The eventfd the shard's ring reads.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// The shard is about to sleep (in its ring, or parked): from now on a sender rings. The
    /// caller looks at its inbox after this, and sleeps only if it is empty.
    pub(crate) fn listen(&self) {
        self.listening.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// The shard is awake: senders stop ringing.
    pub(crate) fn stop_listening(&self) {
        self.listening.store(false, Ordering::Relaxed);
    }

    /// Called by a sender after its message is in the inbox: wakes the shard if it listens.
    /// One ring per sleep: the first sender takes `listening`, the rest see it false.
    pub(crate) fn ring(&self) {
        fence(Ordering::SeqCst);
        if !self.listening.swap(false, Ordering::SeqCst) {
            return;
        }
        // An eventfd write fails only if the counter would overflow (it is read back to 0 on
        // every wake) or the descriptor is bad; the shard still wakes at its next tick.
        if let Err(e) = (&self.eventfd).write_all(&1u64.to_ne_bytes()) {
            tracing::warn!("shard doorbell write failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// The rings since the last call: adds a marker of 1,000 first, so the read never blocks.
    fn rings_since_last(doorbell: &Doorbell) -> u64 {
        const MARKER: u64 = 1_000;
        (&doorbell.eventfd)
            .write_all(&MARKER.to_ne_bytes())
            .unwrap();
        let mut bytes = [0u8; crate::ring::EVENTFD_COUNTER_BYTES];
        (&doorbell.eventfd).read_exact(&mut bytes).unwrap();
        u64::from_ne_bytes(bytes) - MARKER
    }

    #[test]
    fn a_doorbell_rings_only_while_its_shard_listens_and_once_per_sleep() {
        let doorbell = Doorbell::new().unwrap();
        doorbell.ring();
        assert_eq!(rings_since_last(&doorbell), 0, "a busy shard is not rung");
        doorbell.listen();
        doorbell.ring();
        doorbell.ring();
        assert_eq!(rings_since_last(&doorbell), 1, "one write per sleep");
        doorbell.ring();
        assert_eq!(
            rings_since_last(&doorbell),
            0,
            "the first ring ended the listening"
        );
        doorbell.listen();
        doorbell.stop_listening();
        doorbell.ring();
        assert_eq!(
            rings_since_last(&doorbell),
            0,
            "a shard that woke is not rung"
        );
    }
}
