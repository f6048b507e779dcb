//! Memory probes: user page faults per thread, RSS changes of the process.

mod common;

use std::time::Duration;

use common::{attach_to_self, current_tid, snapshot_until};

const TOUCHED_BYTES: usize = 64 << 20;
const PAGE_BYTES: usize = 4096;

#[test]
fn touching_fresh_pages_counts_faults_on_this_thread_and_grows_anon_rss() {
    let probes = attach_to_self(0);
    let before = probes.snapshot().unwrap();
    // 64 MiB is far above glibc's mmap threshold: fresh, never-touched pages
    // (THP is madvise-only here, so one fault per 4 KiB page).
    let mut region = vec![0u8; TOUCHED_BYTES];
    for i in (0..TOUCHED_BYTES).step_by(PAGE_BYTES) {
        region[i] = 1;
    }
    std::hint::black_box(&region);
    let tid = current_tid();
    let pages = (TOUCHED_BYTES / PAGE_BYTES) as u64;

    let snap = snapshot_until(&probes, Duration::from_secs(2), |s| {
        s.thread(tid).is_some_and(|t| t.page_faults >= pages)
    });
    let delta = snap.delta(&before);
    let t = delta.thread(tid).expect("the touching thread has an entry");
    assert!(
        t.page_faults >= pages,
        "{} faults for {pages} fresh pages",
        t.page_faults
    );
    assert!(delta.page_faults >= t.page_faults);
    assert!(
        delta.rss_changes.anon >= pages / 2,
        "rss_stat fires as anon pages are added: {:?}",
        delta.rss_changes
    );
    // The gauge is the kernel's approximate (per-CPU batched) counter.
    assert!(
        snap.rss_bytes.anon >= (TOUCHED_BYTES as u64) / 2,
        "anon rss {} B while 64 MiB is resident",
        snap.rss_bytes.anon
    );
    drop(region);
    let after_free = snapshot_until(&probes, Duration::from_secs(2), |s| {
        s.rss_bytes.anon < snap.rss_bytes.anon
    });
    assert!(
        after_free.rss_bytes.anon < snap.rss_bytes.anon,
        "unmapping 64 MiB lowers anon rss: {} -> {}",
        snap.rss_bytes.anon,
        after_free.rss_bytes.anon
    );
}
