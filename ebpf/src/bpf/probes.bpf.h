/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Layouts shared by probes.bpf.c and src/maps.rs. Every field is a u64 (or an
 * array of u64, or bytes at the end) so the Rust side can parse a map value as
 * plain little-endian words without unsafe. Keep src/maps.rs in step with
 * these sizes; it asserts them when it reads a value.
 */
#ifndef HOLDFAST_PROBES_BPF_H
#define HOLDFAST_PROBES_BPF_H

/* Bucket i counts values in [2^i, 2^(i+1)); 0 and 1 both land in bucket 0. */
#define HIST_BUCKETS 64

/* Threads of the target process that get their own slot (in order of first
 * sight, never reused); the rest share the per-CPU `other_threads` entry. */
#define THREADS_MAX 1024

/* TCP states are 1..12 (TCP_NEW_SYN_RECV 12); a 16x16 matrix keeps the
 * index a shift and a mask. */
#define TCP_STATES 16

/* enum mm_counter: MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES. */
#define RSS_MEMBERS 4

struct thread_stats {
	__u64 runqueue_latency_us[HIST_BUCKETS];
	__u64 offcpu_us[HIST_BUCKETS];
	__u64 oncpu_us[HIST_BUCKETS];
	__u64 page_faults;
	__u64 tid;
	char comm[16];
};

struct tcp_stats {
	__u64 srtt_us[HIST_BUCKETS];
	__u64 data_ready_to_read_ns[HIST_BUCKETS];
	__u64 state_transitions[TCP_STATES * TCP_STATES]; /* [old * 16 + new] */
	__u64 retransmits;
	__u64 exceed_buf_limit_recv;
	__u64 exceed_buf_limit_send;
};

struct mem_stats {
	__u64 rss_changes[RSS_MEMBERS];
	__u64 rss_pages[RSS_MEMBERS];      /* value seen by the latest event on this CPU */
	__u64 rss_updated_ns[RSS_MEMBERS]; /* when; userspace keeps the newest over CPUs */
};

#endif
