//! `holdfast tune`: the plan for N connections, `--check` against this host, and the same check
//! as warnings when `serve` starts.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Exit code for "does not fit" / "host falls short" (ops::tune::EXIT_HOST_SHORTFALL).
const EXIT_HOST_SHORTFALL: i32 = 3;
/// A listen backlog no kernel's somaxconn (an int) reaches.
const BACKLOG_ABOVE_ANY_SOMAXCONN: u64 = 4_000_000_000;

fn holdfast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(args)
        .env("HOLDFAST_LOG", "warn")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn ten_million_on_64_cores_fits_in_64_gib_with_sysctls_and_memory_table() {
    let output = holdfast(&[
        "tune",
        "--connections",
        "10000000",
        "--cores",
        "64",
        "--memory-gib",
        "64",
    ]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    for expected in [
        "max_connections_per_shard = 171875",
        "LimitNOFILE=",
        "fs.nr_open = ",
        "fs.file-max = ",
        "net.core.somaxconn = 65535",
        "net.ipv4.tcp_mem = ",
        "socket: tcp_sock, inode, file, dentry",
        "io_uring: pending multishot poll",
        "holdfast: connection slot (Conn)",
        "FITS:",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn ten_million_in_32_gib_does_not_fit_and_exits_3() {
    let output = holdfast(&[
        "tune",
        "--connections",
        "10000000",
        "--cores",
        "64",
        "--memory-gib",
        "32",
    ]);
    assert_eq!(output.status.code(), Some(EXIT_HOST_SHORTFALL));
    assert!(stdout(&output).contains("DOES NOT FIT"));
}

fn config_file(toml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("holdfast.toml");
    std::fs::write(&path, toml).unwrap();
    let path = path.to_str().unwrap().to_owned();
    (dir, path)
}

#[test]
fn check_names_each_shortfall_and_exits_3() {
    // More slots per shard than fs.nr_open allows anywhere by default, a backlog above any
    // somaxconn.
    let (_dir, path) = config_file(&format!(
        "shards = 1\nmax_connections_per_shard = 16000000\nlisten_backlog = {BACKLOG_ABOVE_ANY_SOMAXCONN}\n"
    ));
    let output = holdfast(&["tune", "--check", "--config", &path]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(EXIT_HOST_SHORTFALL), "{text}");
    for limit in ["RLIMIT_NOFILE", "net.core.somaxconn", "memory"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("SHORTFALL {limit}: have "))),
            "no {limit} line in\n{text}"
        );
    }
}

#[test]
fn check_passes_for_a_small_config() {
    let (_dir, path) =
        config_file("shards = 1\nmax_connections_per_shard = 1000\nlisten_backlog = 128\n");
    let output = holdfast(&["tune", "--check", "--config", &path]);
    assert!(output.status.success(), "{}", stdout(&output));
}

#[test]
fn serve_warns_about_a_shortfall_at_start_and_still_serves() {
    let (_dir, path) = config_file(&format!(
        "{}listen = \"127.0.0.1:0\"\nshards = 1\nlisten_backlog = {BACKLOG_ABOVE_ANY_SOMAXCONN}\n",
        crate::systemd::base_toml()
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["serve", "--config", &path])
        .env("HOLDFAST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("listening on"));
    assert!(started, "server did not start");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = reader.join().unwrap();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("host check:")).collect();
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("host check: net.core.somaxconn: have")),
        "{log}"
    );
    assert!(warnings.iter().all(|l| !l.contains('\n')), "one line each");
}

/// The kernel caps one io_uring fixed-file table at 1,048,576 entries (IORING_MAX_FIXED_FILES)
/// and at RLIMIT_NOFILE. Ten million on 2 or 4 cores plans a ring set per shard whose tables
/// the kernel accepts; a config that would need more rings than a shard may own is refused up
/// front by check-config and serve, naming the limit and the fix, not left to fail at ring
/// setup; one that needs several rings is accepted.
#[test]
fn ten_million_on_two_or_four_cores_plans_ring_sets_and_impossible_configs_are_refused() {
    for (cores, rings) in [("2", "6"), ("4", "3")] {
        let output = holdfast(&[
            "tune",
            "--connections",
            "10000000",
            "--cores",
            cores,
            "--memory-gib",
            "128",
        ]);
        let text = stdout(&output);
        assert!(output.status.success(), "{cores} cores: {text}");
        assert!(
            text.contains(&format!(
                "each shard owns {rings} io_uring ring(s) of at most 1048576"
            )),
            "{cores} cores: {text}"
        );
        assert!(
            text.contains("LimitNOFILE=1052672"),
            "{cores} cores: {text}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("holdfast.toml");
    let nofile = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap().0;
    let write = |sessions: u64| {
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:0\"\nadmin_enabled = false\nshards = 1\nmax_connections_per_shard = {sessions}\n"
            ),
        )
        .unwrap();
    };
    // Past one table: several rings, accepted.
    write(nofile + 1);
    let output = holdfast(&["check-config", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // Past MAX_RINGS_PER_SHARD (64) tables of RLIMIT_NOFILE: refused, naming both.
    write(64 * nofile + 1);
    for command in ["check-config", "serve"] {
        let output = holdfast(&[command, "--config", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command}: {stderr}");
        assert!(stderr.contains("RLIMIT_NOFILE"), "{command}: {stderr}");
        assert!(stderr.contains("LimitNOFILE"), "{command}: {stderr}");
        assert!(
            stderr.contains("MAX_RINGS_PER_SHARD"),
            "{command}: {stderr}"
        );
    }
}
