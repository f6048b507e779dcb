//! The worker's wake-up at a nanosecond deadline. `epoll_wait` takes its timeout in whole
//! milliseconds (mio rounds a shorter one up to 1 ms), so a worker that slept until its next
//! scheduled request woke up to 1 ms late, and that lag went into every open-loop latency it
//! measured (`send_lag` P90 ~1 ms at 5,000/s, for every server alike). A timerfd armed at the
//! absolute deadline (CLOCK_MONOTONIC, the clock of [`crate::clock::mono_ns`]) wakes the epoll
//! loop on time instead; the epoll timeout stays as a backstop.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::clock::NS_PER_S;

pub struct WakeTimer {
    fd: OwnedFd,
    /// The deadline the timer is armed at (0: disarmed), so an unchanged deadline costs no
    /// syscall.
    armed_ns: u64,
}

impl WakeTimer {
    pub fn new() -> io::Result<WakeTimer> {
        // SAFETY: plain syscall with constant flags; the result is checked below.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: timerfd_create succeeded, so `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(WakeTimer { fd, armed_ns: 0 })
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Arms the timer to fire at `deadline_ns` (CLOCK_MONOTONIC), unless it already is.
    pub fn arm_at(&mut self, deadline_ns: u64) -> io::Result<()> {
        assert!(deadline_ns > 0, "0 means disarmed");
        if deadline_ns == self.armed_ns {
            return Ok(());
        }
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (deadline_ns / NS_PER_S) as libc::time_t,
                tv_nsec: (deadline_ns % NS_PER_S) as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; a null old value is allowed.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed_ns = deadline_ns;
        Ok(())
    }

    /// The timer fired: clears its expiration count (a deadline that passed while no one
    /// slept is read here too; the loop recomputes what is due from the clock).
    pub fn on_fired(&mut self) {
        let mut expirations = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a buffer of 8; the fd is non-blocking, so a
        // timer with nothing to report returns EAGAIN, which is fine to ignore.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                expirations.as_mut_ptr().cast(),
                expirations.len(),
            )
        };
        self.armed_ns = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{mono_ns, NS_PER_MS};

    /// Waits for the timer's fd to become readable (at most `limit_ms`), as epoll would.
    fn readable_within(timer: &WakeTimer, limit_ms: i32) -> bool {
        let mut fds = libc::pollfd {
            fd: timer.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut fds, 1, limit_ms) };
        n == 1 && fds.revents & libc::POLLIN != 0
    }

    #[test]
    fn fires_at_a_sub_millisecond_deadline_not_a_whole_millisecond_later() {
        let mut timer = WakeTimer::new().unwrap();
        // Median of several wake-ups 200 us out: a millisecond-rounded wait would be >= 1 ms.
        let mut lateness_us: Vec<u64> = (0..9)
            .map(|_| {
                let deadline = mono_ns() + 200_000;
                timer.arm_at(deadline).unwrap();
                assert!(readable_within(&timer, 1_000));
                let woke = mono_ns();
                timer.on_fired();
                assert!(woke >= deadline, "woke before the deadline");
                (woke - deadline) / 1_000
            })
            .collect();
        lateness_us.sort_unstable();
        assert!(
            lateness_us[4] * 1_000 < NS_PER_MS / 2,
            "median lateness {} us: {lateness_us:?}",
            lateness_us[4]
        );
    }

    #[test]
    fn rearming_moves_the_deadline_and_firing_clears_the_fd() {
        let mut timer = WakeTimer::new().unwrap();
        timer.arm_at(mono_ns() + 10 * NS_PER_S).unwrap();
        assert!(!readable_within(&timer, 20), "armed 10 s out, yet readable");
        timer.arm_at(mono_ns() + NS_PER_MS).unwrap();
        assert!(readable_within(&timer, 1_000));
        timer.on_fired();
        assert!(!readable_within(&timer, 0), "read, yet still readable");
    }
}
