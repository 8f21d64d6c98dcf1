/* SPDX-License-Identifier: GPL-2.0 */
/* The task's context in a record: ids and namespaces as the host and the task see them, uid, comm, host name. */
#ifndef EW_TASK_H
#define EW_TASK_H

#include "kernel.h"
#include "record.h"

/* ew_upid returns pid's number and namespace at a pid-namespace level (0 = the initial namespace). */
static __always_inline struct upid ew_upid(struct pid *pid, unsigned int level)
{
	struct upid upid = {};
	bpf_probe_read_kernel(&upid, sizeof(upid), (void *)&pid->numbers + (level & 31) * sizeof(struct upid));
	return upid;
}

/* ew_pid_ns returns the inode number of the pid namespace the task lives in. */
static __always_inline __u32 ew_pid_ns(struct task_struct *task)
{
	struct pid *pid = BPF_CORE_READ(task, thread_pid);
	unsigned int level = BPF_CORE_READ(pid, level);
	struct pid_namespace *ns = ew_upid(pid, level).ns;
	return BPF_CORE_READ(ns, ns.inum);
}

static __always_inline void ew_fill_task(struct ew_task *t, struct task_struct *task)
{
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	struct task_struct *parent = BPF_CORE_READ(task, real_parent);
	struct pid *thread_pid = BPF_CORE_READ(task, thread_pid);
	struct pid *leader_pid = BPF_CORE_READ(leader, thread_pid);
	struct pid *parent_pid = BPF_CORE_READ(parent, thread_pid);
	unsigned int level = BPF_CORE_READ(thread_pid, level);
	__u64 uid_gid = bpf_get_current_uid_gid();
	struct upid own = ew_upid(thread_pid, level);

	t->boot_ns = bpf_ktime_get_boot_ns();
	t->start_boot_ns = BPF_CORE_READ(task, start_boottime);
	t->cgroup_id = bpf_get_current_cgroup_id();
	t->host_pid = BPF_CORE_READ(task, tgid);
	t->host_tid = BPF_CORE_READ(task, pid);
	t->host_ppid = BPF_CORE_READ(parent, tgid);
	t->tid = own.nr;
	t->pid = ew_upid(leader_pid, level).nr;
	/* The parent as the task's namespace sees it: 0 when the parent lives outside that namespace. */
	if (BPF_CORE_READ(parent_pid, level) >= level)
		t->ppid = ew_upid(parent_pid, level).nr;
	else
		t->ppid = 0;
	t->uid = (__u32)uid_gid;
	t->mnt_ns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	struct pid_namespace *pid_ns = own.ns;
	t->pid_ns = BPF_CORE_READ(pid_ns, ns.inum);
	t->cpu = bpf_get_smp_processor_id();
	bpf_get_current_comm(t->comm, sizeof(t->comm));
	struct uts_namespace *uts = BPF_CORE_READ(task, nsproxy, uts_ns);
	bpf_probe_read_kernel_str(t->hostname, sizeof(t->hostname), &uts->name.nodename);
}

#endif
