//! What /proc says about the server: CPU time (/proc/PID/stat utime + stime), resident memory
//! (/proc/PID/status VmRSS) and kernel slab caches (/proc/slabinfo, needs root).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Serialize;

/// Slab caches that grow with sessions: io_uring requests, TCP sockets, socket inodes, files.
pub const SLAB_ROWS: [&str; 5] = ["io_kiocb", "TCP", "sock_inode_cache", "filp", "dentry"];
/// Rows where each client socket also holds one object (client and server share the kernel on
/// loopback): subtracting the client's count leaves the server's.
pub const SLAB_ROWS_ONE_PER_CLIENT_SOCKET: [&str; 4] =
    ["TCP", "sock_inode_cache", "filp", "dentry"];

fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf has no memory arguments.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// CPU time (user + system, all threads, including exited ones) of `pid` in microseconds.
pub fn cpu_us(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    parse_stat_cpu_ticks(&stat).map(|ticks| ticks * 1_000_000 / clock_ticks_per_s())
}

/// utime + stime (fields 14 and 15) from a /proc/PID/stat line, in clock ticks.
pub fn parse_stat_cpu_ticks(stat: &str) -> Result<u64> {
    // The command name (field 2) may hold spaces and parentheses: fields restart after the last ')'.
    let rest = &stat[stat.rfind(')').context("no ')' in stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 -> index 11, stime index 12.
    let utime: u64 = fields.get(11).context("stat too short")?.parse()?;
    let stime: u64 = fields.get(12).context("stat too short")?.parse()?;
    Ok(utime + stime)
}

/// CPU time (user + system) of each thread of `pid` in microseconds, keyed by thread name
/// (/proc/PID/task/TID/stat; threads of one name, e.g. the shards' truncated
/// `holdfast-shard-`, are summed). Threads that exit between listing and reading are skipped.
pub fn thread_cpu_us(pid: u32) -> Result<BTreeMap<String, u64>> {
    let dir = format!("/proc/{pid}/task");
    let mut by_name = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("read {dir}"))? {
        let Ok(entry) = entry else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let name = stat_comm(&stat).unwrap_or("?").to_owned();
        let ticks = parse_stat_cpu_ticks(&stat)?;
        *by_name.entry(name).or_default() += ticks * 1_000_000 / clock_ticks_per_s();
    }
    Ok(by_name)
}

/// CPU time of every live thread of `pid` in nanoseconds: the sum of the first field of
/// /proc/PID/task/TID/schedstat (time on CPU, ns resolution, where /proc/PID/stat counts clock
/// ticks of 10 ms). Threads that exited are not counted: use it over short spans (a burst).
pub fn threads_cpu_ns(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut sum = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("read {dir}"))? {
        let Ok(entry) = entry else { continue };
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        sum += parse_schedstat_ns(&text)?;
    }
    Ok(sum)
}

/// The time on CPU (first field, ns) of a schedstat line.
pub fn parse_schedstat_ns(text: &str) -> Result<u64> {
    Ok(text
        .split_whitespace()
        .next()
        .context("empty schedstat")?
        .parse()?)
}

/// The command name (field 2, between the first '(' and the last ')') of a stat line.
fn stat_comm(stat: &str) -> Option<&str> {
    stat.get(stat.find('(')? + 1..stat.rfind(')')?)
}

/// VmRSS of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .context("bad VmRSS")?
        .parse()?;
    Ok(kb * 1024)
}

/// One /proc/slabinfo row: active objects and object size.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct SlabRow {
    pub active_objs: u64,
    pub objsize_bytes: u64,
}

/// The [`SLAB_ROWS`] of /proc/slabinfo (an error if it is unreadable, e.g. without root).
pub fn slab_rows() -> Result<BTreeMap<String, SlabRow>> {
    let text =
        std::fs::read_to_string("/proc/slabinfo").context("read /proc/slabinfo (needs root)")?;
    Ok(parse_slabinfo(&text))
}

pub fn parse_slabinfo(text: &str) -> BTreeMap<String, SlabRow> {
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 || !SLAB_ROWS.contains(&fields[0]) {
            continue;
        }
        if let (Ok(active_objs), Ok(objsize_bytes)) = (fields[1].parse(), fields[3].parse()) {
            rows.insert(
                fields[0].to_owned(),
                SlabRow {
                    active_objs,
                    objsize_bytes,
                },
            );
        }
    }
    rows
}

/// Slab memory in bytes from /proc/meminfo.
pub fn meminfo_slab_bytes() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("Slab:"))
        .context("no Slab in meminfo")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("bad Slab line")?
        .parse::<u64>()?
        * 1024)
}

/// A memory snapshot of the server and the kernel.
#[derive(Clone, Debug, Serialize)]
pub struct MemorySnapshot {
    pub rss_bytes: u64,
    pub slab: Option<BTreeMap<String, SlabRow>>,
    pub meminfo_slab_bytes: Option<u64>,
}

pub fn memory_snapshot(pid: u32) -> Result<MemorySnapshot> {
    Ok(MemorySnapshot {
        rss_bytes: rss_bytes(pid)?,
        slab: slab_rows().ok(),
        meminfo_slab_bytes: meminfo_slab_bytes().ok(),
    })
}

/// Server memory per session between two snapshots, with `client_sockets` open in between.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryPerSession {
    pub sessions: u64,
    pub rss_delta_bytes: i64,
    pub rss_bytes_per_session: f64,
    /// Per slab row: (objects delta, bytes delta, of which the server's bytes per session).
    pub slab_rows: BTreeMap<String, SlabDelta>,
    /// Sum of the server's share of the rows, per session (client sockets subtracted).
    pub server_slab_bytes_per_session: Option<f64>,
    /// io_kiocb alone per session (all of it is the server's: the client uses epoll).
    pub io_kiocb_bytes_per_session: Option<f64>,
    pub meminfo_slab_delta_bytes: Option<i64>,
    /// connect: server CPU from before the first connect to the last session open (accepts,
    /// TLS or WebSocket handshakes, Hello/Welcome), and sessions set up per server CPU-second.
    pub setup_server_cpu_us: Option<u64>,
    pub setups_per_server_cpu_s: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SlabDelta {
    pub objects_delta: i64,
    pub bytes_delta: i64,
    pub server_bytes_delta: i64,
}

pub fn memory_per_session(
    before: &MemorySnapshot,
    after: &MemorySnapshot,
    sessions: u64,
    client_sockets: u64,
) -> MemoryPerSession {
    let per = |bytes: f64| {
        if sessions == 0 {
            0.0
        } else {
            bytes / sessions as f64
        }
    };
    let rss_delta_bytes = after.rss_bytes as i64 - before.rss_bytes as i64;
    let mut slab_rows = BTreeMap::new();
    let mut server_total = None;
    if let (Some(b), Some(a)) = (&before.slab, &after.slab) {
        let mut total = 0i64;
        for (name, row_after) in a {
            let Some(row_before) = b.get(name) else {
                continue;
            };
            let objects_delta = row_after.active_objs as i64 - row_before.active_objs as i64;
            let size = row_after.objsize_bytes as i64;
            let client_objects = if SLAB_ROWS_ONE_PER_CLIENT_SOCKET.contains(&name.as_str()) {
                client_sockets as i64
            } else {
                0
            };
            let server_bytes_delta = (objects_delta - client_objects) * size;
            total += server_bytes_delta;
            slab_rows.insert(
                name.clone(),
                SlabDelta {
                    objects_delta,
                    bytes_delta: objects_delta * size,
                    server_bytes_delta,
                },
            );
        }
        server_total = Some(total);
    }
    let meminfo_slab_delta_bytes = match (before.meminfo_slab_bytes, after.meminfo_slab_bytes) {
        (Some(b), Some(a)) => Some(a as i64 - b as i64),
        _ => None,
    };
    MemoryPerSession {
        sessions,
        rss_delta_bytes,
        rss_bytes_per_session: per(rss_delta_bytes as f64),
        io_kiocb_bytes_per_session: slab_rows.get("io_kiocb").map(|d| per(d.bytes_delta as f64)),
        slab_rows,
        server_slab_bytes_per_session: server_total.map(|t| per(t as f64)),
        meminfo_slab_delta_bytes,
        setup_server_cpu_us: None,
        setups_per_server_cpu_s: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_is_read_per_thread_name() {
        assert_eq!(stat_comm("7 (holdfast (x) y) S 1"), Some("holdfast (x) y"));
        let threads = thread_cpu_us(std::process::id()).unwrap();
        assert!(!threads.is_empty());
    }

    #[test]
    fn stat_cpu_fields_are_found_after_a_command_name_with_spaces() {
        let stat = "1234 (holdfast (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat).unwrap(), 325);
    }

    #[test]
    fn slabinfo_rows_are_parsed_and_client_sockets_subtracted() {
        let before = "slabinfo - version: 2.1\nTCP 100 120 2368 13 8 : tunables\nio_kiocb 10 64 256 16 1 : x\nkmalloc-8 5 5 8 1 1\n";
        let after = "TCP 2100 2200 2368 13 8 : tunables\nio_kiocb 1010 1024 256 16 1 : x\n";
        let snap = |t: &str| MemorySnapshot {
            rss_bytes: 0,
            slab: Some(parse_slabinfo(t)),
            meminfo_slab_bytes: None,
        };
        let (b, a) = (snap(before), snap(after));
        assert_eq!(b.slab.as_ref().unwrap().len(), 2);
        let m = memory_per_session(&b, &a, 1_000, 1_000);
        // 2,000 new TCP sockets, 1,000 of them the client's: the server's share is 1,000 * 2368.
        assert_eq!(m.slab_rows["TCP"].server_bytes_delta, 1_000 * 2368);
        assert_eq!(m.io_kiocb_bytes_per_session, Some(256.0));
        assert_eq!(m.server_slab_bytes_per_session, Some(2368.0 + 256.0));
    }
}
