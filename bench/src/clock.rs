//! The one clock: CLOCK_MONOTONIC in nanoseconds. It is system-wide on Linux, so the parent can
//! hand every worker process the same absolute phase boundaries and their per-second intervals
//! line up exactly when merged.

/// Nanoseconds per second, microsecond and millisecond.
pub const NS_PER_S: u64 = 1_000_000_000;
pub const NS_PER_MS: u64 = 1_000_000;
pub const NS_PER_US: u64 = 1_000;

/// Current CLOCK_MONOTONIC time in nanoseconds.
pub fn mono_ns() -> u64 {
    read_clock(libc::CLOCK_MONOTONIC)
}

/// CPU time consumed by this process (all threads, user + system) in nanoseconds.
pub fn process_cpu_ns() -> u64 {
    read_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn read_clock(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clock ids are always present on Linux.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock}) failed");
    ts.tv_sec as u64 * NS_PER_S + ts.tv_nsec as u64
}

/// Sleeps until the monotonic clock reaches `deadline_ns` (returns at once if it has passed).
pub fn sleep_until_ns(deadline_ns: u64) {
    let now = mono_ns();
    if deadline_ns > now {
        std::thread::sleep(std::time::Duration::from_nanos(deadline_ns - now));
    }
}
