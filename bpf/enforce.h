/* SPDX-License-Identifier: GPL-2.0 */
/* --enforce: which writers of the real release_agent are let through, and what is done to the others. */
#ifndef EW_ENFORCE_H
#define EW_ENFORCE_H

#include "config.h"
#include "maps.h"
#include "task.h"
#include "legacy.h"

#define EW_SIGKILL 9

/* Writers --enforce allows besides the host's own processes: cgroup path prefixes from the configuration, the
 * first enforce_allow_count entries. Matched only when a write would otherwise be stopped, never on a hot path. */
#define EW_ALLOW_MAX 16
#define EW_ALLOW_LEN 128

struct ew_allowed_cgroup {
	__u32 len;
	char prefix[EW_ALLOW_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, EW_ALLOW_MAX);
	__type(key, __u32);
	__type(value, struct ew_allowed_cgroup);
} ew_enforce_allowed SEC(".maps");

struct ew_allow_scan {
	const char *cgroup_path;
	__u32 found;
	__u32 pad;
};

/* ew_allow_step checks allowed prefix number i against the cgroup path: the whole prefix, ending at a path
 * boundary, so "/lxc.payload.web" does not allow "/lxc.payload.web2". */
static long ew_allow_step(__u64 i, void *data)
{
	struct ew_allow_scan *scan = data;
	__u32 idx = i;
	if (idx >= enforce_allow_count)
		return 1;
	struct ew_allowed_cgroup *a = bpf_map_lookup_elem(&ew_enforce_allowed, &idx);
	if (!a)
		return 1;
	__u32 len = a->len;
	if (len == 0 || len >= EW_ALLOW_LEN)
		return 0;
#ifdef EW_LEGACY
	/* A global function's state comes through map memory, where a pointer does not stay one: the cgroup path
	 * is the record's (every caller's). */
	__u32 zero = 0;
	struct ew_record *r = bpf_map_lookup_elem(&ew_record_scratch, &zero);
	if (!r)
		return 1;
	const char *cgroup_path = r->cgroup_path;
	if (!ew_words_equal(cgroup_path, a->prefix, len, EW_ALLOW_LEN / 8))
		return 0;
#else
	const char *cgroup_path = scan->cgroup_path;
	for (int j = 0; j < EW_ALLOW_LEN; j++) {
		if ((__u32)j >= len)
			break;
		if (cgroup_path[j] != a->prefix[j])
			return 0;
	}
#endif
	char next = cgroup_path[len & (EW_ALLOW_LEN - 1)];
	if (next == '/' || next == 0) {
		scan->found = 1;
		return 1;
	}
	return 0;
}
EW_LOOP_STEP(ew_allow_step)

/* ew_kill_current sends SIGKILL to the current process: delivered before it returns to user space (from a
 * tracepoint, through an irq_work that runs as soon as interrupts are on). The kernel can refuse (its per-CPU
 * irq_work still busy with the previous signal): then nothing was done, and the record says so. */
static __always_inline __u32 ew_kill_current(void)
{
	if (bpf_send_signal(EW_SIGKILL) == 0)
		return EW_ACTION_KILLED;
	ew_count(EW_COUNTER_KILL_FAILED);
	return EW_ACTION_ALERT;
}

/* ew_trust_of says whether the task may choose what the kernel runs as root: the host's own processes (same
 * mount and pid namespaces as the host's init) and processes in an allowed cgroup (cgroup_path, as ew_cgroup_path
 * writes it, whole when it is not cut) may; every other process is outside the host. */
static __always_inline __u32 ew_trust_of(struct task_struct *task, const char *cgroup_path, int cgroup_whole)
{
	if (BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum) == host_mnt_ns && ew_pid_ns(task) == host_pid_ns)
		return EW_TRUST_HOST;
	if (enforce_allow_count && cgroup_whole) {
		struct ew_allow_scan scan = {.cgroup_path = cgroup_path};
		EW_LOOP(EW_ALLOW_MAX, ew_allow_step, &scan);
		if (scan.found)
			return EW_TRUST_HOST;
	}
	return EW_TRUST_OUTSIDE;
}

/* ew_enforce decides what --enforce does to the current task for an operation on the real release_agent:
 * nothing for a trusted task (ew_trust_of); otherwise deny when the hook can, else SIGKILL, which the kernel
 * delivers before the task returns to user space. */
static __always_inline __u32 ew_enforce(struct task_struct *task, int can_deny, const char *cgroup_path,
					int cgroup_whole)
{
	if (!enforce)
		return EW_ACTION_ALERT;
	if (ew_trust_of(task, cgroup_path, cgroup_whole) == EW_TRUST_HOST)
		return EW_ACTION_ALERT;
	if (can_deny)
		return EW_ACTION_DENIED;
	return ew_kill_current();
}

#endif
