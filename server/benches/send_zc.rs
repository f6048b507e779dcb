//! Where zero-copy send (IORING_OP_SEND_ZC) starts to pay, measured the only way this machine
//! allows: over loopback. For each frame size, one thread sends the same buffer again and again
//! through its own io_uring (one request in flight; for SEND_ZC the buffer is reused only after
//! the notification CQE) to a reader thread on 127.0.0.1, once with SEND and once with SEND_ZC,
//! alternating; the sender's thread CPU time per KiB is the cost. Medians of the runs.
//!
//!   cargo bench -p holdfast-server --bench send_zc
//!   SEND_ZC_RUNS=7 SEND_ZC_MIB=512 cargo bench -p holdfast-server --bench send_zc
//!
//! docs/PERFORMANCE.md ("Ring setup") has the figures. On loopback the kernel copies zero-copy
//! data when it reaches the local receiver ("deferred copy", msg_zerocopy.rst), so this shows
//! what SEND_ZC costs where it cannot avoid the copy; with a NIC the copy goes away.

#[path = "support/measure.rs"]
mod measure;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::{cqueue, opcode, types, IoUring};
use measure::{env_or, thread_cpu_ns};

/// Frame sizes compared, bytes.
const SIZES_BYTES: [usize; 6] = [1024, 4096, 16 * 1024, 64 * 1024, 256 * 1024, 1024 * 1024];
/// Runs per size and mode unless SEND_ZC_RUNS says otherwise; the median is reported.
const RUNS_DEFAULT: usize = 5;
/// MiB sent per run unless SEND_ZC_MIB says otherwise.
const MIB_PER_RUN_DEFAULT: usize = 256;
/// The reader's buffer.
const READ_BUFFER_BYTES: usize = 1024 * 1024;
/// A run that takes longer than this is a bug (the reader or the ring stalled).
const RUN_TIMEOUT_S: u64 = 60;

/// Sends `total_bytes` in `frame_bytes` sends; returns the sender's CPU ns per KiB.
fn run(frame_bytes: usize, total_bytes: usize, zero_copy: bool) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; READ_BUFFER_BYTES];
        let mut received = 0;
        while received < total_bytes {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => received += n,
                Err(e) => panic!("read: {e}"),
            }
        }
        received
    });
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_secs(RUN_TIMEOUT_S)))
        .expect("timeout");
    let fd = types::Fd(stream.as_raw_fd());
    let mut ring = IoUring::new(8).expect("io_uring");
    let frame = vec![0xa5u8; frame_bytes];
    let started_cpu_ns = thread_cpu_ns();
    let mut sent_total = 0usize;
    while sent_total < total_bytes {
        let mut offset = 0;
        while offset < frame_bytes {
            let rest = &frame[offset..];
            let len = rest.len() as u32;
            let entry = if zero_copy {
                opcode::SendZc::new(fd, rest.as_ptr(), len).build()
            } else {
                opcode::Send::new(fd, rest.as_ptr(), len).build()
            };
            // SAFETY: `frame` outlives the request: we wait below for its completion and, for
            // SEND_ZC, for the notification that the kernel no longer reads the buffer.
            unsafe { ring.submission().push(&entry).expect("queue has room") };
            let mut result = None;
            let mut notified = !zero_copy;
            while result.is_none() || !notified {
                ring.submit_and_wait(1).expect("submit");
                for cqe in ring.completion() {
                    if cqueue::notif(cqe.flags()) {
                        notified = true;
                        continue;
                    }
                    let res = cqe.result();
                    assert!(res > 0, "send failed: {res}");
                    // A SEND_ZC that used the buffer says so with F_MORE: a notification follows.
                    if zero_copy && !cqueue::more(cqe.flags()) {
                        notified = true;
                    }
                    result = Some(res as usize);
                }
            }
            offset += result.expect("completed");
        }
        sent_total += frame_bytes;
    }
    let cpu_ns = thread_cpu_ns() - started_cpu_ns;
    drop(stream);
    let received = reader.join().expect("reader");
    assert!(
        received >= total_bytes,
        "reader got {received} of {total_bytes}"
    );
    cpu_ns as f64 / (sent_total as f64 / 1024.0)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let runs = env_or("SEND_ZC_RUNS", RUNS_DEFAULT).max(1);
    let total_bytes = env_or("SEND_ZC_MIB", MIB_PER_RUN_DEFAULT).max(1) * 1024 * 1024;
    println!(
        "SEND vs SEND_ZC over loopback, {} MiB per run, {runs} runs each, median sender CPU",
        total_bytes / (1024 * 1024)
    );
    println!("| frame bytes | SEND ns per KiB | SEND_ZC ns per KiB | SEND_ZC / SEND |");
    println!("|---|---|---|---|");
    for frame_bytes in SIZES_BYTES {
        let mut plain = Vec::with_capacity(runs);
        let mut zero_copy = Vec::with_capacity(runs);
        for _ in 0..runs {
            plain.push(run(frame_bytes, total_bytes, false));
            zero_copy.push(run(frame_bytes, total_bytes, true));
        }
        let (plain, zero_copy) = (median(plain), median(zero_copy));
        println!(
            "| {frame_bytes} | {plain:.0} | {zero_copy:.0} | {:.2} |",
            zero_copy / plain
        );
    }
}
