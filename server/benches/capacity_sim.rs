//! Capacity simulation at full scale, in one process and without sockets: a ConnSlab of
//! 10,000,000 slots, every slot opened, and 10,000,000 timer-wheel entries spread over one
//! heartbeat interval. Reports Holdfast's own bytes per connection (RSS deltas / N) and the
//! cost of one heartbeat sweep: advancing the wheel over a whole interval, checking each entry
//! against its slot (generation, state, deadline) and re-inserting it one interval on.
//!
//!   cargo bench -p holdfast-server --bench capacity_sim
//!   CAPACITY_SIM_CONNECTIONS=1000000 cargo bench -p holdfast-server --bench capacity_sim
//!
//! docs/CAPACITY.md has the figures. The kernel's share (sockets, io_uring requests) is not here:
//! it is measured with real sockets by tuning/measure-capacity.

use std::time::{Duration, Instant};

use holdfast_server::config::Config;
use holdfast_server::conn::{ConnSlab, SessionState};
use holdfast_server::timer::wheel::TimerWheel;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Connections simulated unless CAPACITY_SIM_CONNECTIONS says otherwise.
const CONNECTIONS_DEFAULT: u32 = 10_000_000;
/// Full sweeps timed unless CAPACITY_SIM_SWEEPS says otherwise; the median is reported.
const SWEEPS_DEFAULT: usize = 5;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    let n: u32 = std::env::var("CAPACITY_SIM_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CONNECTIONS_DEFAULT);
    let config = Config::default();
    let interval_ticks = config.heartbeat_ticks(config.heartbeat_interval_ms);
    println!(
        "capacity_sim: {n} connections, heartbeat {} ms = {interval_ticks} ticks of {} ms",
        config.heartbeat_interval_ms, config.timer_tick_ms
    );

    let rss_start = rss_bytes();
    let started = Instant::now();
    let mut slab = ConnSlab::new(n);
    for slot in 0..n {
        // Connections arrive spread over one interval, so their deadlines are too.
        slab.open(slot, slot % interval_ticks);
    }
    let slab_time = started.elapsed();
    let rss_slab = rss_bytes();

    let started = Instant::now();
    let mut wheel = TimerWheel::new();
    for slot in 0..n {
        wheel.insert(slab.key(slot), slot % interval_ticks);
    }
    let wheel_time = started.elapsed();
    let rss_wheel = rss_bytes();
    assert_eq!(wheel.len(), n as usize);

    let sweeps_wanted: usize = std::env::var("CAPACITY_SIM_SWEEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SWEEPS_DEFAULT);
    let mut sweeps = Vec::with_capacity(sweeps_wanted);
    let mut visited = 0u64;
    for _ in 0..sweeps_wanted {
        let started = Instant::now();
        for _ in 0..interval_ticks {
            let now = wheel.now_tick();
            let due = wheel.advance();
            for entry in &due {
                visited += 1;
                // What Shard::on_due does for an idle connection that is not due yet: check the
                // slot (generation, state), recompute its deadline, re-insert.
                let conn = slab.get_mut(*entry).expect("live slot");
                debug_assert_eq!(conn.state, SessionState::AwaitHello);
                conn.last_activity_tick = now;
                wheel.insert(*entry, now + interval_ticks);
            }
            wheel.recycle(due);
        }
        sweeps.push(started.elapsed());
    }
    let rss_end = rss_bytes();
    assert_eq!(wheel.len(), n as usize, "every entry re-inserted");
    let sweep = median(sweeps.clone());
    let per_conn = |bytes: u64| bytes as f64 / f64::from(n);

    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| slab: RSS delta / N (Conn is {} B) | {:.1} B |",
        std::mem::size_of::<holdfast_server::conn::Conn>(),
        per_conn(rss_slab - rss_start)
    );
    println!(
        "| wheel: RSS delta / N (entry is {} B) | {:.1} B |",
        std::mem::size_of::<holdfast_server::conn::ConnKey>(),
        per_conn(rss_wheel - rss_slab)
    );
    println!(
        "| slab + wheel after {sweeps_wanted} sweeps: RSS delta / N | {:.1} B |",
        per_conn(rss_end - rss_start)
    );
    println!(
        "| slab + wheel after {sweeps_wanted} sweeps: RSS delta | {:.1} MiB |",
        (rss_end - rss_start) as f64 / (1 << 20) as f64
    );
    println!(
        "| open {n} slots | {:.0} ms |",
        slab_time.as_secs_f64() * 1e3
    );
    println!(
        "| insert {n} wheel entries | {:.0} ms |",
        wheel_time.as_secs_f64() * 1e3
    );
    println!(
        "| one heartbeat sweep, median of {sweeps_wanted} ({:?}) | {:.0} ms |",
        sweeps
            .iter()
            .map(|d| (d.as_secs_f64() * 1e3).round() as u64)
            .collect::<Vec<_>>(),
        sweep.as_secs_f64() * 1e3
    );
    println!(
        "| per entry visited | {:.1} ns |",
        sweep.as_secs_f64() * 1e9 / f64::from(n)
    );
    println!(
        "| per tick ({} entries) | {:.0} us |",
        n / interval_ticks,
        sweep.as_secs_f64() * 1e6 / f64::from(interval_ticks)
    );
    assert_eq!(visited, sweeps_wanted as u64 * u64::from(n));
}
