//! The shard's own io_uring ring. Everything that touches an SQE, a CQE, the fixed-file table or
//! the provided-buffer ring lives in this module; everything above it is safe Rust.
//!
//! - [`Ring`]: setup, submission, reaping, and one method per operation the shard issues.
//! - [`buf_ring`]: the provided-buffer ring receive buffers come from.
//! - [`user_data`]: how an operation, a slot and a generation are packed into a CQE's user_data.
//!
//! Memory safety of in-flight operations: the only operation that points the kernel at user
//! memory is send, and [`Ring::send`] takes the bytes by value (`Bytes`) and keeps them in
//! `sends_by_slot` until the send's CQE is reaped ([`Ring::take_sent`]). Receive buffers
//! belong to the buffer ring, which outlives the io_uring (field order below).

pub mod buf_ring;
pub mod user_data;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use bytes::Bytes;
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use self::buf_ring::BufRing;
use self::user_data::UserData;

/// How a shard's ring is built. Every field is a config key (see config.rs).
#[derive(Clone, Debug)]
pub struct RingParams {
    pub sq_entries: u32,
    pub cq_entries: u32,
    /// Size of the fixed-file (direct descriptor) table; also the shard's connection limit.
    pub fixed_files: u32,
    pub recv_buffers: u16,
    pub recv_buffer_bytes: u32,
}

/// One reaped completion.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    pub user_data: UserData,
    pub result: i32,
    pub flags: u32,
}

impl Completion {
    /// The multishot request stays armed (IORING_CQE_F_MORE).
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The provided buffer a recv completed into.
    pub fn buffer_id(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }

    /// The socket still had data after this recv (IORING_CQE_F_SOCK_NONEMPTY).
    pub fn socket_nonempty(&self) -> bool {
        cqueue::sock_nonempty(self.flags)
    }
}

/// A shard's ring. The shard owns it beside its [`BufRing`] (so frames can be read from a
/// receive buffer while replies are queued on the ring) and must drop the ring first: see
/// [`RingParts`].
pub struct Ring {
    uring: IoUring,
    eventfd: OwnedFd,
    /// The bytes of the send in flight on each slot (40 bytes per slot, allocated up front: a
    /// map sized for a burst keeps its peak capacity, which cost ~130 B per idle session).
    sends_by_slot: Box<[Option<(UserData, Bytes)>]>,
    /// Sends of closed connections whose slot got a new tenant before their completion.
    sends_orphaned: HashMap<UserData, Bytes>,
    sends_in_flight: usize,
    recv_buffer_group: u16,
    recv_buffer_bytes: u32,
}

/// A ring and its receive buffers. Field order is drop order: the io_uring is closed (every
/// request cancelled) before the buffer ring's memory is unmapped. Keep this order wherever
/// the two are stored.
pub struct RingParts {
    pub ring: Ring,
    pub bufs: BufRing,
}

/// Recv buffer group id (one group per ring).
const RECV_BUFFER_GROUP: u16 = 0;

impl RingParts {
    /// Builds a shard's ring: fixed-file table, eventfd, provided-buffer ring.
    pub fn new(params: &RingParams) -> io::Result<RingParts> {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(params.cq_entries).setup_submit_all();
        // COOP_TASKRUN: completions are posted at our next enter instead of interrupting the
        // shard thread. SINGLE_ISSUER + DEFER_TASKRUN was tried and dropped: with it, the
        // multishot accept never completed while the shard slept on the eventfd through
        // glommio (docs/PERFORMANCE.md, "Ring setup").
        builder.setup_coop_taskrun();
        let uring = builder.build(params.sq_entries)?;
        uring
            .submitter()
            .register_files_sparse(params.fixed_files)?;
        // SAFETY: eventfd(2) returns a fresh descriptor or -1, checked before taking ownership.
        let eventfd = unsafe {
            let fd = libc::eventfd(0, libc::EFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd)
        };
        uring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        let bufs = BufRing::register(
            &uring,
            RECV_BUFFER_GROUP,
            params.recv_buffers,
            params.recv_buffer_bytes,
        )?;
        let ring = Ring {
            uring,
            eventfd,
            sends_by_slot: (0..params.fixed_files).map(|_| None).collect(),
            sends_orphaned: HashMap::new(),
            sends_in_flight: 0,
            recv_buffer_group: bufs.group_id(),
            recv_buffer_bytes: bufs.buffer_bytes(),
        };
        Ok(RingParts { ring, bufs })
    }
}

impl Ring {
    /// The eventfd the kernel signals on every completion; the shard awaits it when idle.
    pub fn eventfd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Whether SQEs are queued and not yet handed to the kernel.
    pub fn has_unsubmitted(&mut self) -> bool {
        !self.uring.submission().is_empty()
    }

    /// Submits queued SQEs without waiting.
    pub fn submit(&mut self) -> io::Result<usize> {
        let result = self.uring.submit();
        match result {
            Ok(n) => Ok(n),
            // EBUSY/EAGAIN: the CQ is full or the kernel is short of memory; reap and retry.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EBUSY) | Some(libc::EAGAIN) | Some(libc::EINTR)
                ) =>
            {
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    /// Turns the kernel's eventfd signal on completions on or off (IORING_CQ_EVENTFD_DISABLED).
    /// The shard keeps it off while it is busy reaping anyway, so a completion costs no
    /// eventfd wakeup, and turns it on only before it sleeps.
    pub fn set_eventfd_notify(&mut self, enabled: bool) {
        let cq = self.uring.completion();
        if enabled {
            cq.enable_eventfd();
        } else {
            cq.disable_eventfd();
        }
    }

    /// Whether completions are waiting to be reaped.
    pub fn has_completions(&mut self) -> bool {
        let mut cq = self.uring.completion();
        cq.sync();
        !cq.is_empty()
    }

    /// Moves every available completion into `out` (cleared first).
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        out.clear();
        let mut cq = self.uring.completion();
        cq.sync();
        for cqe in &mut cq {
            out.push(Completion {
                user_data: UserData(cqe.user_data()),
                result: cqe.result(),
                flags: cqe.flags(),
            });
        }
    }

    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry built by this module points only at memory that outlives the
            // request: the listener fd and fixed slots are closed through this ring, recv uses
            // provided buffers whose BufRing is dropped after this ring (RingParts), and send
            // bytes are held in `sends_by_slot` until their completion is reaped.
            let pushed = unsafe { self.uring.submission().push(&entry) };
            if pushed.is_ok() {
                return;
            }
            // SQ full: hand what we have to the kernel and try again.
            if let Err(e) = self.uring.submit() {
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EBUSY) | Some(libc::EAGAIN) | Some(libc::EINTR)
                ) {
                    panic!("io_uring submit failed with a full SQ: {e}");
                }
            }
        }
    }

    /// Multishot accept on `listener` into auto-allocated direct descriptors (no SOCK_CLOEXEC:
    /// direct descriptors are not in the fd table, and the kernel refuses the flag with them).
    pub fn accept_multishot(&mut self, listener: RawFd, user_data: UserData) {
        let entry = opcode::AcceptMulti::new(types::Fd(listener))
            .allocate_file_index(true)
            .build()
            .user_data(user_data.0);
        self.push(entry);
    }

    /// Multishot readiness poll (POLLIN | POLLRDHUP) on a direct descriptor.
    pub fn poll_multishot(&mut self, slot: u32, user_data: UserData) {
        let events = (libc::POLLIN | libc::POLLRDHUP) as u32;
        let entry = opcode::PollAdd::new(types::Fixed(slot), events)
            .multi(true)
            .build()
            .user_data(user_data.0);
        self.push(entry);
    }

    /// One recv into a buffer the kernel picks from the provided-buffer ring.
    pub fn recv(&mut self, slot: u32, user_data: UserData) {
        let entry = opcode::Recv::new(
            types::Fixed(slot),
            std::ptr::null_mut(),
            self.recv_buffer_bytes,
        )
        .buf_group(self.recv_buffer_group)
        .build()
        .flags(squeue::Flags::BUFFER_SELECT)
        .user_data(user_data.0);
        self.push(entry);
    }

    /// Arms a multishot recv on a direct descriptor: each arrival of bytes completes with a
    /// provided buffer and IORING_CQE_F_MORE, until it is cancelled, the buffer ring runs dry
    /// (ENOBUFS), or the peer closes. Costs ~600 bytes more kernel memory than a poll while
    /// armed (FACTS.md), so only busy connections hold one. No `len` cap: one (2 KiB per
    /// completion) cost a 1,000-connection echo ~10% (PERFORMANCE.md).
    pub fn recv_multishot(&mut self, slot: u32, user_data: UserData) {
        let entry = opcode::RecvMulti::new(types::Fixed(slot), self.recv_buffer_group)
            .build()
            .user_data(user_data.0);
        self.push(entry);
    }

    /// Sends `bytes` on a direct descriptor. The ring keeps `bytes` alive until the completion
    /// is reaped; get them back with [`Ring::take_sent`]. One send per connection at a time.
    pub fn send(&mut self, slot: u32, user_data: UserData, bytes: Bytes) {
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

    /// Returns the bytes of a completed send (exactly once per [`Ring::send`]).
    pub fn take_sent(&mut self, user_data: UserData) -> Bytes {
        self.sends_in_flight -= 1;
        let held = &mut self.sends_by_slot[user_data.slot() as usize];
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

    /// Number of sends whose completion has not been reaped yet.
    pub fn sends_in_flight(&self) -> usize {
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
    pub fn cancel_and_close(
        &mut self,
        slot: u32,
        targets: &[UserData],
        cancel_user_data: UserData,
        close_user_data: UserData,
    ) {
        for target in targets {
            debug_assert_eq!(target.slot(), slot, "a cancel names a request of this slot");
            self.cancel(*target, cancel_user_data);
        }
        let close = opcode::Close::new(types::Fixed(slot))
            .build()
            .user_data(close_user_data.0);
        self.push(close);
    }

    /// Cancels the request with `target` user_data (used to stop the multishot accept).
    pub fn cancel(&mut self, target: UserData, user_data: UserData) {
        let entry = opcode::AsyncCancel::new(target.0)
            .build()
            .user_data(user_data.0);
        self.push(entry);
    }

    /// Half-closes the write side of a direct descriptor after the last bytes are queued.
    pub fn shutdown_write(&mut self, slot: u32, user_data: UserData) {
        let entry = opcode::Shutdown::new(types::Fixed(slot), libc::SHUT_WR)
            .build()
            .user_data(user_data.0);
        self.push(entry);
    }
}
