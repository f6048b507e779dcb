//! A shard's rings. The kernel caps one io_uring fixed-file table at IORING_MAX_FIXED_FILES
//! (1,048,576) entries and at RLIMIT_NOFILE (io_uring/rsrc.c, `io_sqe_files_register`), so a
//! shard whose connection budget is larger owns several rings, each with its own table, all
//! driven from the shard's one executor loop and signalling one eventfd.
//!
//! The shard numbers its connection slots `0..slots`; slot `s` is entry `s % table_slots` of
//! ring `s / table_slots`. Everything above this module speaks shard slots: the set routes each
//! operation to the ring that owns the slot. A connection id therefore names its ring and its
//! table entry.
//!
//! Accepts: a shard of one ring keeps a multishot accept per listener and lets the kernel pick
//! the table entry (IORING_FILE_INDEX_ALLOC). A shard of several rings cannot: a multishot
//! accept drains the listener's whole queue into one ring in one go (a burst of thousands), so
//! a ring near full would refuse (ENFILE) connections another ring has room for. There the
//! shard arms a few one-shot accepts per listener, each naming a free slot from its free list
//! (`shard/state.rs`, `arm_accept`); the slot's ring takes the accept. A full ring is simply
//! never named, and the next free slot moves the accepts to the next ring.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use bytes::Bytes;

use super::buf_ring::BufRing;
use super::user_data::UserData;
use super::{Completion, RingParams, RingParts};

/// Most rings one shard owns: bounds each ring's fixed costs (SQ and CQ, its share of the
/// receive buffers) where RLIMIT_NOFILE keeps tables small (20,000 here: 1M sessions on 2
/// shards is 26 rings each). A shard's slots are also capped at the 24 bits of a connection
/// id (`MAX_SLOTS_PER_SHARD`, 16 rings of the kernel's largest table).
pub(crate) const MAX_RINGS_PER_SHARD: u32 = 64;

/// How many rings `slots` connection slots need with tables of at most `table_slots`.
pub(crate) fn rings_needed(slots: u64, table_slots: u64) -> u64 {
    assert!(table_slots > 0);
    slots.div_ceil(table_slots).max(1)
}

pub(crate) struct RingSet {
    /// Each ring with its receive buffers (RingParts keeps the drop order inside each).
    rings: Vec<RingParts>,
    /// Table size of every ring but the last (which holds the rest of the slots).
    table_slots: u32,
    /// The one eventfd every ring signals. The kernel holds its own reference to a registered
    /// eventfd, so the drop order against the rings does not matter.
    eventfd: OwnedFd,
    /// One ring's completions while [`RingSet::reap`] translates them (kept for its capacity).
    scratch: Vec<Completion>,
}

impl RingSet {
    /// Builds `ceil(slots / table_slots)` rings, each from `params` with its own table.
    pub(crate) fn new(params: &RingParams, slots: u32, table_slots: u32) -> io::Result<RingSet> {
        assert!(slots > 0 && table_slots > 0);
        let count = rings_needed(u64::from(slots), u64::from(table_slots));
        if count > u64::from(MAX_RINGS_PER_SHARD) {
            return Err(io::Error::other(format!(
                "{slots} slots in tables of {table_slots} need {count} rings, above \
                 MAX_RINGS_PER_SHARD = {MAX_RINGS_PER_SHARD}"
            )));
        }
        let eventfd = super::new_eventfd()?;
        let mut rings = Vec::with_capacity(count as usize);
        for ring in 0..count as u32 {
            let first = ring * table_slots;
            let fixed_files = (slots - first).min(table_slots);
            let params = RingParams {
                fixed_files,
                ..params.clone()
            };
            let parts = RingParts::new(&params, eventfd.as_raw_fd()).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("ring {ring} of {count} ({fixed_files} fixed files): {e}"),
                )
            })?;
            rings.push(parts);
        }
        Ok(RingSet {
            rings,
            table_slots,
            eventfd,
            scratch: Vec::new(),
        })
    }

    /// Shrinks what a burst grew and is mostly empty again (`shard/trim.rs`): each ring's
    /// backlog of entries that found its submission queue full, and the reap scratch, down to
    /// twice what they hold and at least `keep` entries.
    pub(crate) fn give_back_burst_capacity(&mut self, keep: usize) {
        use crate::trim::{trim_deque, trim_map, trim_vec};
        for parts in &mut self.rings {
            trim_deque(&mut parts.ring.backlog, keep);
            trim_map(&mut parts.ring.closes_after_shutdown);
            trim_map(&mut parts.ring.sends_orphaned);
        }
        trim_vec(&mut self.scratch, keep);
    }

    pub(crate) fn ring_count(&self) -> usize {
        self.rings.len()
    }

    /// The ring that owns shard slot `slot`, and the slot's index in that ring's table.
    fn locate(&self, slot: u32) -> (usize, u32) {
        let ring = (slot / self.table_slots) as usize;
        assert!(ring < self.rings.len(), "slot {slot} is past the last ring");
        (ring, slot % self.table_slots)
    }

    /// Which ring owns shard slot `slot`.
    pub(crate) fn ring_of(&self, slot: u32) -> usize {
        self.locate(slot).0
    }

    fn ring_for(&mut self, slot: u32) -> (&mut super::Ring, u32) {
        let (ring, local) = self.locate(slot);
        (&mut self.rings[ring].ring, local)
    }

    /// The receive buffers of the ring that owns `slot`.
    pub(crate) fn bufs(&self, slot: u32) -> &BufRing {
        &self.rings[self.locate(slot).0].bufs
    }

    pub(crate) fn bufs_mut(&mut self, slot: u32) -> &mut BufRing {
        let ring = self.locate(slot).0;
        &mut self.rings[ring].bufs
    }

    /// Hands every ring's recycled buffers back to its kernel.
    pub(crate) fn publish_buffers(&mut self) {
        for parts in &mut self.rings {
            parts.bufs.publish();
        }
    }

    /// A duplicate of the eventfd every ring signals, for a reactor that closes what it gets.
    pub(crate) fn eventfd_dup(&self) -> io::Result<OwnedFd> {
        super::dup_fd(self.eventfd.as_raw_fd())
    }

    pub(crate) fn has_unsubmitted(&mut self) -> bool {
        self.rings.iter_mut().any(|p| p.ring.has_unsubmitted())
    }

    /// Submits every ring's queued entries (see [`super::Ring::submit`]), entering the kernel
    /// only for a ring that needs it ([`super::Ring::needs_enter`]). With COOP_TASKRUN the
    /// kernel posts completions as task work when the thread next enters io_uring, and that
    /// work belongs to the thread, not to one ring, so one enter posts every ring's
    /// completions: the first ring is entered if any ring has task work waiting. The others
    /// are entered only with entries, or with completions the kernel holds beyond their
    /// queue (each ring's queue is its share of the shard's, so a burst on one ring can pass
    /// it): no other ring's enter moves those. Returns how many times it entered the kernel.
    pub(crate) fn submit(&mut self) -> io::Result<u64> {
        let any_needs_enter = self.rings.iter_mut().any(|p| p.ring.needs_enter());
        let mut enters = 0;
        for (index, parts) in self.rings.iter_mut().enumerate() {
            let first_with_work = index == 0 && any_needs_enter;
            if first_with_work || parts.ring.has_unsubmitted() || parts.ring.cq_overflowed() {
                parts.ring.submit()?;
                enters += 1;
            }
        }
        Ok(enters)
    }

    /// Waits up to `timeout_us` for a completion (see [`super::Ring::wait_for_completion`]).
    /// Only a set of one ring waits: a wait on one ring would not end for another's
    /// completion, so a set of several returns false at once.
    pub(crate) fn wait_for_completion(&mut self, timeout_us: u64) -> io::Result<bool> {
        match self.rings.as_mut_slice() {
            [parts] => parts.ring.wait_for_completion(timeout_us),
            _ => Ok(false),
        }
    }

    /// Whether any ring needs an `io_uring_enter` (entries, or completions held as task work).
    pub(crate) fn needs_enter(&mut self) -> bool {
        self.rings.iter_mut().any(|p| p.ring.needs_enter())
    }

    pub(crate) fn set_eventfd_notify(&mut self, enabled: bool) {
        for parts in &mut self.rings {
            parts.ring.set_eventfd_notify(enabled);
        }
    }

    /// Whether completions are waiting: in a ring's queue, or held by the kernel beyond it
    /// (the next [`RingSet::submit`] moves those in).
    pub(crate) fn has_completions(&mut self) -> bool {
        self.rings
            .iter_mut()
            .any(|p| p.ring.has_completions() || p.ring.cq_overflowed())
    }

    /// Moves every ring's available completions into `out` (cleared first).
    pub(crate) fn reap(&mut self, out: &mut Vec<Completion>) {
        if self.rings.len() == 1 {
            return self.rings[0].ring.reap(out);
        }
        out.clear();
        let mut scratch = std::mem::take(&mut self.scratch);
        for parts in &mut self.rings {
            parts.ring.reap(&mut scratch);
            out.append(&mut scratch);
        }
        self.scratch = scratch;
    }

    /// Multishot accept on `listener` with the kernel picking the table entry: only for a set
    /// of one ring, whose entries are the shard's slots.
    pub(crate) fn accept_multishot(&mut self, listener: RawFd, user_data: UserData) {
        assert_eq!(self.rings.len(), 1, "several rings accept into named slots");
        self.rings[0].ring.accept_multishot(listener, user_data);
    }

    /// One accept on `listener` into shard slot `slot` (on the ring that owns it).
    pub(crate) fn accept_into(&mut self, listener: RawFd, slot: u32, user_data: UserData) {
        let (ring, local) = self.ring_for(slot);
        ring.accept_into(listener, local, user_data);
    }

    /// Cancels every accept pending on `listener`, on every ring.
    pub(crate) fn cancel_accepts(&mut self, listener: RawFd, user_data: UserData) {
        for parts in &mut self.rings {
            parts.ring.cancel_fd_all(listener, user_data);
        }
    }

    /// Reads the shard's doorbell eventfd in the first ring: the one a shard of one ring
    /// waits in (`wait_for_completion`).
    pub(crate) fn read_doorbell(&mut self, eventfd: RawFd, user_data: UserData) {
        self.rings[0].ring.read_doorbell(eventfd, user_data);
    }

    pub(crate) fn poll_multishot(&mut self, slot: u32, user_data: UserData) {
        let (ring, local) = self.ring_for(slot);
        ring.poll_multishot(local, user_data);
    }

    pub(crate) fn recv(&mut self, slot: u32, user_data: UserData) {
        let (ring, local) = self.ring_for(slot);
        ring.recv(local, user_data);
    }

    pub(crate) fn recv_multishot(&mut self, slot: u32, user_data: UserData) {
        let (ring, local) = self.ring_for(slot);
        ring.recv_multishot(local, user_data);
    }

    pub(crate) fn send(&mut self, slot: u32, user_data: UserData, bytes: Bytes) {
        let (ring, local) = self.ring_for(slot);
        ring.send(local, user_data, bytes);
    }

    pub(crate) fn take_sent(&mut self, user_data: UserData) -> Bytes {
        let (ring, local) = self.ring_for(user_data.slot());
        ring.take_sent(local, user_data)
    }

    pub(crate) fn sends_in_flight(&self) -> usize {
        self.rings.iter().map(|p| p.ring.sends_in_flight()).sum()
    }

    /// Cancels a connection's requests (each by exact user_data) and closes its slot.
    pub(crate) fn cancel_and_close(
        &mut self,
        slot: u32,
        targets: &[UserData],
        cancel_user_data: UserData,
        close_user_data: UserData,
    ) {
        for target in targets {
            debug_assert_eq!(target.slot(), slot, "a cancel names a request of this slot");
        }
        let (ring, local) = self.locate(slot);
        self.rings[ring]
            .ring
            .cancel_and_close(local, targets, cancel_user_data, close_user_data);
    }

    /// Cancels the request of a connection named by `target` (on the ring of its slot).
    pub(crate) fn cancel(&mut self, target: UserData, user_data: UserData) {
        let (ring, _) = self.ring_for(target.slot());
        ring.cancel(target, user_data);
    }

    pub(crate) fn shutdown_write(&mut self, slot: u32, user_data: UserData) {
        let (ring, local) = self.ring_for(slot);
        ring.shutdown_write(local, user_data);
    }

    /// A shutdown's completion (`user_data` names its slot): a close waiting for it goes out.
    pub(crate) fn shutdown_done(&mut self, user_data: UserData) {
        let (ring, local) = self.ring_for(user_data.slot());
        ring.shutdown_done(local);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> RingParams {
        RingParams {
            sq_entries: 8,
            cq_entries: 16,
            fixed_files: 0,
            recv_buffers: 4,
            recv_buffer_bytes: 4096,
        }
    }

    #[test]
    fn slots_split_into_rings_of_at_most_the_table_size() {
        let set = RingSet::new(&params(), 2_500, 1_000).unwrap();
        assert_eq!(set.ring_count(), 3);
        assert_eq!(set.locate(0), (0, 0));
        assert_eq!(set.locate(999), (0, 999));
        assert_eq!(set.locate(1_000), (1, 0));
        assert_eq!(set.locate(2_499), (2, 499));
        let tables: Vec<u32> = set.rings.iter().map(|p| p.ring.fixed_files()).collect();
        assert_eq!(tables, [1_000, 1_000, 500]);
        assert_eq!(rings_needed(5_500_064, 1 << 20), 6);
        assert_eq!(rings_needed(1, 1 << 20), 1);
    }

    /// More completions on a ring other than the first than its queue holds (each ring's
    /// queue is its share of the shard's): the kernel keeps the rest, and the set's submit
    /// enters that ring to move them in although nothing is queued on it any more, so every
    /// one is reaped. (Entering only the first ring and rings with entries left them there.)
    #[test]
    fn completions_past_a_later_rings_queue_are_all_reaped() {
        use super::super::user_data::Op;
        const REQUESTS: u32 = 200;
        let mut set = RingSet::new(&params(), 16, 8).unwrap();
        assert_eq!(set.ring_count(), 2);
        let slot = 12;
        assert_eq!(set.ring_of(slot), 1);
        // Cancels of nothing: each completes at once with ENOENT, 12 x the CQ's 16 entries.
        for n in 0..REQUESTS {
            set.cancel(
                UserData::new(Op::Recv, slot, n),
                UserData::new(Op::Cancel, slot, n),
            );
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let (mut reaped, mut completions) = (0, Vec::new());
        while reaped < REQUESTS as usize {
            assert!(
                std::time::Instant::now() < deadline,
                "{reaped} of {REQUESTS} reaped"
            );
            set.submit().unwrap();
            set.reap(&mut completions);
            assert!(completions.len() <= 16, "a reap takes at most the queue");
            reaped += completions.len();
        }
        assert!(!set.has_completions());
    }

    #[test]
    fn more_rings_than_a_shard_may_own_is_an_error_naming_the_constant() {
        let Err(error) = RingSet::new(&params(), 65 * 16, 16) else {
            panic!("65 rings accepted");
        };
        assert!(error.to_string().contains("MAX_RINGS_PER_SHARD"), "{error}");
    }
}
