//! Attach to a running process and print what the probes see, every interval.
//!
//! `cargo run -p holdfast-ebpf --example probe -- PID [PORT] [INTERVAL_S] [--json]`
//!
//! The server's `holdfast probe` subcommand is the supported tool; this is
//! the crate's own smoke test against a real process.

use std::time::Duration;

use holdfast_ebpf::{ProbeConfig, Probes};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let mut numbers = args.iter().filter(|a| *a != "--json");
    let usage = "usage: probe PID [PORT] [INTERVAL_S] [--json]";
    let pid: u32 = numbers.next().and_then(|a| a.parse().ok()).expect(usage);
    let port: u16 = numbers.next().map_or(0, |a| a.parse().expect(usage));
    let interval_s: u64 = numbers.next().map_or(5, |a| a.parse().expect(usage));

    let probes = match Probes::attach(&ProbeConfig { pid, port }) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{} ({})", e, e.code());
            std::process::exit(1);
        }
    };
    let mut before = probes.snapshot().expect("snapshot");
    loop {
        std::thread::sleep(Duration::from_secs(interval_s));
        let now = probes.snapshot().expect("snapshot");
        let delta = now.delta(&before);
        if json {
            println!("{}", delta.to_json());
        } else {
            println!("{}", delta.render_text());
        }
        before = now;
    }
}
