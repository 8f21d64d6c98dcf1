/* SPDX-License-Identifier: GPL-2.0 */
/* Programs every backend carries: tp_btf tracepoints exist on every kernel the sensor supports, and the events
 * behind them (an exec by a user-mode helper, a hierarchy's creation, remount or end) are rare, so they cost
 * nothing that matters. Included once by each backend's object. */
#ifndef EW_LIFECYCLE_H
#define EW_LIFECYCLE_H

#include "agent.h"

#define EW_KTHREADD_PID 2

/* ew_is_usermode_helper: the kernel starts user-mode helpers (call_usermodehelper) from a worker with
 * CLONE_PARENT, so their parent is kthreadd; no user process has that parent. */
static __always_inline int ew_is_usermode_helper(struct task_struct *task)
{
	return BPF_CORE_READ(task, real_parent, pid) == EW_KTHREADD_PID;
}

/* ew_helper_exec reports the program bprm that task, a user-mode helper, executes, judged against the kernel's
 * state (ew_judge_helper). Under --enforce, a release agent the host did not set is killed here, before its
 * first instruction: the signal is delivered before the task returns to user space. */
static __always_inline void ew_helper_exec(struct task_struct *task, struct linux_binprm *bprm)
{
	__u32 zero = 0;
	struct ew_record *r = bpf_map_lookup_elem(&ew_record_scratch, &zero);
	if (!r)
		return;
	ew_record_head(r, EW_KIND_HELPER_EXEC, EW_SOURCE_SYSCALL, 0, 0, 0);
	r->path[0] = 0;
	r->arg_path2[0] = 0;
	long n = bpf_probe_read_kernel_str(r->base_path, sizeof(r->base_path), BPF_CORE_READ(bprm, filename));
	ew_judge_helper(r, task, bprm, n);
	if ((r->facts & EW_FACT_AGENT_ESCAPE) && enforce)
		r->action = ew_kill_current();
	ew_emit(r);
}

/* User-mode helpers (a release agent among them) are started by the kernel as children of kthreadd. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(ew_sched_process_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	if (ew_is_usermode_helper(p))
		ew_helper_exec(p, bprm);
	return 0;
}

/* ew_mount_from_state reports the release_agent that mount(2) just gave hierarchy root, from the kernel's own
 * copy. For a backend without a hook on the option parser (EW_MOUNT_FROM_STATE): mount(2)'s data string, read
 * again from user memory at the syscall's exit, may have been changed by another thread since the kernel parsed
 * it. fsconfig's option is reported when it is set (tracepoint.h). */
static __always_inline void ew_mount_from_state(struct cgroup_root *root)
{
#ifdef EW_MOUNT_FROM_STATE
	struct task_struct *task = ew_current_task();
	struct ew_syscall sc;
	ew_syscall_of(task, ew_task_regs(task), &sc);
	if (sc.op != EW_OP_MOUNT)
		return;
	char first = 0;
	bpf_probe_read_kernel(&first, 1, &root->release_agent_path);
	if (first)
		ew_mount_option(root->release_agent_path, 0, sc.source, 0, sc.nr, sc.facts, EW_ACTION_ALERT, 1);
#endif
}

/* A new hierarchy: its release_agent is empty or the mount option's value. */
SEC("tp_btf/cgroup_setup_root")
int BPF_PROG(ew_cgroup_setup_root, struct cgroup_root *root)
{
	ew_setter_changed(root, EW_SET_MOUNT, 0);
	ew_agent_value_stored(root);
	ew_mount_from_state(root);
	return 0;
}

/* A remount may have set release_agent: the tracepoint comes after the new options are in place. */
SEC("tp_btf/cgroup_remount")
int BPF_PROG(ew_cgroup_remount, struct cgroup_root *root)
{
	if (ew_setter_changed(root, EW_SET_REMOUNT, 1))
		ew_mount_from_state(root);
	ew_agent_value_stored(root);
	return 0;
}

/* The hierarchy's ID is free for the next one. */
SEC("tp_btf/cgroup_destroy_root")
int BPF_PROG(ew_cgroup_destroy_root, struct cgroup_root *root)
{
	__u32 id = BPF_CORE_READ(root, hierarchy_id);
	bpf_map_delete_elem(&ew_agent_values, &id);
	ew_setter_forget(root);
	return 0;
}

#endif
