//! Config sources and logs as an operator meets them: stray `HOLDFAST_*` environment variables,
//! typos in the TOML file, logs written to a file or shipped as JSON.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server here may take to start or to stop.
const START_STOP_LIMIT: Duration = Duration::from_secs(10);

/// What a `holdfast serve` run left behind.
struct Run {
    /// Exit code (None = killed by a signal).
    code: Option<i32>,
    /// Everything it wrote to stderr (a file, not a terminal).
    stderr: String,
    /// Whether it printed its listening line.
    started: bool,
}

/// Runs `holdfast serve` with `toml` (after a loopback base) and `env`, stderr to a file; once
/// it listens, SIGTERM and wait. A server that exits by itself (bad config) is waited for.
fn run_serve(toml: &str, env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("holdfast.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshards = 1\n{toml}"),
    )
    .unwrap();
    let stderr_path = dir.path().join("stderr.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_holdfast"));
    command
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("HOLDFAST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("holdfast runs");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut started = false;
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap_or(0) > 0 {
        if line.starts_with("holdfast listening on ") {
            started = true;
            break;
        }
        line.clear();
    }
    if started {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > START_STOP_LIMIT {
            let _ = child.kill();
            panic!("holdfast serve did not exit within {START_STOP_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stderr: read(&stderr_path),
        started,
    }
}

fn read(path: &Path) -> String {
    String::from_utf8(std::fs::read(path).unwrap()).expect("stderr is UTF-8")
}

#[test]
fn unknown_holdfast_env_vars_are_warned_about_once_by_name_and_serve_runs() {
    let run = run_serve(
        "",
        &[
            ("HOLDFAST_VERSION", "1"),
            ("HOLDFAST_BIN", "/usr/bin/holdfast"),
            // A real key next to them still applies.
            ("HOLDFAST_ADMIN_MAX_CONNECTIONS", "16"),
        ],
    );
    assert!(run.started, "serve did not start: {}", run.stderr);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("not config keys"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning: {}", run.stderr);
    assert!(
        warnings[0].contains("HOLDFAST_BIN, HOLDFAST_VERSION"),
        "names them all: {}",
        warnings[0]
    );
    assert!(
        !warnings[0].contains("ADMIN_MAX_CONNECTIONS"),
        "{}",
        warnings[0]
    );
}

#[test]
fn a_real_key_set_by_env_still_applies_when_unknown_ones_are_present() {
    // An invalid value for a real key must still be read (and refused with its key name).
    let run = run_serve(
        "",
        &[
            ("HOLDFAST_VERSION", "1"),
            ("HOLDFAST_ADMIN_MAX_CONNECTIONS", "0"),
        ],
    );
    assert!(!run.started);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("admin_max_connections"),
        "{}",
        run.stderr
    );
}

#[test]
fn unknown_key_in_the_toml_file_exits_2_naming_it() {
    let run = run_serve("admin_max_connectoins = 5\n", &[]);
    assert!(
        !run.started,
        "a typo in the file must not run: {}",
        run.stderr
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("admin_max_connectoins"),
        "names the key: {}",
        run.stderr
    );
}

#[test]
fn serve_logging_to_a_file_writes_no_ansi_escape_bytes() {
    let run = run_serve("", &[("HOLDFAST_VERSION", "1")]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // Info and warning lines are there (a terminal would colour their levels).
    assert!(run.stderr.contains("holdfast started"), "{}", run.stderr);
    assert!(run.stderr.contains("WARN"), "{}", run.stderr);
    assert!(
        !run.stderr.contains('\x1b'),
        "escape bytes in a log file: {:?}",
        run.stderr
    );
}

#[test]
fn json_log_format_writes_one_parseable_object_per_line() {
    let run = run_serve("log_format = \"json\"\n", &[("HOLDFAST_VERSION", "1")]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect();
    for line in &lines {
        for field in ["timestamp", "level", "message", "target"] {
            assert!(line.get(field).is_some(), "{field} missing in {line}");
        }
    }
    let said = |level: &str, text: &str| {
        lines
            .iter()
            .any(|l| l["level"] == level && l["message"].as_str().unwrap().contains(text))
    };
    assert!(said("INFO", "holdfast started"), "{}", run.stderr);
    assert!(said("WARN", "HOLDFAST_VERSION"), "{}", run.stderr);
    assert!(said("INFO", "holdfast stopped"), "{}", run.stderr);
    assert!(!run.stderr.contains('\x1b'), "{:?}", run.stderr);
}

#[test]
fn unknown_log_format_exits_2_naming_the_key() {
    let run = run_serve("log_format = \"xml\"\n", &[]);
    assert!(!run.started);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("log_format"), "{}", run.stderr);
}
