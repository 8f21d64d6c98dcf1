// SPDX-License-Identifier: GPL-2.0
/* Empty programs on the hooks of each backend. The benchmark attaches the one matching the backend under test
 * to measure what the hook mechanism costs by itself, apart from escapewatch's filter. Never used by the
 * sensor. */
#include "kernel.h"

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/sys_exit")
int BPF_PROG(ew_noop_sys_exit, struct pt_regs *regs, long ret)
{
	return 0;
}

SEC("lsm/file_open")
int BPF_PROG(ew_noop_lsm_file_open, struct file *file, int ret)
{
	return ret;
}

SEC("fentry/security_file_open")
int BPF_PROG(ew_noop_fentry_file_open, struct file *file)
{
	return 0;
}

SEC("kprobe/security_file_open")
int BPF_KPROBE(ew_noop_kprobe_file_open, struct file *file)
{
	return 0;
}

/* Under --enforce: the refusing hooks every read and write passes (lsm/file_permission reads ret, the third
 * argument; the fmod_ret program reads none, so it attaches to security_file_open as well). */
SEC("lsm/file_permission")
int BPF_PROG(ew_noop_lsm_file_permission, struct file *file, int mask, int ret)
{
	return ret;
}

SEC("fmod_ret/security_file_permission")
int BPF_PROG(ew_noop_fmodret, struct file *file, int mask, int ret)
{
	return 0;
}
