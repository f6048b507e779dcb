//! Holdfast under systemd, without systemd: a unix datagram socket bound by the test plays the
//! service manager's NOTIFY_SOCKET, and listeners the test owns are passed as fd 3.. with
//! LISTEN_FDS / LISTEN_PID the way systemd's socket activation does.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_protocol::Kind;

use crate::support::{Client, Ending, Server};

/// How long a test waits for a notification it expects.
const NOTIFY_WAIT_MS: u64 = 10_000;

/// Config lines every server started here gets: an ephemeral admin port when the binary has an
/// admin listener (the default 127.0.0.1:9878 would collide between tests running at once).
pub fn base_toml() -> &'static str {
    static BASE: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe.toml");
        let admin = "admin_listen = \"127.0.0.1:0\"\n";
        std::fs::write(&path, admin).unwrap();
        let known = Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .is_ok_and(|o| o.status.success());
        if known {
            admin
        } else {
            ""
        }
    })
}

/// Reads notifications until one satisfies `want`; returns every one read.
fn wait_for(socket: &UnixDatagram, want: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_millis(NOTIFY_WAIT_MS);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = message.lines().any(&want);
        seen.push(message);
        if done {
            return seen;
        }
    }
    panic!("no matching notification in {NOTIFY_WAIT_MS} ms; got {seen:?}");
}

fn notify_socket() -> (tempfile::TempDir, std::path::PathBuf, UnixDatagram) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    (dir, path, socket)
}

#[test]
fn notify_socket_gets_ready_status_and_watchdog_then_stopping_on_sigterm() {
    let (_dir, path, notify) = notify_socket();
    let mut server = Server::start_with(
        "shards = 2\n",
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let first = wait_for(&notify, |l| l == "READY=1");
    assert!(
        first
            .iter()
            .any(|m| m.contains("STATUS=accepting, shards=2")),
        "{first:?}"
    );
    wait_for(&notify, |l| l == "WATCHDOG=1");

    let mut client = server.connect();
    client.hello();
    wait_for(&notify, |l| {
        l.starts_with("STATUS=") && l.ends_with("sessions=1")
    });

    server.signal(libc::SIGTERM);
    wait_for(&notify, |l| l == "STOPPING=1");
    assert_eq!(client.recv().kind, Kind::Goodbye);
    assert_eq!(client.ending(), Ending::Eof(vec![]));
    drop(client);
    assert!(server.wait_exit(Duration::from_secs(15)).success());
}

#[test]
fn without_watchdog_usec_no_watchdog_ping_is_sent() {
    let (_dir, path, notify) = notify_socket();
    let mut server =
        Server::start_with("shards = 1\n", &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    let seen = wait_for(&notify, |l| l == "READY=1");
    server.signal(libc::SIGTERM);
    let mut seen_after = wait_for(&notify, |l| l == "STOPPING=1");
    seen_after.extend(seen);
    assert!(
        !seen_after.iter().any(|m| m.contains("WATCHDOG=1")),
        "{seen_after:?}"
    );
    assert!(server.wait_exit(Duration::from_secs(15)).success());
}

/// `holdfast serve` started the way systemd starts a socket-activated service: `listeners` as
/// fds 3.., LISTEN_FDS = their count, LISTEN_PID = the server's own pid (a shell sets it to $$
/// and execs the server, so the pid is the same). `start` returns after READY=1, which the
/// server sends only once its signal handlers are installed, so a SIGTERM right after is a
/// drain.
struct Activated {
    child: Child,
    addr: SocketAddr,
    _notify: UnixDatagram,
    _dir: tempfile::TempDir,
}

impl Activated {
    fn start(listeners: &[&TcpListener], toml: &str) -> Result<Activated, String> {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("holdfast.toml");
        std::fs::write(&config, format!("{}{toml}", base_toml())).unwrap();
        let fds: Vec<i32> = listeners.iter().map(|l| l.as_raw_fd()).collect();
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut command = Command::new("sh");
        command
            .env("NOTIFY_SOCKET", &notify_path)
            .arg("-c")
            .arg(r#"LISTEN_PID=$$ LISTEN_FDS=$1 exec "$0" serve --config "$2""#)
            .arg(env!("CARGO_BIN_EXE_holdfast"))
            .arg(fds.len().to_string())
            .arg(&config)
            .env("HOLDFAST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2) on
        // descriptors the parent keeps open for the whole spawn. Each fd is first copied above
        // 100 so that placing one at 3+i cannot overwrite another still to be placed; dup2 to
        // a different number also clears close-on-exec on the copy the server inherits.
        unsafe {
            command.pre_exec(move || {
                let mut high = Vec::with_capacity(fds.len());
                for &fd in &fds {
                    let copy = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
                    if copy < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    high.push(copy);
                }
                for (i, &fd) in high.iter().enumerate() {
                    if libc::dup2(fd, 3 + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = lines.find_map(|line| {
            let line = line.ok()?;
            line.contains("listening on")
                .then(|| line.split_whitespace().find_map(|w| w.parse().ok()))
                .flatten()
        });
        match addr {
            Some(addr) => {
                std::thread::spawn(move || std::io::copy(&mut { stderr }, &mut std::io::sink()));
                wait_for(&notify, |l| l == "READY=1");
                Ok(Activated {
                    child,
                    addr,
                    _notify: notify,
                    _dir: dir,
                })
            }
            None => {
                let status = child.wait().unwrap();
                let mut message = String::new();
                std::io::Read::read_to_string(&mut { stderr }, &mut message).unwrap();
                Err(format!("{status}: {message}"))
            }
        }
    }

    fn sigterm_and_wait(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Listening TCP sockets on `port` in this network namespace (/proc/net/tcp state 0A).
fn listeners_on_port(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields[3] == "0A" && fields[1].ends_with(&format!(":{port:04X}"))
        })
        .count()
}

#[test]
fn inherited_listener_serves_sessions_and_nothing_new_is_bound() {
    let inherited = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = inherited.local_addr().unwrap().port();
    // The config's own listen address is taken by a socket the test holds: were the server to
    // bind instead of using fd 3, it would fail to start.
    let occupied = TcpListener::bind("127.0.0.1:0").unwrap();
    // The sessions below never close on Goodbye: a short drain, so SIGTERM ends the server
    // well within sigterm_and_wait's limit on a loaded machine (the default drain is 10 s).
    let toml = format!(
        "listen = \"{}\"\nshards = 2\ndrain_timeout_ms = 500\n",
        occupied.local_addr().unwrap()
    );
    let mut server = Activated::start(&[&inherited], &toml).unwrap();
    assert_eq!(server.addr.port(), port);
    assert_eq!(
        listeners_on_port(port),
        1,
        "the inherited socket is the only listener"
    );
    // Both shards accept from dups of the one inherited socket.
    let mut clients: Vec<Client> = (0..8)
        .map(|_| Client::from_stream(TcpStream::connect(("127.0.0.1", port)).unwrap()))
        .collect();
    for client in &mut clients {
        client.hello();
    }
    assert!(server.sigterm_and_wait().success());
}

#[test]
fn restart_on_the_inherited_socket_refuses_no_connection() {
    let inherited = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = inherited.local_addr().unwrap().port();
    let mut first = Activated::start(&[&inherited], "shards = 1\n").unwrap();
    let mut before = Client::from_stream(TcpStream::connect(("127.0.0.1", port)).unwrap());
    before.hello();
    assert!(first.sigterm_and_wait().success());
    assert_eq!(before.recv().kind, Kind::Goodbye);

    // No server runs now, yet the socket (held by the "service manager", here the test) still
    // listens: the connection waits in its backlog instead of being refused.
    let mut during = Client::from_stream(TcpStream::connect(("127.0.0.1", port)).unwrap());
    during.send(Kind::Hello, 1, &[]);

    let mut second = Activated::start(&[&inherited], "shards = 1\n").unwrap();
    let welcome = during.recv();
    assert_eq!(
        welcome.kind,
        Kind::Welcome,
        "queued connection served by the new process"
    );
    let status = second.sigterm_and_wait();
    assert!(status.success(), "{status:?}");
}

#[test]
fn more_inherited_listeners_than_shards_is_refused_with_advice() {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let error = Activated::start(&[&a, &b], "shards = 1\n")
        .err()
        .expect("start refused");
    assert!(
        error.contains("LISTEN_FDS passes 2 listeners but 1 shards run"),
        "{error}"
    );
}

/// `systemd-analyze verify` on systemd/holdfast.{socket,service}, with ExecStart pointed at the
/// binary under test (verify checks that it exists). Debian package: systemd.
#[test]
fn systemd_units_verify() {
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        available,
        "systemd-analyze is not installed: run ./run.sh deps (Debian package systemd)"
    );
    let units = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd");
    let dir = tempfile::tempdir().unwrap();
    for name in ["holdfast.socket", "holdfast.service"] {
        let text = std::fs::read_to_string(format!("{units}/{name}")).unwrap();
        let text = text.replace("/usr/local/bin/holdfast", env!("CARGO_BIN_EXE_holdfast"));
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("holdfast.socket"))
        .arg(dir.path().join("holdfast.service"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "verify warned: {stderr}");
}
