//! Loading, attaching and reading the BPF programs of src/bpf/.
//!
//! `Probes` keeps only what it needs after attach: the links (dropping one
//! detaches its program) and duplicated map fds. The libbpf skeleton and
//! its object are dropped at the end of `attach`, so `Probes` is `Send` and
//! has no borrowed lifetime.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::path::Path;
use std::sync::Once;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, MapHandle, PrintLevel};

use crate::availability_skel::AvailabilitySkelBuilder;
use crate::maps::{self, RawThread, RSS_MEMBERS, TCP_STATES, THREADS_MAX};
use crate::probes_skel::ProbesSkelBuilder;
use crate::snapshot::{RssByMember, Snapshot, StateTransition, ThreadStats, TCP_STATE_NAMES};
use crate::{ProbeConfig, ProbeError};

/// Name of the shared entry for threads beyond the kernel map's bound.
const OTHER_THREADS_COMM: &str = "[other threads]";

/// `struct probe_counters` of probes.bpf.c.
struct Counters {
    threads_used: u64,
    cpu_events_missed: u64,
}

/// The attached probes of one process. Dropping it detaches every program.
pub struct Probes {
    cfg: ProbeConfig,
    page_bytes: u64,
    threads: MapHandle,
    /// .bss of probes.bpf.c: `struct probe_counters`, the only globals the
    /// programs write.
    bss: MapHandle,
    other_threads: MapHandle,
    mem: MapHandle,
    tcp: MapHandle,
    _links: Vec<Link>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("cfg", &self.cfg)
            .field("programs", &self._links.len())
            .finish()
    }
}

thread_local! {
    /// Set while `availability()` runs on this thread: its error already says
    /// why, and libbpf's own lines would turn one log line into five.
    static LIBBPF_QUIET: Cell<bool> = const { Cell::new(false) };
}

/// libbpf calls back on the thread that called into it.
fn libbpf_print(_level: PrintLevel, msg: String) {
    if !LIBBPF_QUIET.with(Cell::get) {
        eprint!("libbpf: {msg}");
    }
}

/// Routes libbpf's warnings to stderr (once per process), except on a
/// thread inside `availability()`.
fn install_libbpf_print() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        libbpf_rs::set_print(Some((PrintLevel::Warn, libbpf_print)));
    });
}

/// Loads and attaches a tiny tp_btf program, then drops it. `Err` says why
/// eBPF cannot be used here; libbpf prints nothing meanwhile.
pub fn availability() -> Result<(), String> {
    install_libbpf_print();
    LIBBPF_QUIET.with(|q| q.set(true));
    let result = check_tp_btf();
    LIBBPF_QUIET.with(|q| q.set(false));
    result
}

fn check_tp_btf() -> Result<(), String> {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err("the kernel has no BTF (/sys/kernel/btf/vmlinux is missing; needs CONFIG_DEBUG_INFO_BTF)".into());
    }
    let mut object = MaybeUninit::uninit();
    let open = AvailabilitySkelBuilder::default()
        .open(&mut object)
        .map_err(|e| format!("opening the BPF object: {e}"))?;
    let skel = open.load().map_err(|e| {
        format!("loading a tp_btf program: {e} (needs root or CAP_BPF + CAP_PERFMON)")
    })?;
    let _link = skel.progs.availability_sched_switch.attach().map_err(|e| {
        format!("attaching a tp_btf program to sched_switch: {e} (needs root or CAP_BPF + CAP_PERFMON + CAP_SYS_ADMIN)")
    })?;
    Ok(())
}

impl Probes {
    /// Loads and attaches every program, filtered to `cfg.pid` (and `cfg.port`).
    ///
    /// `Err(ProbeError::Unavailable(reason))` when eBPF cannot be used here
    /// at all; the other errors mean eBPF works but these programs did not
    /// load or attach (for example a tracepoint missing from an older kernel).
    pub fn attach(cfg: &ProbeConfig) -> Result<Probes, ProbeError> {
        if cfg.pid == 0 {
            return Err(ProbeError::InvalidConfig("pid 0 is not a process".into()));
        }
        if !Path::new(&format!("/proc/{}", cfg.pid)).exists() {
            return Err(ProbeError::InvalidConfig(format!(
                "no process with pid {} (is it running, and in this pid namespace?)",
                cfg.pid
            )));
        }
        availability().map_err(ProbeError::Unavailable)?;

        let mut object = MaybeUninit::uninit();
        let mut open = ProbesSkelBuilder::default()
            .open(&mut object)
            .map_err(|e| ProbeError::Load(format!("opening the BPF object: {e}")))?;
        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .expect("probes.bpf.c has const volatile config, so .rodata exists");
        rodata.target_tgid = cfg.pid;
        rodata.target_port = cfg.port;
        // sock_send_length only marks sockets as the process's in port-0 mode;
        // with a port it would run on every send for nothing.
        open.progs.sock_send_length.set_autoload(cfg.port == 0);
        let skel = open
            .load()
            .map_err(|e| ProbeError::Load(format!("loading the probe programs: {e:#}")))?;

        let mut links = Vec::new();
        for prog in skel.object().progs_mut().filter(|p| p.autoload()) {
            let link = prog.attach().map_err(|e| ProbeError::Attach {
                program: prog.name().to_string_lossy().into_owned(),
                reason: format!("{e:#}"),
            })?;
            links.push(link);
        }
        let handle = |map: &libbpf_rs::MapMut<'_>| {
            MapHandle::try_from(map)
                .map_err(|e| ProbeError::Load(format!("duplicating a map fd: {e}")))
        };
        Ok(Probes {
            cfg: cfg.clone(),
            page_bytes: page_bytes(),
            threads: handle(&skel.maps.threads)?,
            bss: handle(&skel.maps.bss)?,
            other_threads: handle(&skel.maps.other_threads)?,
            mem: handle(&skel.maps.mem)?,
            tcp: handle(&skel.maps.tcp)?,
            _links: links,
        })
    }

    /// The configuration these probes were attached with.
    pub fn config(&self) -> &ProbeConfig {
        &self.cfg
    }

    /// Reads all maps into a plain snapshot (cumulative since attach).
    pub fn snapshot(&self) -> Result<Snapshot, ProbeError> {
        let mut snap = Snapshot {
            pid: self.cfg.pid,
            port: self.cfg.port,
            ..Snapshot::default()
        };
        self.read_threads(&mut snap)?;
        self.read_mem(&mut snap)?;
        self.read_tcp(&mut snap)?;
        Ok(snap)
    }

    fn read_threads(&self, snap: &mut Snapshot) -> Result<(), ProbeError> {
        let counters = self.counters()?;
        snap.cpu_events_missed = counters.cpu_events_missed;
        let used = u32::try_from(counters.threads_used).map_or(THREADS_MAX, |n| n.min(THREADS_MAX));
        for slot in 0..used {
            let Some(value) = self
                .threads
                .lookup(&slot.to_ne_bytes(), MapFlags::ANY)
                .map_err(|e| read_err("threads", e))?
            else {
                continue; // cannot happen for an array index below max_entries
            };
            let raw = maps::parse_thread(&value).map_err(|e| read_err("threads", e))?;
            if raw.tid == 0 {
                continue; // slot handed out, tid not yet written (a race of nanoseconds)
            }
            let comm = live_comm(self.cfg.pid, raw.tid).unwrap_or_else(|| raw.comm.clone());
            snap.threads.push(thread_stats(raw.tid, comm, &raw));
        }
        snap.threads.sort_by_key(|t| t.tid);

        if let Some(other) =
            self.sum_percpu(&self.other_threads, "other_threads", maps::parse_thread)?
        {
            let other = thread_stats(0, OTHER_THREADS_COMM.into(), &other);
            if other.has_samples() {
                snap.threads.push(other);
            }
        }
        for t in &snap.threads {
            snap.runqueue_latency_us.merge(&t.runqueue_latency_us);
            snap.offcpu_us.merge(&t.offcpu_us);
            snap.oncpu_us.merge(&t.oncpu_us);
            snap.page_faults += t.page_faults;
        }
        Ok(())
    }

    fn read_mem(&self, snap: &mut Snapshot) -> Result<(), ProbeError> {
        let per_cpu = self.percpu_values(&self.mem, "mem")?;
        let mut changes = [0u64; RSS_MEMBERS];
        let mut pages = [0u64; RSS_MEMBERS];
        let mut newest_ns = [0u64; RSS_MEMBERS];
        for bytes in &per_cpu {
            let m = maps::parse_mem(bytes).map_err(|e| read_err("mem", e))?;
            for i in 0..RSS_MEMBERS {
                changes[i] += m.rss_changes[i];
                // Each CPU remembers the value its latest event saw; the newest wins.
                if m.rss_updated_ns[i] > newest_ns[i] {
                    newest_ns[i] = m.rss_updated_ns[i];
                    pages[i] = m.rss_pages[i];
                }
            }
        }
        let mut bytes = pages.map(|p| p * self.page_bytes);
        // No event since attach for a kind: its value is still the one
        // /proc reports (and 0 would read as "nothing resident").
        if newest_ns.contains(&0) {
            if let Some(from_proc) = proc_rss_bytes(self.cfg.pid) {
                for i in 0..RSS_MEMBERS {
                    if newest_ns[i] == 0 {
                        bytes[i] = from_proc[i];
                    }
                }
            }
        }
        snap.rss_changes = by_member(changes);
        snap.rss_bytes = by_member(bytes);
        Ok(())
    }

    fn read_tcp(&self, snap: &mut Snapshot) -> Result<(), ProbeError> {
        let tcp = self
            .sum_percpu(&self.tcp, "tcp", maps::parse_tcp)?
            .unwrap_or_default();
        snap.tcp_srtt_us = tcp.srtt_us;
        snap.data_ready_to_read_ns = tcp.data_ready_to_read_ns;
        snap.tcp_retransmits = tcp.retransmits;
        snap.exceed_buf_limit_recv = tcp.exceed_buf_limit_recv;
        snap.exceed_buf_limit_send = tcp.exceed_buf_limit_send;
        snap.tcp_state_transitions = tcp
            .state_transitions
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| StateTransition {
                from: TCP_STATE_NAMES[i / TCP_STATES],
                to: TCP_STATE_NAMES[i % TCP_STATES],
                count: *n,
            })
            .collect();
        Ok(())
    }

    /// `struct probe_counters`, the whole of .bss.
    fn counters(&self) -> Result<Counters, ProbeError> {
        let bss = self
            .bss
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| read_err("bss", e))?
            .ok_or_else(|| read_err("bss", ".bss has no entry 0"))?;
        let word = |at: usize| -> Result<u64, ProbeError> {
            let bytes = bss
                .get(at..at + 8)
                .ok_or_else(|| read_err("bss", "shorter than struct probe_counters"))?;
            Ok(u64::from_ne_bytes(bytes.try_into().expect("8 bytes")))
        };
        Ok(Counters {
            threads_used: word(0)?,
            cpu_events_missed: word(8)?,
        })
    }

    /// The per-CPU copies of entry 0 of a one-entry per-CPU array.
    fn percpu_values(
        &self,
        map: &MapHandle,
        name: &'static str,
    ) -> Result<Vec<Vec<u8>>, ProbeError> {
        map.lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| read_err(name, e))?
            .ok_or_else(|| read_err(name, "entry 0 of a per-CPU array is missing"))
    }

    /// Parses every CPU's copy and merges them.
    fn sum_percpu<T: MergeCpus>(
        &self,
        map: &MapHandle,
        name: &'static str,
        parse: fn(&[u8]) -> Result<T, String>,
    ) -> Result<Option<T>, ProbeError> {
        let mut total: Option<T> = None;
        for bytes in self.percpu_values(map, name)? {
            let one = parse(&bytes).map_err(|e| read_err(name, e))?;
            match total.as_mut() {
                Some(t) => t.merge_cpu(&one),
                None => total = Some(one),
            }
        }
        Ok(total)
    }
}

trait MergeCpus {
    fn merge_cpu(&mut self, other: &Self);
}

impl MergeCpus for RawThread {
    fn merge_cpu(&mut self, other: &Self) {
        self.merge(other);
    }
}

impl MergeCpus for maps::RawTcp {
    fn merge_cpu(&mut self, other: &Self) {
        self.merge(other);
    }
}

fn thread_stats(tid: u32, comm: String, raw: &RawThread) -> ThreadStats {
    ThreadStats {
        tid,
        comm,
        runqueue_latency_us: raw.runqueue_latency_us,
        offcpu_us: raw.offcpu_us,
        oncpu_us: raw.oncpu_us,
        page_faults: raw.page_faults,
    }
}

fn by_member(v: [u64; RSS_MEMBERS]) -> RssByMember {
    RssByMember {
        file: v[0],
        anon: v[1],
        swap_entries: v[2],
        shmem: v[3],
    }
}

fn read_err(map: &'static str, e: impl std::fmt::Display) -> ProbeError {
    ProbeError::ReadMap {
        map,
        reason: e.to_string(),
    }
}

/// The thread's current name, while it lives (threads often rename
/// themselves after the kernel first saw them).
fn live_comm(pid: u32, tid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
    Some(comm.trim_end().to_string())
}

/// RSS by `enum mm_counter` member from /proc/<pid>/status (kB lines).
fn proc_rss_bytes(pid: u32) -> Option<[u64; RSS_MEMBERS]> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |field: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(field))?;
        line[field.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
    };
    Some([
        kib("RssFile:")? * 1024,
        kib("RssAnon:")? * 1024,
        kib("VmSwap:")? * 1024,
        kib("RssShmem:")? * 1024,
    ])
}

/// Page size from the auxiliary vector (AT_PAGESZ), without libc; 4096 if unreadable.
fn page_bytes() -> u64 {
    const AT_PAGESZ: u64 = 6;
    let Ok(auxv) = std::fs::read("/proc/self/auxv") else {
        return 4096;
    };
    auxv.chunks_exact(16)
        .map(|pair| {
            let key = u64::from_ne_bytes(pair[..8].try_into().expect("8 bytes"));
            let value = u64::from_ne_bytes(pair[8..].try_into().expect("8 bytes"));
            (key, value)
        })
        .find(|(key, _)| *key == AT_PAGESZ)
        .map_or(4096, |(_, value)| value)
}
