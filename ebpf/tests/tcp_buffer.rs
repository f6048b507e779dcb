//! Socket-memory pressure: sock:sock_exceed_buf_limit.
//!
//! The tracepoint fires only when socket memory accounting refuses memory:
//! the machine-wide tcp_mem limits, or the socket's memory cgroup. A full
//! receive buffer alone (a tiny SO_RCVBUF) makes TCP prune and drop before it
//! asks for memory, so it never fires this event (README.md, "exceed_buf_limit").
//! On a shared machine we must not lower tcp_mem, so the test caps TCP memory
//! of one cgroup (v1 memory.kmem.tcp.limit_in_bytes) and accepts the server
//! socket from a thread moved into it: the socket is charged there, and a
//! flood from the client overruns the cap. The same cap on a client makes
//! its kernel drop what the server sends, which the server retransmits.

mod common;

use std::fs;
use std::io::{ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{attach_to_self, current_tid};

/// TCP memory the server socket's cgroup may use: a few loopback segments.
const CGROUP_TCP_BYTES_MAX: u64 = 64 << 10;
const FLOOD_CHUNK_BYTES: usize = 64 << 10;
const FLOOD_TIME_MAX: Duration = Duration::from_secs(3);
/// Why these tests cannot run without cgroup v1 TCP memory accounting (they fail, never skip).
const NO_TCP_MEMORY_CAP: &str = "no cgroup-v1 memory controller with memory.kmem.tcp.limit_in_bytes for this process, so this test cannot cap one socket's TCP memory";

/// This process's cgroup-v1 memory directory, if the v1 memory controller
/// with TCP accounting is mounted.
fn memory_cgroup_v1() -> Option<PathBuf> {
    let cgroups = fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroups.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.to_string())
    })?;
    let dir = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
    dir.join("memory.kmem.tcp.limit_in_bytes")
        .exists()
        .then_some(dir)
}

/// A child cgroup with a TCP memory cap; the calling thread visits it in
/// `run_inside`. Removed on drop.
struct CappedCgroup {
    dir: PathBuf,
    home: PathBuf,
}

impl CappedCgroup {
    fn create(home: PathBuf, test: &str) -> std::io::Result<CappedCgroup> {
        let dir = home.join(format!("holdfast-ebpf-{test}-{}", std::process::id()));
        fs::create_dir(&dir)?;
        let cg = CappedCgroup { dir, home };
        fs::write(
            cg.dir.join("memory.kmem.tcp.limit_in_bytes"),
            CGROUP_TCP_BYTES_MAX.to_string(),
        )?;
        Ok(cg)
    }

    /// Runs `f` with only this thread in the capped cgroup (v1 moves threads
    /// one by one via `tasks`); sockets created there are charged there.
    fn run_inside<T>(&self, f: impl FnOnce() -> T) -> std::io::Result<T> {
        let tid = current_tid().to_string();
        fs::write(self.dir.join("tasks"), &tid)?;
        let out = f();
        fs::write(self.home.join("tasks"), &tid)?;
        Ok(out)
    }
}

impl Drop for CappedCgroup {
    fn drop(&mut self) {
        let _ = fs::write(self.home.join("tasks"), current_tid().to_string());
        let _ = fs::remove_dir(&self.dir);
    }
}

#[test]
fn receive_flood_past_the_cgroup_tcp_memory_cap_counts_exceed_buf_limit_recv() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let probes = attach_to_self(addr.port());
    let home = memory_cgroup_v1().unwrap_or_else(|| {
        panic!(
            "{NO_TCP_MEMORY_CAP}: sock_exceed_buf_limit needs socket memory accounting to refuse"
        )
    });
    let cgroup = CappedCgroup::create(home, "recv")
        .expect("create a child memory cgroup (root on cgroup v1)");

    let mut client = TcpStream::connect(addr).unwrap();
    let (server, _) = cgroup.run_inside(|| listener.accept().unwrap()).unwrap();
    client.set_nonblocking(true).unwrap();

    // The server never reads: queued data is charged to the capped cgroup
    // until the charge fails and the kernel traces sock_exceed_buf_limit.
    let chunk = vec![0x5au8; FLOOD_CHUNK_BYTES];
    let deadline = Instant::now() + FLOOD_TIME_MAX;
    let mut sent_bytes = 0usize;
    let snap = loop {
        match client.write(&chunk) {
            Ok(n) => sent_bytes += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("flood write: {e}"),
        }
        let snap = probes.snapshot().unwrap();
        if snap.exceed_buf_limit_recv > 0 || Instant::now() >= deadline {
            break snap;
        }
    };
    drop(server);
    drop(client);
    drop(cgroup);
    assert!(
        snap.exceed_buf_limit_recv > 0,
        "sent {sent_bytes} B into a socket capped at {CGROUP_TCP_BYTES_MAX} B of TCP memory:\n{}",
        snap.render_text()
    );
    assert_eq!(
        snap.exceed_buf_limit_send, 0,
        "the capped socket only receives"
    );
}

#[test]
fn segments_dropped_by_a_capped_receiver_are_retransmitted_and_counted() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let probes = attach_to_self(addr.port());
    let home = memory_cgroup_v1().unwrap_or_else(|| {
        panic!("{NO_TCP_MEMORY_CAP}: loopback does not lose segments otherwise")
    });
    let cgroup = CappedCgroup::create(home, "retransmit")
        .expect("create a child memory cgroup (root on cgroup v1)");

    // This time the client is capped and the server (our port) floods it:
    // the client's kernel drops what it cannot charge, the server retransmits.
    let client = cgroup
        .run_inside(|| TcpStream::connect(addr).unwrap())
        .unwrap();
    let (mut server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    let chunk = vec![0xa5u8; FLOOD_CHUNK_BYTES];
    // Retransmission waits for the RTO (>= 200 ms), so allow a few.
    let deadline = Instant::now() + FLOOD_TIME_MAX;
    let snap = loop {
        match server.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("flood write: {e}"),
        }
        let snap = probes.snapshot().unwrap();
        if snap.tcp_retransmits > 0 || Instant::now() >= deadline {
            break snap;
        }
    };
    drop(server);
    drop(client);
    drop(cgroup);
    assert!(
        snap.tcp_retransmits > 0,
        "no retransmit seen:\n{}",
        snap.render_text()
    );
    assert_eq!(
        snap.exceed_buf_limit_recv, 0,
        "the dropping socket is the client's, not on our port"
    );
}
