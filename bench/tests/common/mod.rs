//! Shared by the bench's end-to-end tests: find the binaries, run one workload, read its summary.

use std::path::PathBuf;
use std::process::{Command, Stdio};

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
