/* SPDX-License-Identifier: GPL-2.0 */
/* Logic shared by every hook family: the object filter, task context, path building and emission.
 * Entry points (one thin function per hook) live in the *.bpf.c files. */
#ifndef EW_COMMON_H
#define EW_COMMON_H

/* -Wpadded guards our own record layout (record.h), not the kernel's types. */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpadded"
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#pragma clang diagnostic pop
#include "record.h"

#define CGROUP_SUPER_MAGIC 0x27e0eb
#define EW_AGENT_NAME "release_agent"
#define EW_AGENT_LEN 13
#define EW_MAX_COMPONENTS 48
#define EW_CGROUP_LEVELS 12
#define EW_NAME_MAX 255
#define EW_AT_FDCWD -100
#define EW_TS_COMPAT 0x0002
#define EW_FMODE_WRITE 0x2
#define EW_EPERM 1
#define EW_SIGKILL 9
#define EW_KTHREADD_PID 2

/* Set by the loader before the programs are loaded. */
/* any_fs: pass every file named release_agent (Tracee's behaviour), not only the real cgroup v1 one. */
const volatile __u8 any_fs = 0;
/* enforce: stop writes to the real release_agent by processes outside the host's namespaces. */
const volatile __u8 enforce = 0;
const volatile __u32 host_mnt_ns = 0;
const volatile __u32 host_pid_ns = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} ew_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EW_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} ew_counters SEC(".maps");

/* The record is too large for the 512-byte BPF stack, so it is assembled in per-CPU scratch. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ew_record);
} ew_record_scratch SEC(".maps");

/* Paths are built from the leaf upwards, so they are written backwards into a buffer twice as large as a
 * path: every offset the verifier sees stays in bounds by masking alone. */
struct ew_path_buf {
	char data[EW_PATH_MAX * 2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ew_path_buf);
} ew_path_scratch SEC(".maps");

/* vmlinux.h is 6.1's (see scripts/generate.sh); these flavors read what later kernels renamed. */

/* Since 6.15 the kernfs parent pointer is "__parent". */
struct kernfs_node___new {
	struct kernfs_node *__parent;
} __attribute__((preserve_access_index));

/* 6.6 to 6.10 keep the inode change time in "__i_ctime"; since 6.11 in two fields. */
struct inode___6_6 {
	struct timespec64 __i_ctime;
} __attribute__((preserve_access_index));

struct inode___6_11 {
	time64_t i_ctime_sec;
	u32 i_ctime_nsec;
	u32 unused_pad; /* never read: explicit padding for -Wpadded */
} __attribute__((preserve_access_index));

static __always_inline void ew_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&ew_counters, &idx);
	if (v)
		*v += 1;
}

static __always_inline struct mount *ew_real_mount(struct vfsmount *mnt)
{
	return (struct mount *)((void *)mnt - bpf_core_field_offset(struct mount, mnt));
}

/* ew_is_agent_dentry: is this dentry the release_agent file of a cgroup v1 hierarchy root? It is the whole
 * in-kernel filter: one superblock magic comparison rejects every unrelated file. With any_fs it is a name
 * comparison only. Returns facts bits, or -1 when the file is not of interest. */
static __always_inline int ew_classify_dentry(struct dentry *dentry)
{
	struct super_block *sb = BPF_CORE_READ(dentry, d_sb);
	unsigned long magic = BPF_CORE_READ(sb, s_magic);
	int facts = 0;

	if (magic != CGROUP_SUPER_MAGIC && !any_fs)
		return -1;
	if (BPF_CORE_READ(dentry, d_name.len) != EW_AGENT_LEN)
		return -1;
	char name[EW_AGENT_LEN + 1] = {};
	bpf_probe_read_kernel(name, EW_AGENT_LEN, BPF_CORE_READ(dentry, d_name.name));
	const char want[] = EW_AGENT_NAME;
	for (int i = 0; i < EW_AGENT_LEN; i++)
		if (name[i] != want[i])
			return -1;
	if (magic == CGROUP_SUPER_MAGIC && BPF_CORE_READ(dentry, d_parent) == BPF_CORE_READ(sb, s_root))
		facts |= EW_FACT_CGROUP1_AGENT;
	else if (!any_fs)
		return -1; /* a child cgroup directory named release_agent: not the agent */
	return facts;
}

/* ew_fd_file_btf is ew_fd_file for a BTF-typed task (bpf_get_current_task_btf): the pointer chain is read with
 * direct loads, only the indexed slot needs a helper. */
static __always_inline struct file *ew_fd_file_btf(struct task_struct *task, int fd)
{
	struct fdtable *fdt = task->files->fdt;
	struct file *file = NULL;

	if (fd < 0 || (unsigned int)fd >= fdt->max_fds)
		return NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fdt->fd[fd]);
	return file;
}

static __always_inline struct file *ew_fd_file(struct task_struct *task, int fd)
{
	struct files_struct *files = BPF_CORE_READ(task, files);
	struct fdtable *fdt = BPF_CORE_READ(files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;

	if (fd < 0 || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

/* Path walks run under bpf_loop so the verifier checks one step instead of every unrolled iteration. */
struct ew_path_walk {
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	struct dentry *root_dentry; /* the task's root (chroot, pivot_root): paths are as the task sees them */
	struct vfsmount *root_mnt;
	int pos;
	__u32 facts;
};

static long ew_path_step(__u64 i, void *data)
{
	struct ew_path_walk *w = data;
	__u32 zero = 0;
	struct ew_path_buf *buf = bpf_map_lookup_elem(&ew_path_scratch, &zero);
	if (!buf)
		return 1;

	/* Plain locals: BPF_CORE_READ on w->field would relocate our own struct against kernel BTF. */
	struct dentry *dentry = w->dentry;
	struct vfsmount *vfsmnt = w->vfsmnt;
	struct mount *mnt = w->mnt;
	if (dentry == w->root_dentry && vfsmnt == w->root_mnt)
		return 1;
	struct dentry *mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);

	if (dentry == mnt_root || dentry == parent) {
		struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
		if (dentry != mnt_root || mnt == mnt_parent)
			return 1;
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = mnt_parent;
		w->vfsmnt = (struct vfsmount *)((void *)mnt_parent + bpf_core_field_offset(struct mount, mnt));
		return 0;
	}
	int len = BPF_CORE_READ(dentry, d_name.len) & EW_NAME_MAX;
	int pos = w->pos & (EW_PATH_MAX - 1);
	if (len + 1 > pos) {
		w->facts |= EW_FACT_PATH_TRUNCATED;
		return 1;
	}
	pos -= len;
	bpf_probe_read_kernel(&buf->data[pos & (EW_PATH_MAX - 1)], len, BPF_CORE_READ(dentry, d_name.name));
	pos -= 1;
	buf->data[pos & (EW_PATH_MAX - 1)] = '/';
	w->pos = pos;
	w->dentry = parent;
	if (i == EW_MAX_COMPONENTS - 1)
		w->facts |= EW_FACT_PATH_TRUNCATED;
	return 0;
}

/* ew_path_copy moves the path assembled at the end of the scratch buffer (from pos) into dst. */
static __always_inline int ew_path_copy(char *dst, int pos, int size)
{
	__u32 zero = 0;
	struct ew_path_buf *buf = bpf_map_lookup_elem(&ew_path_scratch, &zero);
	if (!buf)
		return 0;
	if (pos == size - 1) { /* nothing above the start: the root itself */
		pos -= 1;
		buf->data[pos & (EW_PATH_MAX - 1)] = '/';
	}
	pos &= size - 1;
	bpf_probe_read_kernel(dst, size - pos, &buf->data[pos]);
	return size - 1 - pos;
}

/* ew_path_write builds the path of (dentry, vfsmount) as the current task sees it (up to its root directory, or
 * the root of its mount namespace) into dst (EW_PATH_MAX bytes), NUL-terminated. Mount points are crossed; a
 * detached mount ends at its own root. */
static __always_inline int ew_path_write(struct dentry *dentry, struct vfsmount *vfsmnt, char *dst, __u32 *facts)
{
	__u32 zero = 0;
	struct ew_path_buf *buf = bpf_map_lookup_elem(&ew_path_scratch, &zero);
	if (!buf)
		return 0;
	struct fs_struct *fs = BPF_CORE_READ((struct task_struct *)bpf_get_current_task(), fs);
	struct ew_path_walk w = {
		.dentry = dentry,
		.vfsmnt = vfsmnt,
		.mnt = ew_real_mount(vfsmnt),
		.root_dentry = BPF_CORE_READ(fs, root.dentry),
		.root_mnt = BPF_CORE_READ(fs, root.mnt),
		.pos = EW_PATH_MAX - 1,
	};
	buf->data[EW_PATH_MAX - 1] = 0;
	bpf_loop(EW_MAX_COMPONENTS, ew_path_step, &w, 0);
	*facts |= w.facts;
	return ew_path_copy(dst, w.pos, EW_PATH_MAX);
}

static __always_inline struct kernfs_node *ew_kn_parent(struct kernfs_node *kn)
{
	struct kernfs_node___new *kn_new = (void *)kn;

	if (bpf_core_field_exists(kn_new->__parent))
		return BPF_CORE_READ(kn_new, __parent);
	return BPF_CORE_READ(kn, parent);
}

struct ew_cgroup_walk {
	struct kernfs_node *kn;
	int pos;
	__u32 complete; /* the walk reached the hierarchy's root */
};

static long ew_cgroup_step(__u64 i, void *data)
{
	struct ew_cgroup_walk *w = data;
	__u32 zero = 0;
	struct ew_path_buf *buf = bpf_map_lookup_elem(&ew_path_scratch, &zero);
	if (!buf)
		return 1;

	struct kernfs_node *kn = w->kn;
	struct kernfs_node *parent = ew_kn_parent(kn);
	if (!parent) {
		w->complete = 1;
		return 1;
	}
	/* The upper half of the scratch buffer holds the name: container IDs outgrow the stack. */
	char *name = &buf->data[EW_PATH_MAX];
	int n = bpf_probe_read_kernel_str(name, EW_NAME_MAX + 1, BPF_CORE_READ(kn, name));
	int pos = w->pos & (EW_CGROUP_PATH_MAX - 1);
	if (n <= 1 || n > pos)
		return 1;
	pos -= n - 1;
	bpf_probe_read_kernel(&buf->data[pos & (EW_CGROUP_PATH_MAX - 1)], (n - 1) & EW_NAME_MAX, name);
	pos -= 1;
	buf->data[pos & (EW_CGROUP_PATH_MAX - 1)] = '/';
	w->pos = pos;
	w->kn = parent;
	return 0;
}

/* ew_cgroup_path writes the task's cgroup path: the unified (v2) cgroup when the task is below its root,
 * otherwise the first cgroup v1 controller hierarchy that places it below the root (hybrid and v1 hosts). It
 * is what container detection in user space works from, captured here because the process may be gone.
 * Returns 1 when the path is whole, 0 when only its lower part fitted: a task can nest cgroups at will, so a
 * cut path must never be taken for the cgroup its lower part names. */
static __always_inline int ew_cgroup_path(struct task_struct *task, char *dst)
{
	__u32 zero = 0;
	struct ew_path_buf *buf = bpf_map_lookup_elem(&ew_path_scratch, &zero);
	if (!buf)
		return 0;

	struct css_set *cset = BPF_CORE_READ(task, cgroups);
	struct cgroup *cgrp = BPF_CORE_READ(cset, dfl_cgrp);
	if (BPF_CORE_READ(cgrp, level) == 0) {
		for (int i = 0; i < 12; i++) {
			if (i >= bpf_core_enum_value(enum cgroup_subsys_id, CGROUP_SUBSYS_COUNT))
				break;
			struct cgroup_subsys_state *css = BPF_CORE_READ(cset, subsys[i]);
			struct cgroup *c = BPF_CORE_READ(css, cgroup);
			if (c && BPF_CORE_READ(c, level) > 0) {
				cgrp = c;
				break;
			}
		}
	}
	struct ew_cgroup_walk w = {.kn = BPF_CORE_READ(cgrp, kn), .pos = EW_CGROUP_PATH_MAX - 1};
	buf->data[EW_CGROUP_PATH_MAX - 1] = 0;
	bpf_loop(EW_CGROUP_LEVELS, ew_cgroup_step, &w, 0);
	ew_path_copy(dst, w.pos, EW_CGROUP_PATH_MAX);
	return w.complete;
}

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
	t->gid = uid_gid >> 32;
	t->mnt_ns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	struct pid_namespace *pid_ns = own.ns;
	t->pid_ns = BPF_CORE_READ(pid_ns, ns.inum);
	t->cpu = bpf_get_smp_processor_id();
	bpf_get_current_comm(t->comm, sizeof(t->comm));
	struct uts_namespace *uts = BPF_CORE_READ(task, nsproxy, uts_ns);
	bpf_probe_read_kernel_str(t->hostname, sizeof(t->hostname), &uts->name.nodename);
}

/* ew_record_head fills everything but the path strings, which each kind of record sets itself. */
static __always_inline void ew_record_head(struct ew_record *r, __u32 kind, __u32 source, __s64 ret, __u32 nr,
					   __u32 facts)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	r->kind = kind;
	r->source = source;
	r->ret = ret;
	r->syscall_nr = nr;
	r->facts = facts;
	r->inode = 0;
	r->ctime_ns = 0;
	r->dev = 0;
	r->file_flags = 0;
	r->fs_magic = 0;
	r->action = EW_ACTION_ALERT;
	ew_fill_task(&r->task, task);
	if (!ew_cgroup_path(task, r->cgroup_path))
		r->facts |= EW_FACT_CGROUP_CUT;
}

static __always_inline void ew_record_file(struct ew_record *r, struct file *file)
{
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	struct super_block *sb = BPF_CORE_READ(inode, i_sb);

	r->file_flags = BPF_CORE_READ(file, f_flags);
	r->inode = BPF_CORE_READ(inode, i_ino);
	r->dev = BPF_CORE_READ(sb, s_dev);
	r->fs_magic = BPF_CORE_READ(sb, s_magic);
	struct inode___6_11 *inode_6_11 = (void *)inode;
	struct inode___6_6 *inode_6_6 = (void *)inode;
	if (bpf_core_field_exists(inode_6_11->i_ctime_sec))
		r->ctime_ns = BPF_CORE_READ(inode_6_11, i_ctime_sec) * 1000000000ULL +
			      BPF_CORE_READ(inode_6_11, i_ctime_nsec);
	else if (bpf_core_field_exists(inode_6_6->__i_ctime))
		r->ctime_ns = BPF_CORE_READ(inode_6_6, __i_ctime.tv_sec) * 1000000000ULL +
			      BPF_CORE_READ(inode_6_6, __i_ctime.tv_nsec);
	else
		r->ctime_ns = BPF_CORE_READ(inode, i_ctime.tv_sec) * 1000000000ULL + BPF_CORE_READ(inode, i_ctime.tv_nsec);
	ew_path_write(BPF_CORE_READ(file, f_path.dentry), BPF_CORE_READ(file, f_path.mnt), r->path, &r->facts);
}

static __always_inline void ew_emit(struct ew_record *r)
{
	if (bpf_ringbuf_output(&ew_events, r, sizeof(*r), 0))
		ew_count(EW_COUNTER_DROPPED);
	else
		ew_count(EW_COUNTER_EMITTED);
}

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

const volatile __u32 enforce_allow_count = 0;

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
	for (int j = 0; j < EW_ALLOW_LEN; j++) {
		if (j >= len)
			break;
		if (scan->cgroup_path[j] != a->prefix[j])
			return 0;
	}
	char next = scan->cgroup_path[len & (EW_ALLOW_LEN - 1)];
	if (next == '/' || next == 0) {
		scan->found = 1;
		return 1;
	}
	return 0;
}

/* ew_enforce decides what --enforce does to the current task for an operation on the real release_agent:
 * nothing for the host's own processes (same mount and pid namespaces as the host's init) and for writers in an
 * allowed cgroup (cgroup_path, as ew_cgroup_path writes it); otherwise deny when the hook can, else SIGKILL,
 * which the kernel delivers before the task returns to user space. */
static __always_inline __u32 ew_enforce(struct task_struct *task, int can_deny, const char *cgroup_path,
					int cgroup_whole)
{
	if (!enforce)
		return EW_ACTION_ALERT;
	if (BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum) == host_mnt_ns && ew_pid_ns(task) == host_pid_ns)
		return EW_ACTION_ALERT;
	if (enforce_allow_count && cgroup_whole) {
		struct ew_allow_scan scan = {.cgroup_path = cgroup_path};
		bpf_loop(EW_ALLOW_MAX, ew_allow_step, &scan, 0);
		if (scan.found)
			return EW_ACTION_ALERT;
	}
	if (can_deny)
		return EW_ACTION_DENIED;
	bpf_send_signal(EW_SIGKILL);
	return EW_ACTION_KILLED;
}

/* Opens are reported in two steps so that what only matters for a reported file (the syscall, its arguments)
 * is read after the filter, never on the hot path of every other open.
 * ew_open_begin returns the record of a file of interest (the syscall's number, facts and path left for the
 * caller), or NULL. */
static __always_inline struct ew_record *ew_open_begin(struct file *file, __u32 source, __s64 ret)
{
	struct dentry *dentry = BPF_CORE_READ(file, f_path.dentry);
	int kfacts = ew_classify_dentry(dentry);
	if (kfacts < 0)
		return NULL;
	__u32 zero = 0;
	struct ew_record *r = bpf_map_lookup_elem(&ew_record_scratch, &zero);
	if (!r)
		return NULL;
	ew_record_head(r, EW_KIND_FILE_OPEN, source, ret, 0, kfacts);
	r->arg_path[0] = 0;
	r->arg_path2[0] = 0;
	r->base_path[0] = 0;
	ew_record_file(r, file);
	return r;
}

/* ew_open_finish enforces and emits. Returns the action taken; a hook that can deny returns -EPERM for
 * EW_ACTION_DENIED. */
static __always_inline __u32 ew_open_finish(struct ew_record *r, struct file *file, int can_deny)
{
	if ((r->facts & EW_FACT_CGROUP1_AGENT) && (BPF_CORE_READ(file, f_mode) & EW_FMODE_WRITE)) {
		r->action = ew_enforce((struct task_struct *)bpf_get_current_task(), can_deny, r->cgroup_path,
				       !(r->facts & EW_FACT_CGROUP_CUT));
		if (r->action == EW_ACTION_DENIED)
			r->ret = -EW_EPERM;
	}
	ew_emit(r);
	return r->action;
}

/* ew_mount_option reports a release_agent mount option. value is the option's value, or with
 * EW_FACT_MOUNT_DATA a whole mount(2) data string (user memory) for user space to parse. */
static __always_inline void ew_mount_option(const char *value, int user, __u32 source, __s64 ret, __u32 nr, __u32 facts)
{
	__u32 zero = 0;
	struct ew_record *r = bpf_map_lookup_elem(&ew_record_scratch, &zero);
	if (!r)
		return;
	ew_record_head(r, EW_KIND_MOUNT_OPTION, source, ret, nr, facts);
	r->path[0] = 0;
	r->arg_path2[0] = 0;
	r->base_path[0] = 0;
	if (user)
		bpf_probe_read_user_str(r->arg_path, sizeof(r->arg_path), value);
	else
		bpf_probe_read_kernel_str(r->arg_path, sizeof(r->arg_path), value);
	ew_emit(r);
}

/* ew_is_usermode_helper: the kernel starts user-mode helpers (call_usermodehelper) from a worker with
 * CLONE_PARENT, so their parent is kthreadd; no user process has that parent. */
static __always_inline int ew_is_usermode_helper(struct task_struct *task)
{
	return BPF_CORE_READ(task, real_parent, pid) == EW_KTHREADD_PID;
}

/* ew_helper_exec reports a program the kernel starts as a user-mode helper, such as a release agent. */
static __always_inline void ew_helper_exec(struct task_struct *task, struct linux_binprm *bprm)
{
	__u32 zero = 0;
	struct ew_record *r = bpf_map_lookup_elem(&ew_record_scratch, &zero);
	if (!r)
		return;
	ew_record_head(r, EW_KIND_HELPER_EXEC, EW_SOURCE_SYSCALL, 0, 0, 0);
	r->path[0] = 0;
	r->arg_path[0] = 0;
	r->arg_path2[0] = 0;
	bpf_probe_read_kernel_str(r->base_path, sizeof(r->base_path), BPF_CORE_READ(bprm, filename));
	ew_emit(r);
}

/* The release_agent value each hierarchy holds, by hierarchy ID, to report the value a write replaced. Kept
 * from the hierarchy's creation (cgroup_setup_root), its remounts and every write; user space adds the
 * hierarchies that existed before the sensor started, from their mount options. */
struct ew_agent_value {
	char v[EW_PATH_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct ew_agent_value);
} ew_agent_values SEC(".maps");

/* ew_agent_value_stored records the value hierarchy root holds now. */
static __always_inline void ew_agent_value_stored(struct cgroup_root *root)
{
	__u32 zero = 0;
	struct ew_path_buf *buf = bpf_map_lookup_elem(&ew_path_scratch, &zero);
	if (!buf)
		return;
	__u32 id = BPF_CORE_READ(root, hierarchy_id);
	bpf_probe_read_kernel_str(buf->data, EW_PATH_MAX, &root->release_agent_path);
	bpf_map_update_elem(&ew_agent_values, &id, buf->data, BPF_ANY);
}

/* ew_cgroup_root_of returns the hierarchy a cgroup v1 file at the root belongs to: the root directory's kernfs
 * node holds the root cgroup, which points at its cgroup_root. */
static __always_inline struct cgroup_root *ew_cgroup_root_of(struct kernfs_node *root_dir)
{
	struct cgroup *cgrp = BPF_CORE_READ(root_dir, priv);
	return BPF_CORE_READ(cgrp, root);
}

/* ew_agent_written reports a write to the real release_agent of hierarchy root, through file, with the value the
 * kernel now stores (read after the write) and the one it replaced, when known. action is what the caller did
 * about it; for a write the kernel accepted, --enforce kills a writer outside the host (the value is stored
 * by then: only the lsm backend refuses the write itself, in ew_hook_file_permission). */
static __always_inline void ew_agent_written(struct file *file, struct cgroup_root *root, __u32 source, __s64 ret,
					     __u32 nr, __u32 facts, __u32 action)
{
	__u32 zero = 0;
	struct ew_record *r = bpf_map_lookup_elem(&ew_record_scratch, &zero);
	if (!r)
		return;
	ew_record_head(r, EW_KIND_AGENT_WRITE, source, ret, nr, facts | EW_FACT_CGROUP1_AGENT);
	ew_record_file(r, file);
	if (action == EW_ACTION_ALERT && ret >= 0)
		action = ew_enforce((struct task_struct *)bpf_get_current_task(), 0, r->cgroup_path,
				    !(r->facts & EW_FACT_CGROUP_CUT));
	r->action = action;
	bpf_probe_read_kernel_str(r->arg_path, sizeof(r->arg_path), &root->release_agent_path);
	bpf_probe_read_kernel_str(r->base_path, sizeof(r->base_path), &root->name);
	__u32 key = BPF_CORE_READ(root, hierarchy_id);
	struct ew_agent_value *old = bpf_map_lookup_elem(&ew_agent_values, &key);
	r->arg_path2[0] = 0;
	if (old) {
		bpf_probe_read_kernel_str(r->arg_path2, sizeof(r->arg_path2), old->v);
		r->facts |= EW_FACT_OLD_VALUE;
	}
	bpf_map_update_elem(&ew_agent_values, &key, r->arg_path, BPF_ANY);
	ew_emit(r);
}

#define EW_NOTIFY_NAME "notify_on_release"
#define EW_NOTIFY_LEN 17

/* ew_notify_written reports a write to the notify_on_release of cgroup cgrp, with the flag after it. */
static __always_inline void ew_notify_written(struct file *file, struct cgroup *cgrp, __u32 source, __s64 ret,
					      __u32 nr, __u32 facts)
{
	__u32 zero = 0;
	struct ew_record *r = bpf_map_lookup_elem(&ew_record_scratch, &zero);
	if (!r)
		return;
	unsigned long flags = BPF_CORE_READ(cgrp, flags);
	/* CGRP_NOTIFY_ON_RELEASE is bit 0 of an anonymous enum (CO-RE cannot name it); it has never moved. */
	if (flags & 1)
		facts |= EW_FACT_ENABLED;
	ew_record_head(r, EW_KIND_NOTIFY_WRITE, source, ret, nr, facts);
	ew_record_file(r, file);
	r->arg_path[0] = 0;
	r->arg_path2[0] = 0;
	struct cgroup_root *root = BPF_CORE_READ(cgrp, root);
	bpf_probe_read_kernel_str(r->base_path, sizeof(r->base_path), &root->name);
	ew_emit(r);
}

static __always_inline int ew_name_is(struct dentry *dentry, const char *want, int len)
{
	char name[32] = {};
	if (BPF_CORE_READ(dentry, d_name.len) != len)
		return 0;
	bpf_probe_read_kernel(name, len & 31, BPF_CORE_READ(dentry, d_name.name));
	for (int i = 0; i < 31; i++) {
		if (i >= len)
			break;
		if (name[i] != want[i])
			return 0;
	}
	return 1;
}

/* ew_file_written: the tracepoint's body for a write-family syscall on file. */
static __always_inline void ew_file_written(struct file *file, __u32 source, __s64 ret, __u32 nr, __u32 facts)
{
	struct dentry *dentry = BPF_CORE_READ(file, f_path.dentry);
	struct super_block *sb = BPF_CORE_READ(dentry, d_sb);
	if (BPF_CORE_READ(sb, s_magic) != CGROUP_SUPER_MAGIC)
		return; /* the hot path: every other file's write leaves here */
	if (ew_name_is(dentry, EW_NOTIFY_NAME, EW_NOTIFY_LEN)) {
		struct kernfs_node *dir = BPF_CORE_READ(dentry, d_parent, d_inode, i_private);
		ew_notify_written(file, BPF_CORE_READ(dir, priv), source, ret, nr, facts);
		return;
	}
	int kfacts = ew_classify_dentry(dentry);
	if (kfacts < 0 || !(kfacts & EW_FACT_CGROUP1_AGENT))
		return;
	/* kernfs keeps a directory's node in its inode's i_private */
	struct kernfs_node *root_dir = BPF_CORE_READ(dentry, d_parent, d_inode, i_private);
	ew_agent_written(file, ew_cgroup_root_of(root_dir), source, ret, nr, facts, EW_ACTION_ALERT);
}

#endif
