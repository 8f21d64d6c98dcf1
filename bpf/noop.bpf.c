// SPDX-License-Identifier: GPL-2.0
/* An empty program on the same hook as the tracepoint backend. The benchmark attaches it to measure what the
 * syscall-exit tracepoint mechanism costs by itself, apart from escapewatch's filter. Never used by the sensor. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/sys_exit")
int BPF_PROG(ew_noop_sys_exit, struct pt_regs *regs, long ret)
{
	return 0;
}
