// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Holdfast probes: where a request's latency goes when it is not in our code.
 *
 *   CPU     sched_wakeup / sched_wakeup_new / sched_switch   per thread of the target tgid
 *           (sched_process_exit keeps an exited thread's name)
 *   memory  exceptions:page_fault_user, kmem:rss_stat         the target process
 *   TCP     sock:sk_data_ready, sock:sock_recv_length (also srtt, per read),
 *           sock:sock_send_length, sock:inet_sock_set_state,
 *           tcp:tcp_retransmit_skb, sock:sock_exceed_buf_limit
 *
 * Every program is tp_btf: it attaches without tracefs and gets typed,
 * trusted pointers (which the task and socket storage helpers require).
 * README.md says, per hook, in which context it runs and why it filters by
 * tgid or by port.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "probes.bpf.h"

#define MSG_PEEK 2
#define SK_MEM_RECV 1 /* include/net/sock.h; SK_MEM_SEND is 0 */

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by userspace before load (ProbeConfig). */
const volatile __u32 target_tgid = 0;
const volatile __u16 target_port = 0; /* 0: sockets the target sent or received on */

/* ---- maps ---------------------------------------------------------------- */

struct task_times {
	__u64 enqueued_ns;   /* woken or preempted, waiting for a CPU; 0 = not queued */
	__u64 switch_out_ns; /* left the CPU; 0 = on CPU or never seen */
	__u64 switch_in_ns;  /* got the CPU; 0 = never seen on CPU */
	__u32 slot;          /* index into `threads`; THREADS_MAX = `other_threads` */
	__u32 has_slot;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_times);
} task_times SEC(".maps");

/* An array, not a hash keyed by tid: the JIT inlines array lookups, and
 * sched_switch does two per event. The slot lives in the task's storage. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, THREADS_MAX);
	__type(key, __u32);
	__type(value, struct thread_stats);
} threads SEC(".maps");

/* The programs' only writable globals, in one struct so userspace reads
 * them at fixed offsets of .bss. */
struct probe_counters {
	/* Slots handed out so far (may pass THREADS_MAX; userspace clamps). */
	__u64 threads_used;
	/* Scheduler events of target threads that were not recorded because
	 * bpf_task_storage_get returned NULL: it will not create a thread's
	 * storage while task storage is busy on this CPU, or without memory. */
	__u64 cpu_events_missed;
};
struct probe_counters counters = {};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct thread_stats);
} other_threads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mem_stats);
} mem SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tcp_stats);
} tcp SEC(".maps");

struct sock_state {
	__u64 data_ready_ns; /* oldest unread data became readable; 0 = nothing unread */
	__u64 owned;         /* port 0 only: the target sent or received on this socket */
};

/* Freed with the socket: no cap, no stale entries at millions of sockets. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_state);
} sock_states SEC(".maps");

/* ---- helpers ------------------------------------------------------------- */

static __always_inline __u32 log2_bucket(__u64 v)
{
	__u32 r, shift;

	r = (v > 0xFFFFFFFFULL) << 5; v >>= r;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r & (HIST_BUCKETS - 1);
}

static __always_inline void hist_add(__u64 *buckets, __u64 v)
{
	__sync_fetch_and_add(&buckets[log2_bucket(v)], 1);
}

static __always_inline bool is_target(const struct task_struct *t)
{
	return t->tgid == target_tgid;
}

static __always_inline bool current_is_target(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == target_tgid;
}

static __always_inline struct task_times *task_times_of(struct task_struct *t)
{
	return bpf_task_storage_get(&task_times, t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
}

/* The thread's own slot, handed out on first sight; the shared per-CPU entry
 * once THREADS_MAX threads have one. */
static __always_inline struct thread_stats *thread_stats_of(struct task_struct *t,
							    struct task_times *tt)
{
	__u32 slot, zero = 0;
	struct thread_stats *s;

	if (!tt->has_slot) {
		slot = __sync_fetch_and_add(&counters.threads_used, 1);
		tt->slot = slot < THREADS_MAX ? slot : THREADS_MAX;
		tt->has_slot = 1;
		s = bpf_map_lookup_elem(&threads, &tt->slot);
		if (s) {
			s->tid = t->pid;
			bpf_probe_read_kernel_str(s->comm, sizeof(s->comm), t->comm);
		}
	}
	slot = tt->slot;
	if (slot < THREADS_MAX)
		return bpf_map_lookup_elem(&threads, &slot);
	return bpf_map_lookup_elem(&other_threads, &zero);
}

/* ---- CPU ----------------------------------------------------------------- */

static __always_inline void mark_enqueued(struct task_struct *p)
{
	struct task_times *tt;

	if (!is_target(p))
		return;
	tt = task_times_of(p);
	if (tt)
		tt->enqueued_ns = bpf_ktime_get_ns();
	else
		__sync_fetch_and_add(&counters.cpu_events_missed, 1);
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(sched_wakeup, struct task_struct *p)
{
	mark_enqueued(p);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(sched_wakeup_new, struct task_struct *p)
{
	mark_enqueued(p);
	return 0;
}

static __always_inline void switch_out(struct task_struct *prev, bool still_runnable, __u64 now)
{
	struct task_times *tt = task_times_of(prev);
	struct thread_stats *s;

	if (!tt) {
		__sync_fetch_and_add(&counters.cpu_events_missed, 1);
		return;
	}
	if (tt->switch_in_ns) {
		s = thread_stats_of(prev, tt);
		if (s)
			hist_add(s->oncpu_us, (now - tt->switch_in_ns) / 1000);
		tt->switch_in_ns = 0;
	}
	tt->switch_out_ns = now;
	/* Preempted: it waits on the run queue from now, like a wakeup. */
	tt->enqueued_ns = still_runnable ? now : 0;
}

static __always_inline void switch_in(struct task_struct *next, __u64 now)
{
	struct task_times *tt = task_times_of(next);
	struct thread_stats *s;

	if (!tt) {
		__sync_fetch_and_add(&counters.cpu_events_missed, 1);
		return;
	}
	s = thread_stats_of(next, tt);
	if (s && tt->enqueued_ns)
		hist_add(s->runqueue_latency_us, (now - tt->enqueued_ns) / 1000);
	if (s && tt->switch_out_ns)
		hist_add(s->offcpu_us, (now - tt->switch_out_ns) / 1000);
	tt->enqueued_ns = 0;
	tt->switch_out_ns = 0;
	tt->switch_in_ns = now;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	bool prev_wanted = is_target(prev), next_wanted = is_target(next);
	__u64 now;

	if (!prev_wanted && !next_wanted)
		return 0;
	now = bpf_ktime_get_ns();
	if (prev_wanted)
		switch_out(prev, preempt || prev_state == 0 /* TASK_RUNNING */, now);
	if (next_wanted)
		switch_in(next, now);
	return 0;
}

/* Threads often name themselves after the kernel first saw them; keep the
 * final name for the report (userspace reads /proc for live threads). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(sched_process_exit, struct task_struct *p)
{
	struct task_times *tt;
	struct thread_stats *s;
	__u32 slot;

	if (!is_target(p))
		return 0;
	tt = bpf_task_storage_get(&task_times, p, 0, 0);
	if (!tt || !tt->has_slot)
		return 0;
	slot = tt->slot;
	s = bpf_map_lookup_elem(&threads, &slot);
	if (s)
		bpf_probe_read_kernel_str(s->comm, sizeof(s->comm), p->comm);
	return 0;
}

/* ---- memory -------------------------------------------------------------- */

/* Raw tracepoint arguments: struct trace_event_raw_x86_exceptions is not in
 * this kernel's BTF, and tp_btf gets the arguments, not the record. */
SEC("tp_btf/page_fault_user")
int BPF_PROG(page_fault_user, unsigned long address, struct pt_regs *regs,
	     unsigned long error_code)
{
	struct task_struct *t;
	struct task_times *tt;
	struct thread_stats *s;

	if (!current_is_target())
		return 0;
	t = bpf_get_current_task_btf();
	tt = task_times_of(t);
	if (!tt)
		return 0;
	s = thread_stats_of(t, tt);
	if (s)
		__sync_fetch_and_add(&s->page_faults, 1);
	return 0;
}

/* Fires on every change of an mm counter, also from other tasks (reclaim,
 * process_madvise), so filter on the mm's owner, not on current. */
SEC("tp_btf/rss_stat")
int BPF_PROG(rss_stat, struct mm_struct *mm, int member)
{
	__u32 zero = 0, i = member;
	struct mem_stats *m;
	s64 pages;

	struct task_struct *owner = mm->owner; /* direct loads: cheaper than probe reads, and this runs host-wide */

	if (!owner || owner->tgid != target_tgid)
		return 0;
	if (i >= RSS_MEMBERS)
		return 0;
	barrier_var(i); /* keep the mask: the verifier needs it on this register */
	i &= RSS_MEMBERS - 1;
	m = bpf_map_lookup_elem(&mem, &zero);
	if (!m)
		return 0;
	/* A variable index into a BTF pointer is refused; read through the helper. */
	if (bpf_probe_read_kernel(&pages, sizeof(pages), &mm->rss_stat[i].count))
		return 0;
	m->rss_changes[i]++;
	m->rss_pages[i] = pages > 0 ? pages : 0; /* per-CPU batches make it approximate */
	m->rss_updated_ns[i] = bpf_ktime_get_ns();
	return 0;
}

/* ---- TCP ----------------------------------------------------------------- */

static __always_inline struct tcp_stats *tcp_stats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&tcp, &zero);
}

/* skc_num is cleared when the port is released, just before the state
 * change to CLOSE is traced; inet_sport (network order) is not. */
static __always_inline __u16 local_port(struct sock *sk)
{
	__u16 port = sk->__sk_common.skc_num;

	if (port)
		return port;
	return bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
}

/* A socket is ours when its local port is the configured port (the listener
 * and every connection it accepted), or, with port 0, when the target
 * process has sent or received on it. Decided from the socket alone, so it
 * holds in softirq and timer context where current is unrelated. */
static __always_inline bool sock_selected(struct sock *sk)
{
	struct sock_state *st;

	if (sk->sk_protocol != IPPROTO_TCP)
		return false;
	if (target_port)
		return local_port(sk) == target_port;
	st = bpf_sk_storage_get(&sock_states, sk, 0, 0);
	return st && st->owned;
}

/* srtt is sampled once per read of a selected socket, in sock_recv_length
 * below (the reader's thread, where the socket is hot), not per received
 * segment in tcp:tcp_probe: that hook ran in the sender's softirq on every
 * segment and ACK of every TCP socket of the host, and read the receiving
 * socket's tcp_sock from the other core. */
static __always_inline void srtt_sample(struct sock *sk, struct tcp_stats *ts)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	__u32 srtt_us;

	if (!tp || !ts)
		return;
	srtt_us = tp->srtt_us >> 3; /* stored as 8 * srtt */
	if (srtt_us)
		hist_add(ts->srtt_us, srtt_us);
}

SEC("tp_btf/sk_data_ready")
int BPF_PROG(sk_data_ready, const struct sock *csk)
{
	struct sock *sk = (struct sock *)csk;
	struct sock_state *st;

	if (sk->sk_protocol != IPPROTO_TCP || sk->__sk_common.skc_state == TCP_LISTEN)
		return 0;
	if (target_port) {
		if (local_port(sk) != target_port)
			return 0;
		st = bpf_sk_storage_get(&sock_states, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	} else {
		st = bpf_sk_storage_get(&sock_states, sk, 0, 0);
		if (st && !st->owned)
			st = 0;
	}
	/* Keep the oldest unread arrival: the wait of the data that waited longest. */
	if (st && !st->data_ready_ns)
		st->data_ready_ns = bpf_ktime_get_ns();
	return 0;
}

/* Process context of the reader: a server thread, or an io-wq worker of the
 * same tgid when io_uring punts the recv. */
SEC("tp_btf/sock_recv_length")
int BPF_PROG(sock_recv_length, struct sock *sk, int ret, int flags)
{
	struct sock_state *st;
	struct tcp_stats *ts;
	__u64 ready_ns;

	if (ret <= 0 || !current_is_target() || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	if (target_port) {
		if (local_port(sk) != target_port)
			return 0;
		st = bpf_sk_storage_get(&sock_states, sk, 0, 0);
	} else {
		st = bpf_sk_storage_get(&sock_states, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (st)
			st->owned = 1;
	}
	if (!st || (flags & MSG_PEEK))
		return 0;
	ts = tcp_stats();
	srtt_sample(sk, ts);
	if (!st->data_ready_ns)
		return 0;
	ready_ns = st->data_ready_ns;
	st->data_ready_ns = 0;
	if (ts)
		hist_add(ts->data_ready_to_read_ns, bpf_ktime_get_ns() - ready_ns);
	return 0;
}

/* Port 0 only: a socket the target sends on is the target's. */
SEC("tp_btf/sock_send_length")
int BPF_PROG(sock_send_length, struct sock *sk, int ret, int flags)
{
	struct sock_state *st;

	if (target_port || !current_is_target() || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	st = bpf_sk_storage_get(&sock_states, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (st)
		st->owned = 1;
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(inet_sock_set_state, const struct sock *csk, const int oldstate, const int newstate)
{
	struct sock *sk = (struct sock *)csk;
	struct tcp_stats *ts;

	if (!sock_selected(sk))
		return 0;
	ts = tcp_stats();
	if (ts)
		__sync_fetch_and_add(&ts->state_transitions[((oldstate & 15) << 4) | (newstate & 15)], 1);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit_skb, const struct sock *csk, const struct sk_buff *skb, int err)
{
	struct sock *sk = (struct sock *)csk;
	struct tcp_stats *ts;

	if (!sock_selected(sk))
		return 0;
	ts = tcp_stats();
	if (ts)
		__sync_fetch_and_add(&ts->retransmits, 1);
	return 0;
}

SEC("tp_btf/sock_exceed_buf_limit")
int BPF_PROG(sock_exceed_buf_limit, struct sock *sk, struct proto *prot, long allocated, int kind)
{
	struct tcp_stats *ts;

	if (!sock_selected(sk))
		return 0;
	ts = tcp_stats();
	if (!ts)
		return 0;
	if (kind == SK_MEM_RECV)
		__sync_fetch_and_add(&ts->exceed_buf_limit_recv, 1);
	else
		__sync_fetch_and_add(&ts->exceed_buf_limit_send, 1);
	return 0;
}
