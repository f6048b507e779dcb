//! Shared by the bench's end-to-end tests: find the binaries, start `holdfast serve`, run one
//! workload, read its summary.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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

/// Starts `holdfast serve --shards N` on port 0 for sessions and admin (`env`: extra
/// `HOLDFAST_*` settings); reads both real addresses from the start-up lines
/// `holdfast listening on ADDR shards=N` and `holdfast admin on ADDR`. Fails, never skips,
/// without the binary (`what` names the test in that message).
#[allow(dead_code)]
pub fn start_holdfast(what: &str, shards: u32, env: &[(&str, &str)]) -> Holdfast {
    let bin = holdfast_bin().unwrap_or_else(|| {
        panic!(
            "{what} needs the holdfast binary: cargo build -p holdfast-server (or set \
             HOLDFAST_BIN); looked beside {BENCH}"
        )
    });
    let shards = shards.to_string();
    let mut child = Command::new(&bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--shards",
            &shards,
        ])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keeps reading after the test has its two lines, so the server never writes to a
        // closed pipe.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = tx.send(line);
        }
    });
    let (mut listen, mut admin) = (None, None);
    while listen.is_none() || admin.is_none() {
        let line = rx.recv_timeout(SERVER_START_TIMEOUT).unwrap_or_else(|_| {
            panic!(
                "{} printed no `holdfast listening on` and `holdfast admin on` lines within {:?} \
                 (listen {listen:?}, admin {admin:?})",
                bin.display(),
                SERVER_START_TIMEOUT
            )
        });
        if let Some(rest) = line.strip_prefix("holdfast listening on ") {
            listen = rest.split_whitespace().next().map(str::to_owned);
        } else if let Some(rest) = line.strip_prefix("holdfast admin on ") {
            admin = rest.split_whitespace().next().map(str::to_owned);
        }
    }
    Holdfast {
        child,
        listen: listen.unwrap(),
        admin: admin.unwrap(),
    }
}
