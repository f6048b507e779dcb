//! The shard's own io_uring ring. Everything that touches an SQE, a CQE, the fixed-file table or
//! the provided-buffer ring lives in this module; everything above it is safe Rust.
//!
//! - [`Ring`]: setup, submission, reaping, and one method per operation the shard issues.
//! - [`set`]: the shard's rings ([`set::RingSet`]): as many as its connection budget needs, each
//!   with a fixed-file table under the kernel's per-ring cap; speaks the shard's slot numbers.
//! - [`buf_ring`]: the provided-buffer ring receive buffers come from.
//! - [`user_data`]: how an operation, a slot and a generation are packed into a CQE's user_data.
//!
//! Memory safety of in-flight operations: the only operation that points the kernel at user
//! memory is send, and [`Ring::send`] takes the bytes by value (`Bytes`) and keeps them in
//! `sends_by_slot` until the send's CQE is reaped ([`Ring::take_sent`]). Receive buffers
//! belong to the buffer ring, which outlives the io_uring (field order below).

pub(crate) mod buf_ring;
pub(crate) mod set;
pub(crate) mod user_data;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use bytes::Bytes;
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use self::buf_ring::BufRing;
use self::user_data::UserData;

/// How a shard's ring is built. Every field is a config key (see config.rs).
#[derive(Clone, Debug)]
pub(crate) struct RingParams {
    pub sq_entries: u32,
    pub cq_entries: u32,
    /// Size of this ring's fixed-file (direct descriptor) table (at most
    /// min(IORING_MAX_FIXED_FILES, RLIMIT_NOFILE, ring_max_fixed_files); see [`set`]).
    pub fixed_files: u32,
    pub recv_buffers: u16,
    pub recv_buffer_bytes: u32,
}

/// An error number from the kernel: a failed completion (a negative CQE result) or syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Errno(pub i32);

impl Errno {
    pub(crate) const EAGAIN: Errno = Errno(libc::EAGAIN);
    pub(crate) const EBUSY: Errno = Errno(libc::EBUSY);
    pub(crate) const ECANCELED: Errno = Errno(libc::ECANCELED);
    pub(crate) const EINTR: Errno = Errno(libc::EINTR);
    pub(crate) const ENFILE: Errno = Errno(libc::ENFILE);
    pub(crate) const ENOBUFS: Errno = Errno(libc::ENOBUFS);

    /// An `io_uring_enter` error that means "reap completions and submit again", not failure:
    /// the completion queue is full (EBUSY), the kernel is short of memory (EAGAIN), or a
    /// signal arrived (EINTR).
    pub(crate) fn is_transient_submit(self) -> bool {
        matches!(self, Errno::EBUSY | Errno::EAGAIN | Errno::EINTR)
    }

    fn of(error: &io::Error) -> Option<Errno> {
        error.raw_os_error().map(Errno)
    }
}

/// Calls a libc function whose arguments are plain integers (no pointers) and turns its -1 +
/// errno convention into an `io::Result` (monoio's `syscall!`).
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: the macro is only used for libc calls that take integers and flags, no
        // pointers, so no argument can make the call touch memory it should not.
        let result = unsafe { libc::$fn($($arg),*) };
        if result == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(result)
        }
    }};
}

/// One reaped completion, its result turned into a `Result` once, here.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Completion {
    pub user_data: UserData,
    /// The CQE's result: a count (bytes, a descriptor index) or the errno it failed with.
    pub result: Result<u32, Errno>,
    pub flags: u32,
}

impl Completion {
    fn from_cqe(user_data: u64, result: i32, flags: u32) -> Completion {
        Completion {
            user_data: UserData(user_data),
            result: u32::try_from(result).map_err(|_| Errno(-result)),
            flags,
        }
    }
}

impl Completion {
    /// The multishot request stays armed (IORING_CQE_F_MORE).
    pub(crate) fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer a recv completed into.
    pub(crate) fn buffer_id(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }

    /// The socket still had data after this recv (IORING_CQE_F_SOCK_NONEMPTY).
    pub(crate) fn socket_nonempty(&self) -> bool {
        cqueue::sock_nonempty(self.flags)
    }
}

/// A shard's ring. The shard owns it beside its [`BufRing`] (so frames can be read from a
/// receive buffer while replies are queued on the ring) and must drop the ring first: see
/// [`RingParts`].
pub(crate) struct Ring {
    uring: IoUring,
    /// The bytes of the send in flight on each slot (40 bytes per slot, allocated up front: a
    /// map sized for a burst keeps its peak capacity, which cost ~130 B per idle session).
    sends_by_slot: Box<[Option<(UserData, Bytes)>]>,
    /// Sends of closed connections whose slot got a new tenant before their completion.
    sends_orphaned: HashMap<UserData, Bytes>,
    /// Entries that found the submission queue full even after a submit (the kernel refused
    /// more until completions are reaped); pushed first at the next [`Ring::submit`]. Bounded
    /// by the requests connections may have pending: a few per connection.
    backlog: VecDeque<squeue::Entry>,
    sends_in_flight: usize,
    /// One bit per slot: a shutdown of the slot's descriptor is queued and not yet completed.
    /// The kernel always runs IORING_OP_SHUTDOWN in an io-wq worker and resolves a direct
    /// descriptor there, when it runs: a close of the slot in between would let that shutdown
    /// land on the slot's next tenant (its write side shut before its first byte). So a slot
    /// is never closed while its bit is set (`cancel_and_close`, `shutdown_done`).
    shutdowns_pending: Box<[u64]>,
    /// Closes that wait for their slot's shutdown to complete: slot, close user_data.
    closes_after_shutdown: HashMap<u32, UserData>,
    recv_buffer_group: u16,
    recv_buffer_bytes: u32,
    /// Where the read of the shard's doorbell eventfd lands (at most one in flight:
    /// [`Ring::read_doorbell`]). Boxed so it never moves; declared after `uring`, so the ring
    /// is closed (the read cancelled) before it is freed.
    doorbell_bytes: Box<[u8; EVENTFD_COUNTER_BYTES]>,
}

/// A ring and its receive buffers. Field order is drop order: the io_uring is closed (every
/// request cancelled) before the buffer ring's memory is unmapped. Keep this order wherever
/// the two are stored.
pub(crate) struct RingParts {
    pub ring: Ring,
    pub bufs: BufRing,
}

/// Recv buffer group id (one group per ring).
const RECV_BUFFER_GROUP: u16 = 0;

/// Bytes of one eventfd read or write: its 64-bit counter.
pub(crate) const EVENTFD_COUNTER_BYTES: usize = 8;

/// A new eventfd (close-on-exec) that rings signal completions on.
pub(crate) fn new_eventfd() -> io::Result<OwnedFd> {
    let eventfd = syscall!(eventfd(0, libc::EFD_CLOEXEC))?;
    // SAFETY: eventfd(2) succeeded, so `eventfd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(eventfd) })
}

/// A duplicate of `fd`, for a reactor that closes what it is given.
pub(crate) fn dup_fd(fd: RawFd) -> io::Result<OwnedFd> {
    let fd = syscall!(dup(fd))?;
    // SAFETY: dup(2) succeeded, so `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl RingParts {
    /// Builds one ring: fixed-file table, provided-buffer ring, completions signalled on
    /// `eventfd` (the ring set's one eventfd: every ring of a shard signals the same one).
    pub(crate) fn new(params: &RingParams, eventfd: RawFd) -> io::Result<RingParts> {
        RingParts::build(params, Some(eventfd), false)
    }

    /// `disabled`: the ring starts disabled (IORING_SETUP_R_DISABLED), so every submit fails
    /// until it is enabled (tests of what the ring does when the kernel refuses submissions).
    fn build(params: &RingParams, eventfd: Option<RawFd>, disabled: bool) -> io::Result<RingParts> {
        let mut builder = IoUring::builder();
        if disabled {
            builder.setup_r_disabled();
        }
        builder.setup_cqsize(params.cq_entries).setup_submit_all();
        // COOP_TASKRUN: completions are posted at our next enter instead of interrupting the
        // shard thread. SINGLE_ISSUER + DEFER_TASKRUN was tried and dropped: with it, the
        // multishot accept never completed while the shard slept on the eventfd through
        // glommio (docs/PERFORMANCE.md, "Ring setup").
        builder.setup_coop_taskrun();
        // TASKRUN_FLAG: the kernel marks the SQ ring when completions wait as task work, so
        // the shard enters the kernel only with entries to submit or work to run
        // (`Ring::needs_enter`), not on every round.
        builder.setup_taskrun_flag();
        let uring = builder.build(params.sq_entries)?;
        uring
            .submitter()
            .register_files_sparse(params.fixed_files)?;
        if let Some(eventfd) = eventfd {
            uring.submitter().register_eventfd(eventfd)?;
        }
        let bufs = BufRing::register(
            &uring,
            RECV_BUFFER_GROUP,
            params.recv_buffers,
            params.recv_buffer_bytes,
        )?;
        let ring = Ring {
            uring,
            sends_by_slot: (0..params.fixed_files).map(|_| None).collect(),
            sends_orphaned: HashMap::new(),
            backlog: VecDeque::new(),
            sends_in_flight: 0,
            shutdowns_pending: vec![0; params.fixed_files.div_ceil(64) as usize].into(),
            closes_after_shutdown: HashMap::new(),
            doorbell_bytes: Box::new([0; EVENTFD_COUNTER_BYTES]),
            recv_buffer_group: bufs.group_id(),
            recv_buffer_bytes: bufs.buffer_bytes(),
        };
        Ok(RingParts { ring, bufs })
    }
}

impl Ring {
    /// Whether SQEs are queued (or held back) and not yet handed to the kernel.
    pub(crate) fn has_unsubmitted(&mut self) -> bool {
        !self.uring.submission().is_empty() || !self.backlog.is_empty()
    }

    /// Whether an `io_uring_enter` would do anything: entries to submit (or held back), or
    /// completions the kernel holds as task work (IORING_SQ_TASKRUN, set under TASKRUN_FLAG)
    /// or in its overflow list. Without any, the completion queue already shows everything
    /// there is, and an enter would be a syscall that finds nothing.
    pub(crate) fn needs_enter(&mut self) -> bool {
        if self.has_unsubmitted() {
            return true;
        }
        let sq = self.uring.submission();
        sq.taskrun() || sq.cq_overflow()
    }

    /// Submits anything queued and waits in the kernel until a completion is posted or
    /// `timeout_us` passes (IORING_ENTER_GETEVENTS with a timeout). Returns whether a
    /// completion is waiting. An interrupted or refused wait is a wait that found nothing.
    pub(crate) fn wait_for_completion(&mut self, timeout_us: u64) -> io::Result<bool> {
        let timeout = types::Timespec::from(std::time::Duration::from_micros(timeout_us));
        let args = types::SubmitArgs::new().timespec(&timeout);
        match self.uring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
            Err(e) if Errno::of(&e).is_some_and(Errno::is_transient_submit) => {}
            Err(e) => return Err(e),
        }
        Ok(self.has_completions())
    }

    /// Submits queued SQEs without waiting, after moving held-back entries into the queue as
    /// room allows. A transient refusal ([`Errno::is_transient_submit`]) is `Ok(0)`: the
    /// caller reaps and comes back. Any other error is returned: the shard stops, logged.
    pub(crate) fn submit(&mut self) -> io::Result<usize> {
        while let Some(entry) = self.backlog.pop_front() {
            // SAFETY: as in `push`: the entry was built by this module and points only at
            // memory that outlives the request.
            if unsafe { self.uring.submission().push(&entry) }.is_err() {
                self.backlog.push_front(entry);
                break;
            }
        }
        match self.uring.submit() {
            Ok(n) => Ok(n),
            Err(e) if Errno::of(&e).is_some_and(Errno::is_transient_submit) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Turns the kernel's eventfd signal on completions on or off (IORING_CQ_EVENTFD_DISABLED).
    /// The shard keeps it off while it is busy reaping anyway, so a completion costs no
    /// eventfd wakeup, and turns it on only before it sleeps.
    pub(crate) fn set_eventfd_notify(&mut self, enabled: bool) {
        let cq = self.uring.completion();
        if enabled {
            cq.enable_eventfd();
        } else {
            cq.disable_eventfd();
        }
    }

    /// Whether the kernel holds completions that did not fit this ring's completion queue
    /// (IORING_SQ_CQ_OVERFLOW, kept by IORING_FEAT_NODROP): only an enter of this ring (a
    /// [`Ring::submit`], which asks for events then) moves them into the queue.
    pub(crate) fn cq_overflowed(&mut self) -> bool {
        self.uring.submission().cq_overflow()
    }

    /// Whether completions are waiting to be reaped.
    pub(crate) fn has_completions(&mut self) -> bool {
        let mut cq = self.uring.completion();
        cq.sync();
        !cq.is_empty()
    }

    /// Moves every available completion into `out` (cleared first).
    pub(crate) fn reap(&mut self, out: &mut Vec<Completion>) {
        out.clear();
        let mut cq = self.uring.completion();
        cq.sync();
        for cqe in &mut cq {
            out.push(Completion::from_cqe(
                cqe.user_data(),
                cqe.result(),
                cqe.flags(),
            ));
        }
    }

    /// Queues `entry`. Never blocks and never spins: with the submission queue full it hands
    /// the queue to the kernel once, and if there is still no room (the kernel refuses more
    /// until completions are reaped) the entry waits in `backlog` for the next
    /// [`Ring::submit`]. A submit error here is left for that call to report.
    fn push(&mut self, entry: squeue::Entry) {
        if self.backlog.is_empty() {
            // SAFETY: every entry built by this module points only at memory that outlives the
            // request: the listener fd and fixed slots are closed through this ring, recv uses
            // provided buffers whose BufRing is dropped after this ring (RingParts), send
            // bytes are held in `sends_by_slot` until their completion is reaped, and the
            // doorbell read lands in `doorbell_bytes`, freed after the ring is closed.
            if unsafe { self.uring.submission().push(&entry) }.is_ok() {
                return;
            }
            let _ = self.uring.submit();
            // SAFETY: as above.
            if unsafe { self.uring.submission().push(&entry) }.is_ok() {
                return;
            }
        }
        self.backlog.push_back(entry);
    }

    /// Multishot accept on `listener` into auto-allocated direct descriptors (no SOCK_CLOEXEC:
    /// direct descriptors are not in the fd table, and the kernel refuses the flag with them).
    pub(crate) fn accept_multishot(&mut self, listener: RawFd, user_data: UserData) {
        let entry = opcode::AcceptMulti::new(types::Fd(listener))
            .allocate_file_index(true)
            .build()
            .user_data(user_data.0);
        self.push(entry);
    }

    /// One accept on `listener` into entry `slot` of this ring's table (IORING_OP_ACCEPT with
    /// a file index). The entry must be free: the shard hands out only slots whose close has
    /// completed.
    pub(crate) fn accept_into(&mut self, listener: RawFd, slot: u32, user_data: UserData) {
        assert!(
            slot < self.fixed_files(),
            "slot {slot} is past this ring's table"
        );
        let destination = types::DestinationSlot::try_from_slot_target(slot)
            .expect("a table entry is below the kernel's index limit");
        let entry = opcode::Accept::new(
            types::Fd(listener),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .file_index(Some(destination))
        .build()
        .user_data(user_data.0);
        self.push(entry);
    }

    /// Cancels every request pending on `fd` (a listener's accepts when draining: at most a
    /// few per listener, so the walk this cancel does is short).
    pub(crate) fn cancel_fd_all(&mut self, fd: RawFd, user_data: UserData) {
        let entry = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
            .build()
            .user_data(user_data.0);
        self.push(entry);
    }

    /// Multishot readiness poll (POLLIN | POLLRDHUP) on a direct descriptor.
    pub(crate) fn poll_multishot(&mut self, slot: u32, user_data: UserData) {
        let events = (libc::POLLIN | libc::POLLRDHUP) as u32;
        let entry = opcode::PollAdd::new(types::Fixed(slot), events)
            .multi(true)
            .build()
            .user_data(user_data.0);
        self.push(entry);
    }

    /// One read of the shard's doorbell eventfd (a plain descriptor, not a table slot): it
    /// completes when a sender rings, and the read resets the eventfd. The caller keeps at
    /// most one in flight (they share `doorbell_bytes`).
    pub(crate) fn read_doorbell(&mut self, eventfd: RawFd, user_data: UserData) {
        let entry = opcode::Read::new(
            types::Fd(eventfd),
            self.doorbell_bytes.as_mut_ptr(),
            self.doorbell_bytes.len() as u32,
        )
        .build()
        .user_data(user_data.0);
        self.push(entry);
    }

    /// One recv into a buffer the kernel picks from the provided-buffer ring.
    pub(crate) fn recv(&mut self, slot: u32, user_data: UserData) {
        let entry = opcode::Recv::new(
            types::Fixed(slot),
            std::ptr::null_mut(),
            self.recv_buffer_bytes,
        )
        .buf_group(self.recv_buffer_group)
        // Never wait for bytes: the connection's poll (or a READ_AGAIN) asked for this recv,
        // and the bytes it saw may already have been read by the recv before it. A recv that
        // waited would hold one of its ring's receive buffers in the shard's budget
        // (shard/state.rs, RecvBudget) until the peer's next frame, a Ping up to a heartbeat
        // interval later; enough of them stall every other connection of the ring (Hello and
        // Pings unread: HelloTimeout, HeartbeatTimeout). Nothing to read completes at once with
        // EAGAIN, and the poll, still armed, reports the next bytes.
        .flags(libc::MSG_DONTWAIT)
        .build()
        .flags(squeue::Flags::BUFFER_SELECT)
        .user_data(user_data.0);
        self.push(entry);
    }

    /// Arms a multishot recv on a direct descriptor: each arrival of bytes completes with a
    /// provided buffer and IORING_CQE_F_MORE, until it is cancelled, the buffer ring runs dry
    /// (ENOBUFS), or the peer closes. Costs ~600 bytes more kernel memory than a poll while
    /// armed (docs/CAPACITY.md, "Platform facts"), so only busy connections hold one. No `len`
    /// cap: one (2 KiB per completion) cost a 1,000-connection echo ~10% (PERFORMANCE.md).
    pub(crate) fn recv_multishot(&mut self, slot: u32, user_data: UserData) {
        let entry = opcode::RecvMulti::new(types::Fixed(slot), self.recv_buffer_group)
            .build()
            .user_data(user_data.0);
        self.push(entry);
    }

    /// Sends `bytes` on a direct descriptor. The ring keeps `bytes` alive until the completion
    /// is reaped; get them back with [`Ring::take_sent`]. One send per connection at a time.
    pub(crate) fn send(&mut self, slot: u32, user_data: UserData, bytes: Bytes) {
        assert!(!bytes.is_empty());
        let len =
            u32::try_from(bytes.len()).expect("send batches are bounded by max_outbound_bytes");
        let entry = opcode::Send::new(types::Fixed(slot), bytes.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data.0);
        let held = &mut self.sends_by_slot[slot as usize];
        if let Some((previous_user_data, previous_bytes)) = held.take() {
            // The slot's previous tenant closed with a send still in flight: keep its bytes
            // until that completion is reaped.
            assert_ne!(
                previous_user_data, user_data,
                "one send in flight per connection"
            );
            self.sends_orphaned
                .insert(previous_user_data, previous_bytes);
        }
        *held = Some((user_data, bytes));
        self.sends_in_flight += 1;
        self.push(entry);
    }

    /// Returns the bytes of a completed send (exactly once per [`Ring::send`]); `slot` is the
    /// send's index in this ring's table.
    pub(crate) fn take_sent(&mut self, slot: u32, user_data: UserData) -> Bytes {
        self.sends_in_flight -= 1;
        let held = &mut self.sends_by_slot[slot as usize];
        match held.take() {
            Some((held_user_data, bytes)) if held_user_data == user_data => bytes,
            other => {
                *held = other;
                self.sends_orphaned
                    .remove(&user_data)
                    .expect("a send completion matches a send in flight")
            }
        }
    }

    /// Entries in this ring's fixed-file table.
    pub(crate) fn fixed_files(&self) -> u32 {
        self.sends_by_slot.len() as u32
    }

    /// Number of sends whose completion has not been reaped yet.
    pub(crate) fn sends_in_flight(&self) -> usize {
        self.sends_in_flight
    }

    /// Cancels the requests named in `targets`, then closes the descriptor (not linked: a
    /// cancel that finds nothing fails with ENOENT, which would cancel a linked close).
    ///
    /// Each cancel names one exact user_data, which the kernel finds by hashing into its
    /// cancel table. A cancel by descriptor (`IORING_ASYNC_CANCEL_FD`) instead walks every
    /// pending poll of the ring, once per match with `ALL`: closing N connections that way
    /// costs O(N^2) (measured: 30,000 closes took ~2.8 s of server CPU, see PERFORMANCE.md).
    /// In-flight requests hold their own file reference, so the socket closes when the last
    /// of them completes; the kernel may reuse the slot as soon as the close is processed.
    /// A shutdown is the exception (it finds its descriptor only when an io-wq worker runs
    /// it): with one pending on `slot`, the close waits for [`Ring::shutdown_done`].
    pub(crate) fn cancel_and_close(
        &mut self,
        slot: u32,
        targets: &[UserData],
        cancel_user_data: UserData,
        close_user_data: UserData,
    ) {
        for target in targets {
            self.cancel(*target, cancel_user_data);
        }
        if self.shutdown_pending(slot) {
            let previous = self.closes_after_shutdown.insert(slot, close_user_data);
            assert!(previous.is_none(), "one close per slot tenant");
        } else {
            self.close(slot, close_user_data);
        }
    }

    fn close(&mut self, slot: u32, user_data: UserData) {
        let close = opcode::Close::new(types::Fixed(slot))
            .build()
            .user_data(user_data.0);
        self.push(close);
    }

    fn shutdown_pending(&self, slot: u32) -> bool {
        self.shutdowns_pending[slot as usize / 64] & (1 << (slot % 64)) != 0
    }

    /// The shutdown of `slot` completed (its completion was reaped, whatever its result):
    /// a close that waited for it is queued now.
    pub(crate) fn shutdown_done(&mut self, slot: u32) {
        assert!(
            self.shutdown_pending(slot),
            "a shutdown completion without its shutdown"
        );
        self.shutdowns_pending[slot as usize / 64] &= !(1 << (slot % 64));
        if let Some(close_user_data) = self.closes_after_shutdown.remove(&slot) {
            self.close(slot, close_user_data);
        }
    }

    /// Cancels the request with `target` user_data (used to stop the multishot accept).
    pub(crate) fn cancel(&mut self, target: UserData, user_data: UserData) {
        let entry = opcode::AsyncCancel::new(target.0)
            .build()
            .user_data(user_data.0);
        self.push(entry);
    }

    /// Half-closes the write side of a direct descriptor after the last bytes are queued.
    /// At most one per slot tenant; its completion must be handed to [`Ring::shutdown_done`].
    pub(crate) fn shutdown_write(&mut self, slot: u32, user_data: UserData) {
        assert!(!self.shutdown_pending(slot), "one shutdown per slot tenant");
        self.shutdowns_pending[slot as usize / 64] |= 1 << (slot % 64);
        let entry = opcode::Shutdown::new(types::Fixed(slot), libc::SHUT_WR)
            .build()
            .user_data(user_data.0);
        self.push(entry);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::user_data::Op;
    use super::*;

    #[test]
    fn completion_results_become_counts_or_errnos() {
        let ok = Completion::from_cqe(0, 64, 0);
        assert_eq!(ok.result, Ok(64));
        let failed = Completion::from_cqe(0, -libc::ENOBUFS, 0);
        assert_eq!(failed.result, Err(Errno::ENOBUFS));
        assert!(Errno::EBUSY.is_transient_submit());
        assert!(!Errno::ECANCELED.is_transient_submit());
    }

    /// A small ring: an 8-entry submission queue and a 16-entry completion queue.
    fn small_ring(disabled: bool) -> RingParts {
        let params = RingParams {
            sq_entries: 8,
            cq_entries: 16,
            fixed_files: 8,
            recv_buffers: 4,
            recv_buffer_bytes: 4096,
        };
        RingParts::build(&params, None, disabled).unwrap()
    }

    /// A small ring with our end of a Unix socket pair registered as fixed file 3: (ring, our
    /// end, the peer's end, which writes to it).
    fn small_ring_with_socket_at_3() -> (RingParts, UnixStream, UnixStream) {
        let parts = small_ring(false);
        let (ours, peer) = UnixStream::pair().unwrap();
        parts
            .ring
            .uring
            .submitter()
            .register_files_update(3, &[ours.as_raw_fd()])
            .unwrap();
        (parts, ours, peer)
    }

    /// Queues `count` cancels of nothing (each completes at once with ENOENT), without reaping.
    fn queue_cancels(ring: &mut Ring, count: usize) {
        for n in 0..count {
            ring.cancel(
                UserData::new(Op::Recv, 7, n as u32),
                UserData::new(Op::Cancel, 7, n as u32),
            );
        }
    }

    /// Submits and reaps until `count` completions came (or 10 s passed: a failure).
    fn reap_all(ring: &mut Ring, count: usize) -> Vec<Completion> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let (mut all, mut completions) = (Vec::new(), Vec::new());
        while all.len() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {count}",
                all.len()
            );
            ring.submit().unwrap();
            ring.reap(&mut completions);
            all.extend_from_slice(&completions);
        }
        assert!(!ring.has_unsubmitted());
        all
    }

    /// The kernel refuses every submission (a disabled ring, EBADFD) while far more requests
    /// than the submission queue holds are queued: `push` neither spins nor panics (before, it
    /// looped on submit and panicked on any errno but EBUSY/EAGAIN/EINTR), the requests wait
    /// in the backlog, `submit` reports the error to its caller, and once the kernel takes
    /// submissions again every request completes.
    #[test]
    fn a_kernel_refusing_submissions_leaves_requests_in_the_backlog_not_a_spin_or_a_panic() {
        const REQUESTS: usize = 100;
        let RingParts { mut ring, bufs } = small_ring(true);
        queue_cancels(&mut ring, REQUESTS);
        assert!(
            ring.backlog.len() >= REQUESTS - 8,
            "{} held back",
            ring.backlog.len()
        );
        let refused = ring.submit().unwrap_err();
        assert_eq!(refused.raw_os_error(), Some(libc::EBADFD), "{refused}");
        ring.uring.submitter().register_enable_rings().unwrap();
        assert_eq!(reap_all(&mut ring, REQUESTS).len(), REQUESTS);
        drop(ring);
        drop(bufs);
    }

    /// Submits and reaps for up to `limit_ms`; whatever completed by then.
    fn reap_for(ring: &mut Ring, limit_ms: u64) -> Vec<Completion> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(limit_ms);
        let (mut all, mut completions) = (Vec::new(), Vec::new());
        while std::time::Instant::now() < deadline {
            ring.submit().unwrap();
            ring.reap(&mut completions);
            all.extend_from_slice(&completions);
            if !all.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        all
    }

    /// A one-shot recv on a connection with nothing to read completes at once with EAGAIN
    /// instead of waiting for the peer's next bytes. (It waited before: each such recv held one
    /// of its ring's receive buffers in the shard's budget until the peer's next frame, up to
    /// a heartbeat interval; at 100,000 sessions on 4 rings per shard the budgets filled with
    /// them and the rings' other connections went unread, HelloTimeout and HeartbeatTimeout.)
    /// With bytes waiting it reads them into a provided buffer as before.
    #[test]
    fn a_recv_with_nothing_to_read_completes_at_once_instead_of_waiting() {
        let (RingParts { mut ring, bufs }, _ours, peer) = small_ring_with_socket_at_3();
        ring.recv(3, UserData::new(Op::Recv, 3, 1));
        let completions = reap_for(&mut ring, 1_000);
        assert_eq!(completions.len(), 1, "the recv is still waiting for bytes");
        assert_eq!(completions[0].result, Err(Errno::EAGAIN));
        assert_eq!(completions[0].buffer_id(), None);

        (&peer).write_all(b"ping").unwrap();
        ring.recv(3, UserData::new(Op::Recv, 3, 2));
        let completions = reap_for(&mut ring, 1_000);
        assert_eq!(completions.len(), 1);
        assert_eq!(completions[0].result, Ok(4));
        assert!(completions[0].buffer_id().is_some());
        drop(ring);
        drop(bufs);
    }

    /// A connection that closes right after its write side was shut: its slot is closed only
    /// once the shutdown completed, so the slot's next tenant (installed when the close
    /// completes, as an accept would) is never shut by it. Before, the close went out behind
    /// the shutdown; the kernel runs every shutdown in an io-wq worker and finds the direct
    /// descriptor only then, so under load it shut the next connection accepted into the slot
    /// before its first byte (a TLS client saw EOF in its handshake).
    #[test]
    fn a_slot_is_closed_only_after_its_shutdown_so_its_next_tenant_is_not_shut() {
        const ROUNDS: u32 = 200;
        const SLOT: u32 = 3;
        let RingParts { mut ring, bufs } = small_ring(false);
        for round in 0..ROUNDS {
            let (ours_a, peer_a) = std::os::unix::net::UnixStream::pair().unwrap();
            let (ours_b, peer_b) = std::os::unix::net::UnixStream::pair().unwrap();
            ring.uring
                .submitter()
                .register_files_update(SLOT, &[ours_a.as_raw_fd()])
                .unwrap();
            ring.shutdown_write(SLOT, UserData::new(Op::Shutdown, SLOT, round));
            ring.cancel_and_close(
                SLOT,
                &[],
                UserData::new(Op::Cancel, SLOT, round),
                UserData::new(Op::Close, SLOT, round),
            );
            let (mut shut, mut closed) = (false, false);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let mut completions = Vec::new();
            while !(shut && closed) {
                assert!(std::time::Instant::now() < deadline, "round {round}");
                ring.submit().unwrap();
                ring.reap(&mut completions);
                for completion in &completions {
                    match completion.user_data.op() {
                        Some(Op::Shutdown) => {
                            shut = true;
                            ring.shutdown_done(SLOT);
                        }
                        Some(Op::Close) => {
                            closed = true;
                            // The slot is free: the next tenant moves in.
                            ring.uring
                                .submitter()
                                .register_files_update(SLOT, &[ours_b.as_raw_fd()])
                                .unwrap();
                        }
                        other => panic!("unexpected completion {other:?}"),
                    }
                }
            }
            peer_b.set_nonblocking(true).unwrap();
            let mut byte = [0u8; 1];
            match (&peer_b).read(&mut byte) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                other => panic!("round {round}: the next tenant was shut: read {other:?}"),
            }
            assert_eq!((&peer_a).read(&mut byte).unwrap(), 0, "round {round}");
            ring.uring
                .submitter()
                .register_files_update(SLOT, &[-1])
                .unwrap();
        }
        drop(ring);
        drop(bufs);
    }

    /// The shard enters the kernel only when it needs to (`needs_enter`): a ring with nothing
    /// queued and nothing pending does not need an enter, and a completion the kernel holds as
    /// task work for this thread (a poll woken by bytes another thread wrote) is never
    /// invisible: either it is already in the completion queue or the ring asks for an enter
    /// (IORING_SQ_TASKRUN), and that enter posts it.
    #[test]
    fn a_ring_needs_an_enter_only_for_entries_or_completions_held_as_task_work() {
        let (RingParts { mut ring, bufs }, _ours, peer) = small_ring_with_socket_at_3();
        assert!(!ring.needs_enter(), "a fresh ring has nothing to enter for");
        ring.poll_multishot(3, UserData::new(Op::Poll, 3, 1));
        assert!(ring.needs_enter(), "a queued entry needs an enter");
        assert!(reap_for(&mut ring, 20).is_empty(), "nothing to read yet");
        assert!(
            !ring.needs_enter(),
            "the poll waits in the kernel: nothing to enter for"
        );

        // Written from another thread; this one makes no syscall until it looks (a syscall's
        // return would run the task work and post the completion itself).
        let written = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = std::thread::spawn({
            let written = written.clone();
            move || {
                (&peer).write_all(b"ping").unwrap();
                written.store(true, std::sync::atomic::Ordering::Release);
                peer
            }
        });
        while !written.load(std::sync::atomic::Ordering::Acquire) {
            std::hint::spin_loop();
        }
        assert!(
            ring.has_completions() || ring.needs_enter(),
            "the poll's completion is neither posted nor announced"
        );
        let completions = reap_for(&mut ring, 1_000);
        assert_eq!(completions.len(), 1);
        assert_eq!(completions[0].user_data, UserData::new(Op::Poll, 3, 1));
        assert!(!ring.needs_enter());
        drop(writer.join().unwrap());
        drop(ring);
        drop(bufs);
    }

    /// A wait in the ring ends when a completion is posted (bytes written by another thread
    /// wake a poll), long before its timeout, and a wait with nothing coming ends at its
    /// timeout, not before, and reports nothing.
    #[test]
    fn a_wait_in_the_ring_ends_at_the_first_completion_or_at_its_timeout() {
        let (RingParts { mut ring, bufs }, _ours, peer) = small_ring_with_socket_at_3();
        ring.poll_multishot(3, UserData::new(Op::Poll, 3, 1));
        ring.submit().unwrap();

        let started = std::time::Instant::now();
        assert!(
            !ring.wait_for_completion(20_000).unwrap(),
            "nothing was written"
        );
        assert!(started.elapsed() >= std::time::Duration::from_millis(20));

        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(5));
            (&peer).write_all(b"ping").unwrap();
            peer
        });
        let started = std::time::Instant::now();
        assert!(ring.wait_for_completion(5_000_000).unwrap());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "woke only after {:?}",
            started.elapsed()
        );
        let mut completions = Vec::new();
        ring.reap(&mut completions);
        assert_eq!(completions.len(), 1);
        assert_eq!(completions[0].user_data, UserData::new(Op::Poll, 3, 1));
        drop(writer.join().unwrap());
        drop(ring);
        drop(bufs);
    }

    /// More requests than the submission and completion queues hold, queued without reaping:
    /// `push` neither spins nor panics, and every request completes once the caller reaps.
    /// (This kernel keeps overflowing completions on a list (IORING_FEAT_NODROP), so a
    /// working ring never refuses here; the test above forces the refusal.)
    #[test]
    fn more_requests_than_both_queues_hold_all_complete_once_reaped() {
        const REQUESTS: usize = 500;
        let RingParts { mut ring, bufs } = small_ring(false);
        queue_cancels(&mut ring, REQUESTS);
        let completions = reap_all(&mut ring, REQUESTS);
        assert_eq!(completions.len(), REQUESTS);
        for completion in &completions {
            assert_eq!(completion.result, Err(Errno(libc::ENOENT)));
        }
        drop(ring);
        drop(bufs);
    }
}
