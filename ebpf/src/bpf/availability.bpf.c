// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The smallest program that proves the probes can work here: it needs BTF,
 * a tracing program load (CAP_BPF + CAP_PERFMON) and a tp_btf attach. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

__u64 switches = 0;

SEC("tp_btf/sched_switch")
int BPF_PROG(availability_sched_switch)
{
	__sync_fetch_and_add(&switches, 1);
	return 0;
}
