/* SPDX-License-Identifier: GPL-2.0 */
/* Records filled and sent: the common head, a file's fields, opens and mount options. */
#ifndef EW_REPORT_H
#define EW_REPORT_H

#include "filter.h"
#include "path.h"
#include "cgroup.h"
#include "task.h"
#include "enforce.h"
#include "emit.h"

#define EW_FMODE_WRITE 0x2

/* vmlinux.h is 6.1's (see scripts/generate.sh); 6.6 to 6.10 keep the inode change time in "__i_ctime", since
 * 6.11 in two fields. */
struct inode___6_6 {
	struct timespec64 __i_ctime;
} __attribute__((preserve_access_index));

struct inode___6_11 {
	time64_t i_ctime_sec;
	u32 i_ctime_nsec;
	u32 unused_pad; /* never read: explicit padding for -Wpadded */
} __attribute__((preserve_access_index));

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
	r->action = EW_ACTION_ALERT;
	__builtin_memset(&r->setter, 0, sizeof(r->setter));
	ew_fill_task(&r->task, task);
	struct cgroup *cgrp = ew_task_cgroup(task);
	r->task.origin_id = BPF_CORE_READ(cgrp, kn, id);
	if (!ew_cgroup_path_of(cgrp, r->cgroup_path))
		r->facts |= EW_FACT_CGROUP_CUT;
}

static __always_inline void ew_record_file(struct ew_record *r, struct file *file)
{
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	struct super_block *sb = BPF_CORE_READ(inode, i_sb);

	r->file_flags = BPF_CORE_READ(file, f_flags);
	r->inode = BPF_CORE_READ(inode, i_ino);
	r->dev = BPF_CORE_READ(sb, s_dev);
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
	if (!ew_path_write(BPF_CORE_READ(file, f_path.dentry), BPF_CORE_READ(file, f_path.mnt), r->path))
		r->facts |= EW_FACT_PATH_TRUNCATED;
}

/* Opens are reported in two steps so that what only matters for a reported file (the syscall, its arguments)
 * is read after the filter, never on the hot path of every other open.
 * ew_open_begin returns the record of a file of interest (the syscall's number, facts and path left for the
 * caller), or NULL. */
static __always_inline struct ew_record *ew_open_begin(struct file *file, __u32 source, __s64 ret)
{
	/* Only an open for writing can change the file: reads (most opens of the machine) leave at one load, and
	 * a container reading release_agent in a loop sends nothing. */
	if (!(BPF_CORE_READ(file, f_mode) & EW_FMODE_WRITE))
		return NULL;
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
	if (r->facts & EW_FACT_CGROUP1_AGENT) {
		r->action = ew_enforce((struct task_struct *)bpf_get_current_task(), can_deny, r->cgroup_path,
				       !(r->facts & EW_FACT_CGROUP_CUT));
		if (r->action == EW_ACTION_DENIED)
			r->ret = -EW_EPERM;
	}
	ew_emit(r);
	return r->action;
}

/* ew_mount_option reports a release_agent mount option. value is the option's value, or with
 * EW_FACT_MOUNT_DATA a whole mount(2) data string (user memory) for user space to parse. action is what the
 * caller did (EW_ACTION_DENIED) or EW_ACTION_ALERT; with may_kill, --enforce kills a mounter outside the host
 * whose option the kernel accepted (the value is set by then: the helper's exec is where it is stopped). */
static __always_inline void ew_mount_option(const char *value, int user, __u32 source, __s64 ret, __u32 nr, __u32 facts,
					    __u32 action, int may_kill)
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
	if (may_kill && ret >= 0 && action == EW_ACTION_ALERT)
		action = ew_enforce((struct task_struct *)bpf_get_current_task(), 0, r->cgroup_path,
				    !(r->facts & EW_FACT_CGROUP_CUT));
	r->action = action;
	ew_emit(r);
}

#endif
