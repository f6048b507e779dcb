//! Probe overhead on a loopback ping-pong, probes off vs on in the same run.
//!
//! `cargo run --release -p holdfast-ebpf --example overhead [-- ROUNDS RUNS HOLD_S]`
//!
//! Two threads of this process exchange 64-byte messages over one loopback
//! TCP connection; each round trip is two sends, two receives and (usually)
//! two context switches per side, so every probe family fires on every
//! round trip. Reports round trips per CPU-second (both threads' on-CPU time
//! from /proc/thread-self/schedstat), medians over alternating runs, and
//! prints the last probes-on snapshot.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use holdfast_ebpf::{ProbeConfig, Probes};

const MESSAGE_BYTES: usize = 64;

/// Nanoseconds the calling thread has spent on a CPU.
fn thread_cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("schedstat field 1")
}

struct Run {
    round_trips_per_cpu_s: f64,
    wall_us_per_round_trip: f64,
}

fn ping_pong(listener: &TcpListener, rounds: u32) -> Run {
    let addr = listener.local_addr().unwrap();
    let start = Instant::now();
    let client = std::thread::spawn(move || {
        let cpu0 = thread_cpu_ns();
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_nodelay(true).unwrap();
        let mut buf = [0u8; MESSAGE_BYTES];
        for _ in 0..rounds {
            c.write_all(&buf).unwrap();
            c.read_exact(&mut buf).unwrap();
        }
        thread_cpu_ns() - cpu0
    });
    let cpu0 = thread_cpu_ns();
    let (mut s, _) = listener.accept().unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = [0u8; MESSAGE_BYTES];
    for _ in 0..rounds {
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    }
    let server_cpu_ns = thread_cpu_ns() - cpu0;
    let client_cpu_ns = client.join().unwrap();
    let wall = start.elapsed();
    let cpu_s = (server_cpu_ns + client_cpu_ns) as f64 / 1e9;
    Run {
        round_trips_per_cpu_s: f64::from(rounds) / cpu_s,
        wall_us_per_round_trip: wall.as_secs_f64() * 1e6 / f64::from(rounds),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: u32 = args.next().map_or(20_000, |a| a.parse().expect("ROUNDS"));
    let runs: usize = args.next().map_or(5, |a| a.parse().expect("RUNS"));
    // Keep the last probes attached this long (to read `bpftool prog show`
    // run_time_ns with kernel.bpf_stats_enabled=1).
    let hold_s: u64 = args.next().map_or(0, |a| a.parse().expect("HOLD_S"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = ProbeConfig {
        pid: std::process::id(),
        port: listener.local_addr().unwrap().port(),
    };
    if let Err(reason) = holdfast_ebpf::availability() {
        eprintln!("eBPF unavailable: {reason}");
        std::process::exit(2);
    }
    ping_pong(&listener, rounds / 10); // warm up

    let (mut off, mut on) = (Vec::new(), Vec::new());
    let (mut off_wall, mut on_wall) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..runs {
        let r = ping_pong(&listener, rounds);
        off.push(r.round_trips_per_cpu_s);
        off_wall.push(r.wall_us_per_round_trip);

        let probes = Probes::attach(&cfg).expect("attach");
        let r = ping_pong(&listener, rounds);
        on.push(r.round_trips_per_cpu_s);
        on_wall.push(r.wall_us_per_round_trip);
        last = Some((probes.snapshot().expect("snapshot"), probes));
    }
    let (last, _probes) = last.expect("runs >= 1");
    let (off, on) = (median(off), median(on));
    println!(
        "{rounds} round trips x {runs} runs: probes off {off:.0} rt/cpu-s ({:.1} us/rt wall), on {on:.0} rt/cpu-s ({:.1} us/rt wall): cost {:.1}% of CPU per round trip",
        median(off_wall),
        median(on_wall),
        (off / on - 1.0) * 100.0
    );
    println!("\n{}", last.render_text());
    std::thread::sleep(std::time::Duration::from_secs(hold_s));
}
