//! Shared by the bench's end-to-end tests: find the binaries, start `holdfast serve` or a
//! baseline, pick ports, run one workload, read its summary.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BENCH: &str = env!("CARGO_BIN_EXE_holdfast-bench");

/// The `holdfast` server binary: HOLDFAST_BIN, or the one built beside holdfast-bench.
pub fn holdfast_bin() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("HOLDFAST_BIN") {
        return Some(PathBuf::from(path));
    }
    let beside = PathBuf::from(BENCH).with_file_name("holdfast");
    beside.exists().then_some(beside)
}

/// Runs `holdfast-bench ARGS --out TMP --label run`, asserts it succeeded (`hint` is added to
/// the failure message) and wrote `run.<ext>` for each of `files`, and returns `run.json`.
pub fn run_bench(args: &[&str], files: &[&str], hint: &str) -> Value {
    let out = tempfile::tempdir().unwrap();
    let mut args = args.to_vec();
    args.extend(["--out", out.path().to_str().unwrap(), "--label", "run"]);
    let output = Command::new(BENCH)
        .args(&args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "holdfast-bench {args:?} failed ({:?}){hint}\n{stdout}",
        output.status
    );
    for ext in files {
        assert!(
            out.path().join(format!("run.{ext}")).exists(),
            "run.{ext} missing"
        );
    }
    serde_json::from_slice(&std::fs::read(out.path().join("run.json")).unwrap()).unwrap()
}

/// The timing flags of a short workload run: no warm-up, one second measured, `drain_ms` for
/// what is in flight at the end, and 20 s to open the sessions.
#[allow(dead_code)]
pub fn one_second_run(drain_ms: &'static str) -> [&'static str; 8] {
    [
        "--warmup-s",
        "0",
        "--duration-s",
        "1",
        "--drain-ms",
        drain_ms,
        "--setup-timeout-s",
        "20",
    ]
}

/// How long `holdfast serve` may take to print its listening lines.
#[allow(dead_code)] // not every test crate that includes this module starts holdfast
pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(15);

/// A `holdfast serve` started by [`start_holdfast`]; killed on drop.
#[allow(dead_code)]
pub struct Holdfast {
    pub child: Child,
    pub listen: String,
    pub admin: String,
}

impl Drop for Holdfast {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `holdfast` binary ([`holdfast_bin`]); fails, never skips, without it (`what` names the
/// test in that message).
#[allow(dead_code)]
pub fn require_holdfast_bin(what: &str) -> PathBuf {
    holdfast_bin().unwrap_or_else(|| {
        panic!(
            "{what} needs the holdfast binary: cargo build -p holdfast-server (or set \
             HOLDFAST_BIN); looked beside {BENCH}"
        )
    })
}

/// Starts `holdfast ARGS` (`env`: extra `HOLDFAST_*` settings) with its stdout piped and reads
/// the address after each of `prefixes` from its start-up lines ([`listen_addrs`]). Fails,
/// never skips, without the binary (`what` names the test in that message).
#[allow(dead_code)]
pub fn spawn_holdfast<const N: usize>(
    what: &str,
    args: &[&str],
    env: &[(&str, &str)],
    prefixes: [&str; N],
) -> (Child, [String; N]) {
    let bin = require_holdfast_bin(what);
    let mut child = Command::new(&bin)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let addrs = listen_addrs(&mut child, prefixes, &bin);
    (child, addrs)
}

/// Starts `holdfast serve --shards N` on port 0 for sessions and admin (`env`: extra
/// `HOLDFAST_*` settings); reads both real addresses from the start-up lines
/// `holdfast listening on ADDR shards=N` and `holdfast admin on ADDR`. Fails, never skips,
/// without the binary (`what` names the test in that message).
#[allow(dead_code)]
pub fn start_holdfast(what: &str, shards: u32, env: &[(&str, &str)]) -> Holdfast {
    let shards = shards.to_string();
    let (child, [listen, admin]) = spawn_holdfast(
        what,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--shards",
            &shards,
        ],
        env,
        ["holdfast listening on ", "holdfast admin on "],
    );
    Holdfast {
        child,
        listen,
        admin,
    }
}

/// Reads `child`'s stdout (piped) until a line starting with each of `prefixes` came; returns
/// the first word after each prefix (a listener's address), in `prefixes` order. The lines
/// are read on by a thread after that, so the server never writes to a closed pipe.
#[allow(dead_code)]
pub fn listen_addrs<const N: usize>(
    child: &mut Child,
    prefixes: [&str; N],
    bin: &Path,
) -> [String; N] {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = tx.send(line);
        }
    });
    let mut found: [Option<String>; N] = std::array::from_fn(|_| None);
    while found.iter().any(Option::is_none) {
        let line = rx.recv_timeout(SERVER_START_TIMEOUT).unwrap_or_else(|_| {
            panic!(
                "{} printed no line starting {prefixes:?} within {SERVER_START_TIMEOUT:?} (found \
                 {found:?})",
                bin.display()
            )
        });
        for (prefix, slot) in prefixes.iter().zip(&mut found) {
            if let Some(rest) = line.strip_prefix(prefix) {
                *slot = rest.split_whitespace().next().map(str::to_owned);
            }
        }
    }
    found.map(Option::unwrap)
}

/// A child process, killed and reaped on drop.
#[allow(dead_code)]
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server started by [`start_listening`]: the process and the address it accepts on.
#[allow(dead_code)]
pub struct Listening {
    pub proc: Proc,
    pub addr: SocketAddr,
}

/// Starts `bin ARGS --listen 127.0.0.1:PORT` on a port from [`free_fixed_ports`] and waits
/// until it accepts connections (fails if it exits first or takes over
/// [`SERVER_START_TIMEOUT`]).
#[allow(dead_code)]
pub fn start_listening(bin: &Path, args: &[&str]) -> Listening {
    let addr: SocketAddr = ([127, 0, 0, 1], free_fixed_ports(1)).into();
    let listen = addr.to_string();
    let child = Command::new(bin)
        .args(args)
        .args(["--listen", &listen])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let mut proc = Proc(child);
    let started = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(
            proc.0.try_wait().unwrap().is_none(),
            "{} exited at start",
            bin.display()
        );
        assert!(
            started.elapsed() < SERVER_START_TIMEOUT,
            "{} did not listen on {addr}",
            bin.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Listening { proc, addr }
}

/// Starts `holdfast-baseline-NAME --cores 1 EXTRA` (see [`start_listening`]).
#[allow(dead_code)]
pub fn start_baseline(name: &str, extra: &[&str]) -> Listening {
    let bin = PathBuf::from(BENCH).with_file_name(format!("holdfast-baseline-{name}"));
    let mut args = vec!["--cores", "1"];
    args.extend(extra);
    start_listening(&bin, &args)
}

/// Lowest port [`free_fixed_ports`] hands out.
const FIXED_PORT_MIN: u16 = 10_000;
/// Tries of [`free_fixed_ports`] before it gives up.
const FIXED_PORT_ATTEMPTS_MAX: u32 = 64;
/// Where the next [`free_fixed_ports`] call of this process starts looking (so concurrent
/// tests in one process try different blocks).
static FIXED_PORT_NEXT: AtomicU32 = AtomicU32::new(0);

/// The first of `count` consecutive loopback ports, each free now, below the ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768-60999 by default). A port the test picks there is
/// never handed to a connect() or a port-0 listener, so a load test running beside it that
/// fills the ephemeral range cannot take it before the server binds it; the place looked at
/// first depends on the process id and a per-process counter, so tests running at once (in one
/// process or several) pick different blocks.
#[allow(dead_code)]
pub fn free_fixed_ports(count: u16) -> u16 {
    let ephemeral_min = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    assert!(
        ephemeral_min > FIXED_PORT_MIN + 1_000 + count,
        "ip_local_port_range starts at {ephemeral_min}: no room below it for fixed test ports"
    );
    let span = u32::from(ephemeral_min - FIXED_PORT_MIN - count);
    let seed = std::process::id().wrapping_mul(7_919);
    for _ in 0..FIXED_PORT_ATTEMPTS_MAX {
        let offset = FIXED_PORT_NEXT.fetch_add(u32::from(count) + 1, Ordering::Relaxed);
        let first = FIXED_PORT_MIN + (seed.wrapping_add(offset) % span) as u16;
        let free =
            (first..first + count).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok());
        if free {
            return first;
        }
    }
    panic!("no {count} free consecutive ports below {ephemeral_min} in {FIXED_PORT_ATTEMPTS_MAX} tries");
}
