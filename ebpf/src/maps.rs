//! Map values, parsed from the bytes the kernel hands back.
//!
//! The layouts are those of src/bpf/probes.bpf.h: all u64 words in native
//! byte order, then (for threads) a 16-byte comm. Parsing word by word keeps
//! this module free of `unsafe`; the length checks catch a header changed
//! without this file.

use crate::hist::{Log2Hist, LOG2_BUCKETS};

pub(crate) const RSS_MEMBERS: usize = 4;
pub(crate) const TCP_STATES: usize = 16;
/// `THREADS_MAX` of probes.bpf.h: slots in the `threads` array.
pub(crate) const THREADS_MAX: u32 = 1024;
const COMM_BYTES: usize = 16;

/// `struct thread_stats`.
pub(crate) struct RawThread {
    pub runqueue_latency_us: Log2Hist,
    pub offcpu_us: Log2Hist,
    pub oncpu_us: Log2Hist,
    pub page_faults: u64,
    pub tid: u32,
    pub comm: String,
}

pub(crate) const THREAD_STATS_BYTES: usize = (3 * LOG2_BUCKETS + 2) * 8 + COMM_BYTES;

/// `struct tcp_stats`.
#[derive(Default)]
pub(crate) struct RawTcp {
    pub srtt_us: Log2Hist,
    pub data_ready_to_read_ns: Log2Hist,
    pub state_transitions: Vec<u64>, // [old * 16 + new]
    pub retransmits: u64,
    pub exceed_buf_limit_recv: u64,
    pub exceed_buf_limit_send: u64,
}

pub(crate) const TCP_STATS_BYTES: usize = (2 * LOG2_BUCKETS + TCP_STATES * TCP_STATES + 3) * 8;

/// `struct mem_stats` of one CPU.
pub(crate) struct RawMem {
    pub rss_changes: [u64; RSS_MEMBERS],
    pub rss_pages: [u64; RSS_MEMBERS],
    pub rss_updated_ns: [u64; RSS_MEMBERS],
}

pub(crate) const MEM_STATS_BYTES: usize = 3 * RSS_MEMBERS * 8;

/// Reads consecutive u64 words from a map value.
struct Words<'a> {
    bytes: &'a [u8],
}

impl<'a> Words<'a> {
    fn new(bytes: &'a [u8], expected_len: usize, what: &str) -> Result<Self, String> {
        if bytes.len() < expected_len {
            return Err(format!(
                "{what} value is {} bytes, expected {expected_len}: probes.bpf.h and maps.rs disagree",
                bytes.len()
            ));
        }
        Ok(Words { bytes })
    }

    fn u64(&mut self) -> u64 {
        let (word, rest) = self.bytes.split_at(8);
        self.bytes = rest;
        u64::from_ne_bytes(word.try_into().expect("split_at(8) gives 8 bytes"))
    }

    fn hist(&mut self) -> Log2Hist {
        let mut h = Log2Hist::default();
        for b in h.buckets.iter_mut() {
            *b = self.u64();
        }
        h
    }

    fn array<const N: usize>(&mut self) -> [u64; N] {
        std::array::from_fn(|_| self.u64())
    }

    fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

pub(crate) fn parse_thread(bytes: &[u8]) -> Result<RawThread, String> {
    let mut w = Words::new(bytes, THREAD_STATS_BYTES, "thread_stats")?;
    let runqueue_latency_us = w.hist();
    let offcpu_us = w.hist();
    let oncpu_us = w.hist();
    let page_faults = w.u64();
    let tid = w.u64() as u32;
    let comm = &w.rest()[..COMM_BYTES];
    let len = comm.iter().position(|b| *b == 0).unwrap_or(COMM_BYTES);
    Ok(RawThread {
        runqueue_latency_us,
        offcpu_us,
        oncpu_us,
        page_faults,
        tid,
        comm: String::from_utf8_lossy(&comm[..len]).into_owned(),
    })
}

pub(crate) fn parse_tcp(bytes: &[u8]) -> Result<RawTcp, String> {
    let mut w = Words::new(bytes, TCP_STATS_BYTES, "tcp_stats")?;
    Ok(RawTcp {
        srtt_us: w.hist(),
        data_ready_to_read_ns: w.hist(),
        state_transitions: (0..TCP_STATES * TCP_STATES).map(|_| w.u64()).collect(),
        retransmits: w.u64(),
        exceed_buf_limit_recv: w.u64(),
        exceed_buf_limit_send: w.u64(),
    })
}

pub(crate) fn parse_mem(bytes: &[u8]) -> Result<RawMem, String> {
    let mut w = Words::new(bytes, MEM_STATS_BYTES, "mem_stats")?;
    Ok(RawMem {
        rss_changes: w.array(),
        rss_pages: w.array(),
        rss_updated_ns: w.array(),
    })
}

impl RawThread {
    /// Adds another CPU's copy of the shared overflow entry.
    pub(crate) fn merge(&mut self, other: &RawThread) {
        self.runqueue_latency_us.merge(&other.runqueue_latency_us);
        self.offcpu_us.merge(&other.offcpu_us);
        self.oncpu_us.merge(&other.oncpu_us);
        self.page_faults += other.page_faults;
    }
}

impl RawTcp {
    /// Adds another CPU's copy.
    pub(crate) fn merge(&mut self, other: &RawTcp) {
        self.srtt_us.merge(&other.srtt_us);
        self.data_ready_to_read_ns
            .merge(&other.data_ready_to_read_ns);
        if self.state_transitions.is_empty() {
            self.state_transitions = vec![0; TCP_STATES * TCP_STATES];
        }
        for (mine, theirs) in self
            .state_transitions
            .iter_mut()
            .zip(&other.state_transitions)
        {
            *mine += theirs;
        }
        self.retransmits += other.retransmits;
        self.exceed_buf_limit_recv += other.exceed_buf_limit_recv;
        self.exceed_buf_limit_send += other.exceed_buf_limit_send;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_stats_parse_in_header_order() {
        let mut bytes = Vec::new();
        for word in 0..(3 * LOG2_BUCKETS + 2) as u64 {
            bytes.extend_from_slice(&word.to_ne_bytes());
        }
        bytes.extend_from_slice(b"shard-1\0\0\0\0\0\0\0\0\0");
        let t = parse_thread(&bytes).unwrap();
        assert_eq!(t.runqueue_latency_us.buckets[1], 1);
        assert_eq!(t.offcpu_us.buckets[0], 64);
        assert_eq!(t.oncpu_us.buckets[63], 191);
        assert_eq!(t.page_faults, 192);
        assert_eq!(t.tid, 193);
        assert_eq!(t.comm, "shard-1");
    }

    #[test]
    fn short_value_is_an_error_not_a_panic() {
        assert!(parse_tcp(&[0u8; 16]).is_err());
    }
}
