//! `holdfast tune`: what a host needs to hold N connections, and whether this host has what a
//! config needs.
//!
//! - `holdfast tune --connections N [--cores C] [--memory-gib M]` computes shards, per-shard
//!   capacity, rlimits, sysctl values and a memory budget from the measured per-connection costs
//!   below, prints them with a table of where the memory goes, and says whether N fits
//!   (exit 0 if it does, [`EXIT_HOST_SHORTFALL`] if not).
//! - `holdfast tune --check [--config FILE]` reads the running host (rlimits, capabilities,
//!   /proc/sys) and names each shortfall against the config, one line each; exit
//!   [`EXIT_HOST_SHORTFALL`] if there is any. `holdfast serve` runs the same check at start and
//!   logs each shortfall as a warning ([`warn_host_shortfalls`]).
//!
//! Every per-connection figure is a named constant measured in docs/CAPACITY.md; change them
//! there first.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::Config;
use crate::conn::Conn;
use crate::conn::ConnKey;
use crate::outbound::{OUTBOUND_POOL_KEEP_BYTES, OUTBOUND_POOL_MAX_ITEMS};
use crate::shard::state::{DECODER_POOL_KEEP_BYTES, DECODER_POOL_MAX_ITEMS};
use crate::timer::wheel::WHEEL_BUCKETS;

/// Exit code of `holdfast tune` when N does not fit, and of `--check` when the host falls short.
pub const EXIT_HOST_SHORTFALL: u8 = 3;

// Per-connection costs, measured: docs/CAPACITY.md, "Per-session memory, measured" (slopes of
// the least-squares fit over 5,000..36,000 idle sessions, Linux 6.18, 2 shards), and
// "Full-scale simulation" (capacity_sim, 10,000,000 slots and wheel entries).

/// Kernel memory per idle server-side socket: the TCP (2,409), sock_inode_cache (851), filp
/// (197) and dentry (394) slab rows, fitted slopes.
pub const KERNEL_SOCKET_BYTES_PER_CONN: u64 = 3_852;
/// The one pending multishot POLL_ADD each connection keeps in the ring: io_kiocb slab object
/// (256 B, fitted slope 255.9) plus 32 B of poll data on a direct descriptor (docs/CAPACITY.md,
/// "Platform facts").
pub const URING_POLL_BYTES_PER_CONN: u64 = 288;
/// Holdfast's user memory per session beyond its 32 B slot (`Conn`, counted per slot of
/// capacity below) while sessions are new: its wheel entry with the vectors' slack, and
/// allocator slack. bench/scripts/memory.sh at the 1M ring-set shape (29 rings per shard,
/// 15,000-45,000 sessions): heap slope 48.7 B per session, of which 32 B is the slab's pages
/// touched as slots are first used (the slab is allocated at start, its pages fault in as
/// slots are used); 44.3 B before, over 5k-36k on one ring, counted the slot twice.
pub const USER_BYTES_PER_CONN_MEASURED: u64 = 17;
/// Timer wheel capacity retained per connection once the wheel has turned a full rotation,
/// beyond slot and first fill: capacity_sim at 10M after 15 heartbeat sweeps, 49.1 - 32.1 -
/// 16.4 = 0.6 B (drained bucket vectors are reused; it was 200 B before, docs/CAPACITY.md).
pub const WHEEL_RETAINED_BYTES_PER_CONN: u64 = 1;
/// Kernel fixed-file table, per slot of capacity (`struct io_fixed_file`, 8 B, plus one bit of
/// the allocation bitmap), allocated at ring setup.
pub const FIXED_FILE_BYTES_PER_SLOT: u64 = 8;
/// User memory of one idle shard besides its slab and receive buffers (glommio executor, its
/// io_memory, histograms, wheel buckets): idle RSS of 2 shards minus 1 shard (13.2 MB) less the
/// slab and the receive buffer pool.
pub const SHARD_BASE_USER_BYTES: u64 = 8 << 20;
/// User memory of the process before any shard (binary, allocator, main threads): idle RSS of
/// a 1-shard server less one shard.
pub const PROCESS_BASE_USER_BYTES: u64 = 10 << 20;
/// Locked memory of glommio's own rings per executor besides `glommio_io_memory_bytes`.
pub const GLOMMIO_RINGS_LOCKED_BYTES: u64 = 256 * 1024;
/// Kernel socket buffer memory of a connection with data queued: tcp_rmem and tcp_wmem
/// minimums (60-holdfast.conf sets both to one page). Idle sockets hold none (sockstat +0).
pub const TCP_BUFFER_BYTES_PER_BUSY_CONN: u64 = 2 * 4096;
/// nf_conntrack entry per tracked connection (slab object ~320 B plus its hash bucket).
pub const CONNTRACK_BYTES_PER_CONN: u64 = 328;

/// Default share of connections assumed to hold buffers at any instant (`--busy-percent`).
pub const BUSY_PERCENT_DEFAULT: f64 = 1.0;
/// Per-shard capacity above N / shards: SO_REUSEPORT hashing does not split connections
/// exactly evenly.
pub const SHARD_CAPACITY_HEADROOM_PERCENT: u64 = 10;
/// Descriptors beyond the ring table a process needs (listeners, eventfds, glommio, logs).
pub const NOFILE_HEADROOM: u64 = 4_096;
/// Files beyond the sessions that the rest of the host keeps open (fs.file-max margin).
pub const FILE_MAX_HEADROOM: u64 = 1_048_576;
/// Memory left to the OS, page cache and the unexpected: this share of RAM, at least
/// [`OS_RESERVE_BYTES_MIN`].
pub const OS_RESERVE_PERCENT: u64 = 5;
pub const OS_RESERVE_BYTES_MIN: u64 = 2 << 30;
/// Listen backlog recommended for a reconnect storm (each shard's listener has its own queue).
pub const LISTEN_BACKLOG_RECOMMENDED: u32 = 65_535;
pub const TCP_MAX_SYN_BACKLOG_RECOMMENDED: u64 = 262_144;
pub const NETDEV_MAX_BACKLOG_RECOMMENDED: u64 = 250_000;
/// LimitMEMLOCK covers this many processes of the service user at once (old draining, new).
pub const MEMLOCK_PROCESSES: u64 = 2;
const PAGE_BYTES: u64 = 4096;
const GIB: u64 = 1 << 30;

/// `holdfast tune` arguments.
#[derive(clap::Args, Debug, Default)]
pub struct TuneArgs {
    /// Connections the host must hold (plan mode).
    #[arg(long, required_unless_present = "check", conflicts_with = "check")]
    pub connections: Option<u64>,
    /// Cores (one shard each); default: this host's.
    #[arg(long)]
    pub cores: Option<usize>,
    /// Memory of the host in GiB; default: this host's MemTotal.
    #[arg(long)]
    pub memory_gib: Option<f64>,
    /// Percent of connections assumed to hold receive/send buffers at any instant.
    #[arg(long, default_value_t = BUSY_PERCENT_DEFAULT)]
    pub busy_percent: f64,
    /// Compare this host with what the config needs instead of planning.
    #[arg(long)]
    pub check: bool,
    /// TOML config (ring, buffer and backlog sizes; for --check also shards and capacity).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// No CLI overrides on top of the config file (for `Config::load`).
#[derive(Serialize)]
struct NoOverrides {}

/// Runs `holdfast tune`; returns the process exit code.
pub fn run(args: &TuneArgs) -> Result<u8, String> {
    let config =
        Config::load(args.config.as_deref(), &NoOverrides {}).map_err(|e| e.to_string())?;
    let host = HostFacts::read();
    if args.check {
        let shards = config.shard_count();
        let capacity = config.capacity_per_shard();
        let shortfalls = check(&config, shards, capacity, &host);
        println!(
            "holdfast tune --check: shards={shards} max_connections_per_shard={capacity} listen_backlog={}",
            config.listen_backlog
        );
        for shortfall in &shortfalls {
            println!("SHORTFALL {shortfall}");
        }
        if shortfalls.is_empty() {
            println!("ok: this host has what the config needs");
            return Ok(0);
        }
        return Ok(EXIT_HOST_SHORTFALL);
    }
    let connections = args.connections.expect("clap requires --connections");
    let cores = args.cores.unwrap_or(host.cores);
    let memory_bytes = match args.memory_gib {
        Some(gib) => (gib * GIB as f64) as u64,
        None => host.mem_total_bytes.unwrap_or(0),
    };
    if connections == 0 || cores == 0 || memory_bytes == 0 {
        return Err("--connections, --cores and --memory-gib must be above 0".to_owned());
    }
    if !(0.0..=100.0).contains(&args.busy_percent) {
        return Err("--busy-percent must be between 0 and 100".to_owned());
    }
    let plan = plan(&PlanInput {
        connections,
        cores,
        memory_bytes,
        busy_percent: args.busy_percent,
        config: &config,
    })?;
    print!("{}", render_plan(&plan));
    Ok(if plan.fits { 0 } else { EXIT_HOST_SHORTFALL })
}

pub struct PlanInput<'a> {
    pub connections: u64,
    pub cores: usize,
    pub memory_bytes: u64,
    pub busy_percent: f64,
    pub config: &'a Config,
}

/// One row of the memory table.
#[derive(Debug, Clone)]
pub struct MemoryRow {
    pub what: &'static str,
    pub kernel: bool,
    /// Bytes per unit and how many units (connections, slots or shards).
    pub bytes_per_unit: u64,
    pub units: u64,
    pub unit: &'static str,
}

impl MemoryRow {
    pub fn bytes(&self) -> u64 {
        self.bytes_per_unit * self.units
    }
}

#[derive(Debug)]
pub struct Plan {
    pub connections: u64,
    pub shards: u64,
    pub memory_bytes: u64,
    pub max_connections_per_shard: u64,
    /// io_uring rings each shard owns (ring set), and the fixed-file entries of each.
    pub rings_per_shard: u64,
    pub ring_table_slots: u64,
    pub limit_nofile: u64,
    pub limit_memlock_bytes: u64,
    pub listen_backlog: u32,
    pub sysctls: Vec<(&'static str, String)>,
    pub rows: Vec<MemoryRow>,
    pub total_bytes: u64,
    pub os_reserve_bytes: u64,
    pub conntrack_bytes: u64,
    pub fits: bool,
}

/// Locked memory one shard needs when the process lacks CAP_IPC_LOCK: each of its `rings`
/// rings' SQ (64 B SQEs plus the 4 B index array) and CQ (16 B CQEs), each ring's share of
/// the shard's entries (`Config::ring_entries_for_rings`), and provided-buffer ring
/// descriptors (16 B each), and glommio's rings with their registered io_memory.
pub fn locked_bytes_per_shard(config: &Config, rings: u64) -> u64 {
    let page_round = |b: u64| b.div_ceil(PAGE_BYTES) * PAGE_BYTES;
    let (sq_entries, cq_entries) = config.ring_entries_for_rings(rings);
    let sq = page_round(u64::from(sq_entries) * (64 + 4) + PAGE_BYTES);
    let cq = page_round(u64::from(cq_entries) * 16 + PAGE_BYTES);
    let buf_ring = page_round(u64::from(config.recv_buffers_for_rings(rings)) * 16);
    rings * (sq + cq + buf_ring)
        + config.glommio_io_memory_bytes as u64
        + GLOMMIO_RINGS_LOCKED_BYTES
}

/// Entries of one ring's table a plan may count on: the kernel's cap and the config's (the
/// plan sets LimitNOFILE so RLIMIT_NOFILE does not cap it further).
fn planned_table_slots(config: &Config) -> u64 {
    u64::from(crate::config::IORING_MAX_FIXED_FILES.min(config.ring_max_fixed_files))
}

/// Kernel memory of one of a shard's `rings` rings besides the per-slot table: its SQ and CQ,
/// its share of the shard's entries (mapped into the process: they count in its RSS).
fn ring_kernel_bytes_per_ring(config: &Config, rings: u64) -> u64 {
    let (sq_entries, cq_entries) = config.ring_entries_for_rings(rings);
    u64::from(sq_entries) * (64 + 4) + u64::from(cq_entries) * 16
}

/// User memory of each connection slot of a ring besides its `Conn`, allocated at start: the
/// bytes of the send in flight (`ring::Ring`, 40 B), and with several rings the slot's place
/// in the free list accepts name their slots from (4 B).
fn send_and_free_list_bytes_per_slot(rings: u64) -> u64 {
    let send = std::mem::size_of::<Option<(crate::ring::user_data::UserData, bytes::Bytes)>>();
    let free_list = if rings > 1 {
        std::mem::size_of::<u32>()
    } else {
        0
    };
    (send + free_list) as u64
}

/// Computes what N connections need on a host of `cores` and `memory_bytes`.
pub fn plan(input: &PlanInput<'_>) -> Result<Plan, String> {
    let config = input.config;
    let n = input.connections;
    let shards = match config.shards {
        0 => input.cores as u64,
        s => s as u64,
    };
    let per_shard = n.div_ceil(shards) * (100 + SHARD_CAPACITY_HEADROOM_PERCENT) / 100;
    let max_per_shard = u64::from(crate::conn::id::MAX_SLOTS_PER_SHARD) - 1;
    if per_shard > max_per_shard {
        return Err(format!(
            "{n} connections over {shards} shards is {per_shard} per shard, above the {max_per_shard} a shard can address: add cores"
        ));
    }
    // A shard's slots (sessions plus refusal slots) go into as many rings as tables of at most
    // IORING_MAX_FIXED_FILES (and ring_max_fixed_files) need.
    let slots = per_shard + u64::from(crate::config::SERVER_FULL_REFUSAL_SLOTS);
    let table_slots = planned_table_slots(config).min(slots);
    let rings_per_shard = crate::ring::set::rings_needed(slots, table_slots);
    let rings_max = u64::from(crate::ring::set::MAX_RINGS_PER_SHARD);
    if rings_per_shard > rings_max {
        return Err(format!(
            "{n} connections over {shards} shards is {per_shard} per shard, which needs \
             {rings_per_shard} io_uring rings of at most {table_slots} fixed files \
             (IORING_MAX_FIXED_FILES, ring_max_fixed_files), above MAX_RINGS_PER_SHARD = \
             {rings_max}: add cores"
        ));
    }
    let capacity = shards * per_shard;
    let busy = ((n as f64) * input.busy_percent / 100.0).ceil() as u64;
    let busy_user_bytes = (DECODER_POOL_KEEP_BYTES + OUTBOUND_POOL_KEEP_BYTES) as u64;
    let pools_per_shard = (DECODER_POOL_MAX_ITEMS * DECODER_POOL_KEEP_BYTES
        + OUTBOUND_POOL_MAX_ITEMS * OUTBOUND_POOL_KEEP_BYTES) as u64;
    let recv_pool_per_ring = u64::from(config.recv_buffers_for_rings(rings_per_shard))
        * u64::from(config.recv_buffer_bytes);
    let wheel_base = (WHEEL_BUCKETS * std::mem::size_of::<Vec<ConnKey>>()) as u64;
    let rows = vec![
        MemoryRow {
            what: "socket: tcp_sock, inode, file, dentry",
            kernel: true,
            bytes_per_unit: KERNEL_SOCKET_BYTES_PER_CONN,
            units: n,
            unit: "conn",
        },
        MemoryRow {
            what: "io_uring: pending multishot poll",
            kernel: true,
            bytes_per_unit: URING_POLL_BYTES_PER_CONN,
            units: n,
            unit: "conn",
        },
        MemoryRow {
            what: "io_uring: fixed-file table slot",
            kernel: true,
            bytes_per_unit: FIXED_FILE_BYTES_PER_SLOT,
            units: capacity,
            unit: "slot",
        },
        MemoryRow {
            what: "io_uring: SQ + CQ rings",
            kernel: true,
            bytes_per_unit: ring_kernel_bytes_per_ring(config, rings_per_shard),
            units: shards * rings_per_shard,
            unit: "ring",
        },
        MemoryRow {
            what: "socket buffers of busy conns",
            kernel: true,
            bytes_per_unit: TCP_BUFFER_BYTES_PER_BUSY_CONN,
            units: busy,
            unit: "busy",
        },
        MemoryRow {
            what: "holdfast: connection slot (Conn)",
            kernel: false,
            bytes_per_unit: std::mem::size_of::<Conn>() as u64,
            units: capacity,
            unit: "slot",
        },
        MemoryRow {
            what: "holdfast: send slot + free slot list",
            kernel: false,
            bytes_per_unit: send_and_free_list_bytes_per_slot(rings_per_shard),
            units: capacity,
            unit: "slot",
        },
        MemoryRow {
            what: "holdfast: wheel entry + slack (slope)",
            kernel: false,
            bytes_per_unit: USER_BYTES_PER_CONN_MEASURED,
            units: n,
            unit: "conn",
        },
        MemoryRow {
            what: "holdfast: wheel capacity kept (sim)",
            kernel: false,
            bytes_per_unit: WHEEL_RETAINED_BYTES_PER_CONN,
            units: n,
            unit: "conn",
        },
        MemoryRow {
            what: "holdfast: decoder + outbound of busy",
            kernel: false,
            bytes_per_unit: busy_user_bytes,
            units: busy,
            unit: "busy",
        },
        MemoryRow {
            what: "holdfast: recv buffer pool (per ring)",
            kernel: false,
            bytes_per_unit: recv_pool_per_ring,
            units: shards * rings_per_shard,
            unit: "ring",
        },
        MemoryRow {
            what: "holdfast: decoder/outbound pools full",
            kernel: false,
            bytes_per_unit: pools_per_shard,
            units: shards,
            unit: "shard",
        },
        MemoryRow {
            what: "holdfast: shard base (executor, hist)",
            kernel: false,
            bytes_per_unit: SHARD_BASE_USER_BYTES + wheel_base,
            units: shards,
            unit: "shard",
        },
        MemoryRow {
            what: "holdfast: process base",
            kernel: false,
            bytes_per_unit: PROCESS_BASE_USER_BYTES,
            units: 1,
            unit: "proc",
        },
    ];
    let total_bytes: u64 = rows.iter().map(MemoryRow::bytes).sum();
    let os_reserve_bytes =
        (input.memory_bytes * OS_RESERVE_PERCENT / 100).max(OS_RESERVE_BYTES_MIN);
    let fits = total_bytes + os_reserve_bytes <= input.memory_bytes;
    // RLIMIT_NOFILE caps each ring's table, not the shard: one table plus the process's own.
    let limit_nofile = (table_slots + NOFILE_HEADROOM).next_multiple_of(1024);
    let limit_memlock_bytes =
        (shards * locked_bytes_per_shard(config, rings_per_shard) * MEMLOCK_PROCESSES)
            .next_multiple_of(1 << 20);
    let busy_buffer_pages = (busy * TCP_BUFFER_BYTES_PER_BUSY_CONN).div_ceil(PAGE_BYTES);
    // tcp_mem counts only skb memory: let busy connections queue 8x their minimum before the
    // kernel starts trimming buffers (pressure), and stop at 16x, at most a quarter of RAM.
    let tcp_mem_max = (busy_buffer_pages * 16).clamp(65_536, input.memory_bytes / 4 / PAGE_BYTES);
    let sysctls = vec![
        ("fs.nr_open", (limit_nofile.max(1_048_576)).to_string()),
        (
            "fs.file-max",
            (n + FILE_MAX_HEADROOM)
                .next_multiple_of(1 << 20)
                .to_string(),
        ),
        ("net.core.somaxconn", LISTEN_BACKLOG_RECOMMENDED.to_string()),
        (
            "net.ipv4.tcp_max_syn_backlog",
            TCP_MAX_SYN_BACKLOG_RECOMMENDED.to_string(),
        ),
        (
            "net.core.netdev_max_backlog",
            NETDEV_MAX_BACKLOG_RECOMMENDED.to_string(),
        ),
        (
            "net.ipv4.tcp_mem",
            format!("{} {} {}", tcp_mem_max / 4, tcp_mem_max / 2, tcp_mem_max),
        ),
        ("net.ipv4.tcp_rmem", "4096 16384 4194304".to_owned()),
        ("net.ipv4.tcp_wmem", "4096 16384 4194304".to_owned()),
        ("net.ipv4.tcp_migrate_req", "1".to_owned()),
        (
            "net.netfilter.nf_conntrack_max",
            format!("{} (only if conntrack is not bypassed)", n + n / 4),
        ),
    ];
    Ok(Plan {
        connections: n,
        shards,
        memory_bytes: input.memory_bytes,
        max_connections_per_shard: per_shard,
        rings_per_shard,
        ring_table_slots: table_slots,
        limit_nofile,
        limit_memlock_bytes,
        listen_backlog: LISTEN_BACKLOG_RECOMMENDED,
        sysctls,
        rows,
        total_bytes,
        os_reserve_bytes,
        conntrack_bytes: n * CONNTRACK_BYTES_PER_CONN,
        fits,
    })
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / GIB as f64)
}

/// The plan as text: limits, config keys, sysctls, the memory table and the verdict.
pub fn render_plan(plan: &Plan) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "holdfast tune: {} connections, {} shards, {} of memory",
        plan.connections,
        plan.shards,
        gib(plan.memory_bytes)
    );
    let _ = writeln!(w, "\n# holdfast.toml");
    let _ = writeln!(w, "shards = {}", plan.shards);
    let _ = writeln!(w, "max_connections_per_shard = {}   # N / shards + {SHARD_CAPACITY_HEADROOM_PERCENT}% for uneven SO_REUSEPORT hashing", plan.max_connections_per_shard);
    let _ = writeln!(w, "listen_backlog = {}", plan.listen_backlog);
    let _ = writeln!(
        w,
        "# each shard owns {} io_uring ring(s) of at most {} fixed files (IORING_MAX_FIXED_FILES = {})",
        plan.rings_per_shard,
        plan.ring_table_slots,
        crate::config::IORING_MAX_FIXED_FILES
    );
    let _ = writeln!(w, "\n# holdfast.service [Service] (tuning/limits/)");
    let _ = writeln!(
        w,
        "LimitNOFILE={}   # each ring's fixed-file table is capped at RLIMIT_NOFILE",
        plan.limit_nofile
    );
    let _ = writeln!(
        w,
        "LimitMEMLOCK={}   # ring memory without CAP_IPC_LOCK, for {MEMLOCK_PROCESSES} processes",
        plan.limit_memlock_bytes
    );
    let _ = writeln!(
        w,
        "\n# /etc/sysctl.d/60-holdfast.conf (tuning/sysctl.d/ explains each)"
    );
    for (key, value) in &plan.sysctls {
        let _ = writeln!(w, "{key} = {value}");
    }
    let _ = writeln!(
        w,
        "\n# Where the memory goes (per-unit costs: docs/CAPACITY.md)"
    );
    let _ = writeln!(
        w,
        "| {:<40} | {:<6} | {:>12} | {:>15} | {:>12} |",
        "what", "side", "bytes/unit", "units", "total"
    );
    let _ = writeln!(
        w,
        "|{:-<42}|{:-<8}|{:->14}|{:->17}|{:->14}|",
        "", "", "", "", ""
    );
    let (mut kernel, mut user) = (0u64, 0u64);
    for row in &plan.rows {
        if row.kernel {
            kernel += row.bytes()
        } else {
            user += row.bytes()
        }
        let _ = writeln!(
            w,
            "| {:<40} | {:<6} | {:>12} | {:>9} {:<5} | {:>12} |",
            row.what,
            if row.kernel { "kernel" } else { "user" },
            row.bytes_per_unit,
            row.units,
            row.unit,
            gib(row.bytes())
        );
    }
    let _ = writeln!(
        w,
        "| {:<40} | {:<6} | {:>12} | {:>15} | {:>12} |",
        "kernel total",
        "",
        "",
        "",
        gib(kernel)
    );
    let _ = writeln!(
        w,
        "| {:<40} | {:<6} | {:>12} | {:>15} | {:>12} |",
        "holdfast (user) total",
        "",
        "",
        "",
        gib(user)
    );
    let _ = writeln!(
        w,
        "| {:<40} | {:<6} | {:>12} | {:>15} | {:>12} |",
        "total",
        "",
        "",
        "",
        gib(plan.total_bytes)
    );
    let per_conn = plan.total_bytes as f64 / plan.connections as f64;
    let _ = writeln!(w, "\nper connection, all in: {per_conn:.0} B; OS reserve {}; conntrack, if not bypassed, would add {}", gib(plan.os_reserve_bytes), gib(plan.conntrack_bytes));
    let need = plan.total_bytes + plan.os_reserve_bytes;
    if plan.fits {
        let _ = writeln!(
            w,
            "FITS: {} needed of {} ({:.0}%)",
            gib(need),
            gib(plan.memory_bytes),
            need as f64 * 100.0 / plan.memory_bytes as f64
        );
    } else {
        let _ = writeln!(
            w,
            "DOES NOT FIT: {} needed, {} available: add memory or spread over more hosts",
            gib(need),
            gib(plan.memory_bytes)
        );
    }
    out
}

/// What the running host has, as far as the process can read it. `None` = unreadable.
#[derive(Clone, Debug, Default)]
pub struct HostFacts {
    pub cores: usize,
    pub nofile_soft: u64,
    pub nofile_hard: u64,
    pub memlock_soft_bytes: u64,
    pub cap_ipc_lock: bool,
    pub somaxconn: Option<u64>,
    pub tcp_max_syn_backlog: Option<u64>,
    pub tcp_syncookies: Option<u64>,
    pub nr_open: Option<u64>,
    pub file_max: Option<u64>,
    pub mem_total_bytes: Option<u64>,
}

fn read_sysctl(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Bit 14 of CapEff in /proc/self/status.
const CAP_IPC_LOCK_BIT: u32 = 14;

impl HostFacts {
    pub fn read() -> HostFacts {
        use rlimit::Resource;
        let (nofile_soft, nofile_hard) = rlimit::getrlimit(Resource::NOFILE).unwrap_or((0, 0));
        let (memlock_soft_bytes, _) = rlimit::getrlimit(Resource::MEMLOCK).unwrap_or((0, 0));
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let cap_ipc_lock = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK_BIT) != 0);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_bytes = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024);
        HostFacts {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            nofile_soft,
            nofile_hard,
            memlock_soft_bytes,
            cap_ipc_lock,
            somaxconn: read_sysctl("/proc/sys/net/core/somaxconn"),
            tcp_max_syn_backlog: read_sysctl("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
            tcp_syncookies: read_sysctl("/proc/sys/net/ipv4/tcp_syncookies"),
            nr_open: read_sysctl("/proc/sys/fs/nr_open"),
            file_max: read_sysctl("/proc/sys/fs/file-max"),
            mem_total_bytes,
        }
    }
}

/// One thing the host lacks for the config, with what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// The limit, as an operator searches for it (`RLIMIT_NOFILE`, `net.core.somaxconn`).
    pub limit: &'static str,
    pub have: String,
    pub need: String,
    pub why_and_fix: String,
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: have {}, need {}: {}",
            self.limit, self.have, self.need, self.why_and_fix
        )
    }
}

/// Compares the host with what `config` needs when run as `shards` shards of `capacity`
/// connections each. Empty = nothing missing.
pub fn check(config: &Config, shards: usize, capacity: u32, host: &HostFacts) -> Vec<Shortfall> {
    let mut out = Vec::new();
    let capacity = u64::from(capacity);
    let shards_u64 = shards as u64;
    // Each ring's table is capped at RLIMIT_NOFILE: too low only if the shard's slots then
    // need more rings than it may own.
    let rings_max = u64::from(crate::ring::set::MAX_RINGS_PER_SHARD);
    let slots = capacity + u64::from(crate::config::SERVER_FULL_REFUSAL_SLOTS);
    let table_need = slots.div_ceil(rings_max).min(planned_table_slots(config));
    let table_have = host.nofile_soft.min(planned_table_slots(config)).max(1);
    if crate::ring::set::rings_needed(slots, table_have) > rings_max {
        out.push(Shortfall {
            limit: "RLIMIT_NOFILE",
            have: host.nofile_soft.to_string(),
            need: format!(">= {table_need} (max_connections_per_shard in at most MAX_RINGS_PER_SHARD = {rings_max} rings)"),
            why_and_fix: format!("each io_uring ring's fixed-file table may not exceed RLIMIT_NOFILE, so shards fail to start; raise LimitNOFILE= in holdfast.service (or ulimit -n; hard limit is {}) or lower max_connections_per_shard", host.nofile_hard),
        });
    }
    if let Some(nr_open) = host.nr_open.filter(|&v| v < table_need) {
        out.push(Shortfall {
            limit: "fs.nr_open",
            have: nr_open.to_string(),
            need: format!(">= {table_need}"),
            why_and_fix: "RLIMIT_NOFILE cannot be raised above fs.nr_open; set it in /etc/sysctl.d/60-holdfast.conf".to_owned(),
        });
    }
    let total_slots = shards_u64 * capacity;
    if let Some(file_max) = host.file_max.filter(|&v| v < total_slots) {
        out.push(Shortfall {
            limit: "fs.file-max",
            have: file_max.to_string(),
            need: format!(">= {total_slots} (shards x max_connections_per_shard)"),
            why_and_fix: "every accepted socket is a struct file even as a direct descriptor; accepts fail with ENFILE past it; raise it in /etc/sysctl.d/60-holdfast.conf".to_owned(),
        });
    }
    let rings = crate::ring::set::rings_needed(slots, table_have);
    let locked = shards_u64 * locked_bytes_per_shard(config, rings);
    if !host.cap_ipc_lock && host.memlock_soft_bytes < locked {
        out.push(Shortfall {
            limit: "RLIMIT_MEMLOCK",
            have: format!("{} bytes, no CAP_IPC_LOCK", host.memlock_soft_bytes),
            need: format!(">= {locked} bytes ({shards} shards x ring, buffer-ring and glommio io_memory)"),
            why_and_fix: "ring memory counts against RLIMIT_MEMLOCK (per user, across processes) and ring setup fails with ENOMEM; raise LimitMEMLOCK= or lower ring_cq_entries / glommio_io_memory_bytes".to_owned(),
        });
    }
    let backlog = u64::from(config.listen_backlog);
    if let Some(somaxconn) = host.somaxconn.filter(|&v| v < backlog) {
        out.push(Shortfall {
            limit: "net.core.somaxconn",
            have: somaxconn.to_string(),
            need: format!(">= {backlog} (listen_backlog)"),
            why_and_fix: "the kernel silently truncates listen_backlog to somaxconn, so a reconnect storm overflows the accept queue; raise it in /etc/sysctl.d/60-holdfast.conf".to_owned(),
        });
    }
    if host.tcp_syncookies == Some(0) {
        if let Some(syn) = host.tcp_max_syn_backlog.filter(|&v| v < backlog) {
            out.push(Shortfall {
                limit: "net.ipv4.tcp_max_syn_backlog",
                have: format!("{syn} with tcp_syncookies=0"),
                need: format!(">= {backlog} (listen_backlog)"),
                why_and_fix: "without SYN cookies, SYNs beyond the SYN queue are dropped in a reconnect storm; raise it or enable net.ipv4.tcp_syncookies".to_owned(),
            });
        }
    }
    if let Some(mem_total) = host.mem_total_bytes {
        let per_conn = KERNEL_SOCKET_BYTES_PER_CONN
            + URING_POLL_BYTES_PER_CONN
            + USER_BYTES_PER_CONN_MEASURED
            + WHEEL_RETAINED_BYTES_PER_CONN;
        let per_slot = FIXED_FILE_BYTES_PER_SLOT
            + std::mem::size_of::<Conn>() as u64
            + send_and_free_list_bytes_per_slot(config.rings_per_shard());
        let need = total_slots * (per_conn + per_slot);
        if need > mem_total {
            out.push(Shortfall {
                limit: "memory",
                have: gib(mem_total),
                need: format!("{} for {total_slots} idle connections", gib(need)),
                why_and_fix: "the config admits more connections than this host's memory holds; lower max_connections_per_shard (holdfast tune --connections N sizes it)".to_owned(),
            });
        }
    }
    if shards > host.cores {
        out.push(Shortfall {
            limit: "cores",
            have: host.cores.to_string(),
            need: format!(">= {shards} (shards)"),
            why_and_fix: "shards are pinned one per core; more shards than cores share cores and stall each other; set shards = 0".to_owned(),
        });
    }
    out
}

/// `holdfast serve` at start: one warning line per shortfall, never fatal (the ring setup
/// itself fails loudly if a limit really stops it).
pub fn warn_host_shortfalls(config: &Config, shards: usize, capacity: u32) {
    for shortfall in check(config, shards, capacity, &HostFacts::read()) {
        tracing::warn!("host check: {shortfall}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roomy_host() -> HostFacts {
        HostFacts {
            cores: 64,
            nofile_soft: 1 << 20,
            nofile_hard: 1 << 20,
            memlock_soft_bytes: 1 << 30,
            cap_ipc_lock: false,
            somaxconn: Some(65_535),
            tcp_max_syn_backlog: Some(262_144),
            tcp_syncookies: Some(1),
            nr_open: Some(1 << 20),
            file_max: Some(1 << 26),
            mem_total_bytes: Some(256 * GIB),
        }
    }

    #[test]
    fn ten_million_on_64_cores_fits_in_64_gib_and_not_in_32() {
        let config = Config::default();
        let input = |gib: u64| PlanInput {
            connections: 10_000_000,
            cores: 64,
            memory_bytes: gib * GIB,
            busy_percent: 1.0,
            config: &config,
        };
        let plan64 = plan(&input(64)).unwrap();
        assert!(plan64.fits, "{}", render_plan(&plan64));
        assert_eq!(plan64.max_connections_per_shard, 171_875);
        assert!(plan64.limit_nofile >= plan64.max_connections_per_shard);
        let kernel: u64 = plan64
            .rows
            .iter()
            .filter(|r| r.kernel)
            .map(MemoryRow::bytes)
            .sum();
        assert!(
            kernel > 36 * GIB && kernel < 42 * GIB,
            "kernel share {}",
            gib(kernel)
        );
        assert!(!plan(&input(32)).unwrap().fits);
    }

    #[test]
    fn too_many_connections_per_shard_is_refused_with_advice() {
        let config = Config::default();
        let err = plan(&PlanInput {
            connections: 100_000_000,
            cores: 4,
            memory_bytes: 1 << 40,
            busy_percent: 1.0,
            config: &config,
        })
        .unwrap_err();
        assert!(err.contains("add cores"), "{err}");
    }

    /// Ten million on 2 and on 4 cores: past one ring's table, so each shard owns several rings
    /// of at most IORING_MAX_FIXED_FILES, and LimitNOFILE covers one table, not the shard.
    #[test]
    fn ten_million_on_2_or_4_cores_plans_rings_the_kernel_accepts() {
        let config = Config::default();
        for (cores, rings) in [(2, 6), (4, 3)] {
            let plan = plan(&PlanInput {
                connections: 10_000_000,
                cores,
                memory_bytes: 128 * GIB,
                busy_percent: 1.0,
                config: &config,
            })
            .unwrap();
            assert_eq!(plan.rings_per_shard, rings, "{cores} cores");
            assert_eq!(
                plan.ring_table_slots,
                u64::from(crate::config::IORING_MAX_FIXED_FILES)
            );
            assert!(plan.rings_per_shard * plan.ring_table_slots > plan.max_connections_per_shard);
            assert_eq!(plan.limit_nofile, 1_052_672, "one table plus headroom");
            assert!(plan.limit_nofile >= plan.ring_table_slots);
        }
    }

    #[test]
    fn roomy_host_has_no_shortfall() {
        let config = Config::default();
        assert_eq!(check(&config, 64, 171_875, &roomy_host()), vec![]);
    }

    #[test]
    fn each_shortfall_is_named_once() {
        let config = Config {
            listen_backlog: 65_535,
            ..Config::default()
        };
        let host = HostFacts {
            cores: 2,
            nofile_soft: 20_000,
            memlock_soft_bytes: 8 << 20,
            somaxconn: Some(4096),
            nr_open: Some(20_000),
            file_max: Some(10_000_000),
            mem_total_bytes: Some(GIB),
            ..roomy_host()
        };
        // 1,400,000 per shard in tables of 20,000 is 71 rings, above MAX_RINGS_PER_SHARD.
        let limits: Vec<&str> = check(&config, 4, 1_400_000, &host)
            .iter()
            .map(|s| s.limit)
            .collect();
        assert_eq!(
            limits,
            [
                "RLIMIT_NOFILE",
                "fs.nr_open",
                "RLIMIT_MEMLOCK",
                "net.core.somaxconn",
                "memory",
                "cores"
            ]
        );
    }

    #[test]
    fn cap_ipc_lock_waives_memlock() {
        let host = HostFacts {
            memlock_soft_bytes: 0,
            cap_ipc_lock: true,
            ..roomy_host()
        };
        assert_eq!(check(&Config::default(), 8, 1000, &host), vec![]);
    }

    #[test]
    fn syn_backlog_matters_only_without_syncookies() {
        let config = Config {
            listen_backlog: 65_535,
            ..Config::default()
        };
        let host = HostFacts {
            tcp_max_syn_backlog: Some(2048),
            ..roomy_host()
        };
        assert_eq!(check(&config, 2, 1000, &host), vec![]);
        let host = HostFacts {
            tcp_syncookies: Some(0),
            ..host
        };
        assert_eq!(
            check(&config, 2, 1000, &host)[0].limit,
            "net.ipv4.tcp_max_syn_backlog"
        );
    }
}
