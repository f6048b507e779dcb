//! A provided-buffer ring (IORING_REGISTER_PBUF_RING): a per-shard pool of receive buffers the
//! kernel picks from when a recv completes, so no connection holds a buffer while it waits.
//!
//! Invariant: a buffer id is owned either by the kernel (published in the ring) or by exactly
//! one completion being processed; [`BufRing::recycle`] hands it back exactly once.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{types::BufRingEntry, IoUring};

/// One shard's provided-buffer ring and the buffers it hands out.
pub(crate) struct BufRing {
    /// Page-aligned, mmap'd array of `entries` ring descriptors shared with the kernel.
    ring_ptr: *mut BufRingEntry,
    ring_bytes: usize,
    /// The receive buffers themselves: `entries * buffer_bytes`, allocated once.
    buffers: Box<[u8]>,
    buffer_bytes: u32,
    entries: u16,
    /// Our copy of the tail; published to the kernel by [`BufRing::publish`].
    tail: u16,
    group_id: u16,
}

impl BufRing {
    /// Allocates and registers a ring of `entries` buffers of `buffer_bytes` each, all handed to
    /// the kernel. `entries` must be a power of two no larger than 32,768.
    pub(crate) fn register(
        uring: &IoUring,
        group_id: u16,
        entries: u16,
        buffer_bytes: u32,
    ) -> io::Result<BufRing> {
        assert!(entries.is_power_of_two() && entries <= 32_768);
        assert!(buffer_bytes > 0);
        let ring_bytes = usize::from(entries) * std::mem::size_of::<BufRingEntry>();
        // SAFETY: anonymous private mapping with no address hint; the result is checked below.
        let ring_addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ring_addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut ring = BufRing {
            ring_ptr: ring_addr.cast::<BufRingEntry>(),
            ring_bytes,
            // A non-zero fill touches every page now: the pool is resident from the start, so
            // RSS growth under load measures what sessions add, not the pool paging in.
            buffers: vec![0xa5u8; usize::from(entries) * buffer_bytes as usize].into_boxed_slice(),
            buffer_bytes,
            entries,
            tail: 0,
            group_id,
        };
        // SAFETY: the mapping is page-aligned, `entries` descriptors long, and lives (owned by
        // `ring`) until Drop unmaps it, which happens after the ring fd is closed (Shard drops
        // its BufRing after its IoUring; see ring::Ring field order).
        unsafe {
            uring.submitter().register_buf_ring_with_flags(
                ring_addr as u64,
                entries,
                group_id,
                0,
            )?
        };
        for buffer_id in 0..entries {
            ring.push(buffer_id);
        }
        ring.publish();
        Ok(ring)
    }

    pub(crate) fn group_id(&self) -> u16 {
        self.group_id
    }

    pub(crate) fn buffer_bytes(&self) -> u32 {
        self.buffer_bytes
    }

    /// The first `len` bytes the kernel wrote into buffer `buffer_id`.
    pub(crate) fn filled(&self, buffer_id: u16, len: usize) -> &[u8] {
        assert!(buffer_id < self.entries);
        assert!(len <= self.buffer_bytes as usize);
        let start = usize::from(buffer_id) * self.buffer_bytes as usize;
        &self.buffers[start..start + len]
    }

    /// As [`BufRing::filled`], writable: a transport unmasks or decrypts in place. The buffer
    /// is ours from the recv's completion until [`BufRing::recycle`].
    pub(crate) fn filled_mut(&mut self, buffer_id: u16, len: usize) -> &mut [u8] {
        assert!(buffer_id < self.entries);
        assert!(len <= self.buffer_bytes as usize);
        let start = usize::from(buffer_id) * self.buffer_bytes as usize;
        &mut self.buffers[start..start + len]
    }

    /// Returns buffer `buffer_id` to the kernel (visible after the next [`BufRing::publish`]).
    pub(crate) fn recycle(&mut self, buffer_id: u16) {
        assert!(buffer_id < self.entries);
        self.push(buffer_id);
    }

    fn push(&mut self, buffer_id: u16) {
        let index = usize::from(self.tail & (self.entries - 1));
        let addr =
            self.buffers.as_ptr() as u64 + u64::from(buffer_id) * u64::from(self.buffer_bytes);
        // SAFETY: `index < entries`, so the descriptor lies inside the mapping. The kernel only
        // reads descriptors between its head and the published tail; this one is past the
        // published tail until `publish`, so we are its only accessor.
        let entry = unsafe { &mut *self.ring_ptr.add(index) };
        entry.set_addr(addr);
        entry.set_len(self.buffer_bytes);
        entry.set_bid(buffer_id);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes every buffer pushed since the last publish with one release store of the tail.
    pub(crate) fn publish(&mut self) {
        // SAFETY: the tail field overlays descriptor 0's `resv` in the mapping, which is
        // 2-aligned and shared with the kernel; it is accessed only atomically here.
        let tail = unsafe { &*(BufRingEntry::tail(self.ring_ptr).cast::<AtomicU16>()) };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `register` with this size and is unmapped once.
        unsafe { libc::munmap(self.ring_ptr.cast(), self.ring_bytes) };
    }
}
