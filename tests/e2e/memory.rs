//! What the server process maps and keeps resident: a shard of many rings maps no more ring
//! memory than a shard of one (each ring gets its share of the shard's queue entries), and
//! the heap gets no transparent huge pages unless `heap_huge_pages` asks for them.

use crate::support::Server;

/// Bytes of the io_uring mappings (SQ/CQ rings and SQE arrays, the shards' and glommio's) of
/// process `pid`, from /proc/PID/smaps.
fn io_uring_mapped_bytes(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut in_ring = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            in_ring = line.contains("io_uring");
        } else if in_ring && first == "Size:" {
            kib += line
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap();
        }
    }
    kib * 1024
}

/// A shard of nine rings (tables of 256, 2,000 sessions) maps no more SQ/CQ memory than a
/// shard of one: each ring gets its share of ring_sq_entries and ring_cq_entries. (Each got
/// all of them before: 4,096 SQEs and 32,768 CQEs, ~790 KiB per ring; 46 MB per process at
/// the 1M shape of 29 rings per shard.)
#[test]
fn a_shard_of_nine_rings_maps_no_more_ring_memory_than_a_shard_of_one() {
    let one = Server::start("shards = 1\nmax_connections_per_shard = 100\n");
    let nine =
        Server::start("shards = 1\nring_max_fixed_files = 256\nmax_connections_per_shard = 2000\n");
    let (one_bytes, nine_bytes) = (
        io_uring_mapped_bytes(one.pid()),
        io_uring_mapped_bytes(nine.pid()),
    );
    // The full entries of one ring: what each extra ring used to add.
    let full_ring_bytes = 4_096 * 64 + 32_768 * 16;
    assert!(one_bytes >= full_ring_bytes, "one ring maps {one_bytes} B");
    assert!(
        nine_bytes <= one_bytes,
        "nine rings map {nine_bytes} B, one ring {one_bytes} B"
    );
}

/// `THP_enabled` of process `pid` (/proc/PID/status): 0 once it set PR_SET_THP_DISABLE.
fn thp_enabled(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .expect("THP_enabled in /proc/PID/status")
        .trim()
        .to_owned()
}

/// By default the server turns transparent huge pages off for itself (a 2 MiB page stays
/// resident while any byte of it is used: the heap's growth per idle session doubled);
/// `heap_huge_pages = true` leaves them to the kernel and the allocator.
#[test]
fn transparent_huge_pages_are_off_unless_heap_huge_pages_is_set() {
    let default = Server::start("shards = 1\n");
    assert_eq!(thp_enabled(default.pid()), "0");
    let huge = Server::start("shards = 1\nheap_huge_pages = true\n");
    assert_eq!(thp_enabled(huge.pid()), "1");
}
