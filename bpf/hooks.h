/* SPDX-License-Identifier: GPL-2.0 */
/* Bodies for the backends that attach to the security hooks themselves (lsm, fentry, kprobe): they see every
 * open and rename at the moment the kernel checks it, whatever syscall or io_uring request led there. */
#ifndef EW_HOOKS_H
#define EW_HOOKS_H

#include "syscall.h"
#include "agent.h"

/* ew_hook_file_open is security_file_open(file). Returns the action taken. */
static __always_inline __u32 ew_hook_file_open(struct file *file, int can_deny)
{
	struct ew_record *r = ew_open_begin(file, EW_SOURCE_SYSCALL, 0);
	if (!r)
		return EW_ACTION_ALERT;
	struct task_struct *task = ew_current_task(); /* bpf_task_pt_regs wants a BTF pointer */
	struct ew_syscall sc;

	ew_syscall_of(task, ew_task_regs(task), &sc);
	ew_open_syscall(r, &sc, 0);
	return ew_open_finish(r, file, can_deny);
}

/* ew_btf_open_may_matter is the first test of the programs on security_file_open that have the file as a BTF
 * pointer (lsm, fentry: attached under --enforce or --any-fs, where every open of the machine enters them): direct
 * loads, no helper call, until the open is one for writing of a file on a cgroup v1 file system (of any file
 * system, with any_fs). ew_open_begin then decides with the dentry. */
static __always_inline int ew_btf_open_may_matter(struct file *file)
{
	if (!(file->f_mode & EW_FMODE_WRITE))
		return 0;
	return any_fs || file->f_path.dentry->d_sb->s_magic == CGROUP_SUPER_MAGIC;
}

/* ew_hook_cgroup_file_open is cgroup_file_open(of), the open of cgroup files' file operations: the kernel calls
 * it for them alone, after security_file_open let the open through. Unless something must see every open (a
 * refusal under --enforce, or --any-fs), it takes the place of the security_file_open hook, so that the opens of
 * every other file of the machine never enter a program. */
static __always_inline void ew_hook_cgroup_file_open(struct kernfs_open_file *of)
{
	ew_hook_file_open(BPF_CORE_READ(of, file), 0);
}

/* ew_hook_inode_rename is security_inode_rename(..., new_dentry, ...). The hook knows the target dentry, so the
 * real release_agent is decided exactly here; the names come from the syscall's arguments. Returns the
 * action taken. */
static __always_inline __u32 ew_hook_inode_rename(struct dentry *old_dentry, struct dentry *new_dentry, int can_deny)
{
	int kfacts = ew_classify_dentry(new_dentry);
	if (kfacts < 0)
		return EW_ACTION_ALERT;
	__u32 zero = 0;
	struct ew_record *r = bpf_map_lookup_elem(&ew_record_scratch, &zero);
	if (!r)
		return EW_ACTION_ALERT;
	struct task_struct *task = ew_current_task();
	struct ew_syscall sc;
	struct dentry *new_dir;
	__u32 facts = 0;

	ew_syscall_of(task, ew_task_regs(task), &sc);
	if ((sc.op == EW_OP_RENAME || sc.op == EW_OP_RENAME_AT) && sc.source == EW_SOURCE_SYSCALL) {
		ew_rename_names(r, task, &sc, &new_dir, &facts);
	} else {
		/* io_uring's IORING_OP_RENAMEAT: no syscall arguments, only the names of the dentries. */
		r->path[0] = 0;
		r->base_path[0] = 0;
		bpf_probe_read_kernel_str(r->arg_path, sizeof(r->arg_path), BPF_CORE_READ(new_dentry, d_name.name));
		bpf_probe_read_kernel_str(r->arg_path2, sizeof(r->arg_path2), BPF_CORE_READ(old_dentry, d_name.name));
	}
	ew_record_head(r, EW_KIND_INODE_RENAME, sc.source, 0, sc.nr, sc.facts | facts | kfacts | EW_FACT_DIR_RESOLVED);
	if (kfacts & EW_FACT_CGROUP1_AGENT) {
		r->action = ew_enforce(task, can_deny, r->cgroup_path, !(r->facts & EW_FACT_CGROUP_CUT));
		if (r->action == EW_ACTION_DENIED)
			r->ret = -EW_EPERM;
	}
	ew_emit(r);
	return r->action;
}

/* ew_hook_agent_write is cgroup_release_agent_write(of, ...) returning ret: the kernel's own handler of a
 * release_agent write, whatever syscall or io_uring request carried it. of->kn is the file, its parent the
 * hierarchy's root directory. */
static __always_inline void ew_hook_agent_write(struct kernfs_open_file *of, __s64 ret)
{
	struct task_struct *task = ew_current_task();
	struct ew_syscall sc;

	ew_syscall_of(task, ew_task_regs(task), &sc);
	struct kernfs_node *root_dir = ew_kn_parent(BPF_CORE_READ(of, kn));
	ew_agent_written(BPF_CORE_READ(of, file), ew_cgroup_root_of(root_dir), sc.source, ret, sc.nr, sc.facts,
			 EW_ACTION_ALERT);
}

#define EW_MAY_WRITE 0x2

/* ew_hook_file_permission is security_file_permission(file, mask), attached under --enforce only (lsm/ by the
 * lsm backend, fmod_ret/ by the fentry backend): a write to the real release_agent through a descriptor the
 * writer did not open under the sensor's eye (opened before it started, or passed by another process) is refused
 * here, before the handler runs. Returns -EPERM to refuse. Every read and write of the machine passes here, so
 * the mask and the superblock are checked first. */
static __always_inline int ew_hook_file_permission(struct file *file, int mask)
{
	if (!(mask & EW_MAY_WRITE))
		return 0;
	struct dentry *dentry = file->f_path.dentry; /* a BTF pointer: direct loads, no helper call */
	if (dentry->d_sb->s_magic != CGROUP_SUPER_MAGIC)
		return 0;
	int kfacts = ew_classify_dentry(dentry);
	if (kfacts < 0 || !(kfacts & EW_FACT_CGROUP1_AGENT))
		return 0;
	struct task_struct *task = ew_current_task();
	__u32 zero = 0;
	struct ew_record *r = bpf_map_lookup_elem(&ew_record_scratch, &zero);
	if (!r)
		return 0;
	int whole = ew_cgroup_path(task, r->cgroup_path);
	if (ew_enforce(task, 1, r->cgroup_path, whole) != EW_ACTION_DENIED)
		return 0;
	struct ew_syscall sc;
	ew_syscall_of(task, ew_task_regs(task), &sc);
	struct kernfs_node *root_dir = BPF_CORE_READ(dentry, d_parent, d_inode, i_private);
	ew_agent_written(file, ew_cgroup_root_of(root_dir), sc.source, -EW_EPERM, sc.nr, sc.facts, EW_ACTION_DENIED);
	return -EW_EPERM;
}

/* ew_hook_notify_write is cgroup_write_notify_on_release(css, cft, val) returning ret: the kernel's handler. With
 * the value the flag takes, whatever carried the write. */
static __always_inline void ew_hook_notify_write(struct cgroup_subsys_state *css, __u64 val, __s64 ret)
{
	struct task_struct *task = ew_current_task();
	struct ew_syscall sc;
	__u32 zero = 0;

	ew_syscall_of(task, ew_task_regs(task), &sc);
	struct ew_record *r = bpf_map_lookup_elem(&ew_record_scratch, &zero);
	if (!r)
		return;
	struct cgroup *cgrp = BPF_CORE_READ(css, cgroup);
	ew_record_head(r, EW_KIND_NOTIFY_WRITE, sc.source, ret, sc.nr, sc.facts | (val ? EW_FACT_ENABLED : 0));
	r->path[0] = 0;
	r->arg_path[0] = 0;
	r->arg_path2[0] = 0;
	struct cgroup_root *root = BPF_CORE_READ(cgrp, root);
	bpf_probe_read_kernel_str(r->base_path, sizeof(r->base_path), &root->name);
	ew_emit(r);
}

/* A release_agent mount option's value, per thread, from the parser's entry (where param still points at it)
 * to its exit (where the verdict is): the string itself stays alive until after the exit (the parser hands it to
 * the mount context on success; on failure its caller frees it after the return), so its address is kept. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH); /* an exit that never fires (a missed kretprobe) cannot fill it */
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} ew_pending_options SEC(".maps");

/* ew_param_is_agent: is the mount option param release_agent? */
static __always_inline int ew_param_is_agent(struct fs_parameter *param)
{
	char key[EW_AGENT_LEN + 2] = {};
	const char want[] = EW_AGENT_NAME;
	if (bpf_probe_read_kernel_str(key, sizeof(key), BPF_CORE_READ(param, key)) != EW_AGENT_LEN + 1)
		return 0;
	for (int i = 0; i < EW_AGENT_LEN; i++)
		if (key[i] != want[i])
			return 0;
	return 1;
}

/* ew_hook_parse_param_entry is the entry of cgroup1_parse_param(fc, param): the kernel's parser of every cgroup
 * v1 mount option, from mount(2), fsconfig or a remount alike. It keeps a release_agent option's value, which
 * the parser takes out of param (param->string = NULL) when it accepts it. */
static __always_inline void ew_hook_parse_param_entry(struct fs_parameter *param)
{
	/* A value left by an exit that never fired (a missed kretprobe) must not be reported for this option. */
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_delete_elem(&ew_pending_options, &tid);
	if (!ew_param_is_agent(param))
		return;
	__u64 value = (__u64)BPF_CORE_READ(param, string);
	bpf_map_update_elem(&ew_pending_options, &tid, &value, BPF_ANY);
}

/* ew_hook_parse_param_exit reports the option kept at entry with the parser's verdict: it refuses a second
 * release_agent, and one from outside the initial user namespace or without CAP_SYS_ADMIN. */
static __always_inline void ew_hook_parse_param_exit(__s64 ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *value = bpf_map_lookup_elem(&ew_pending_options, &tid);
	if (!value)
		return;
	struct task_struct *task = ew_current_task();
	struct ew_syscall sc;
	ew_syscall_of(task, ew_task_regs(task), &sc);
	ew_mount_option((const char *)*value, 0, sc.source, ret, sc.nr, sc.facts, EW_ACTION_ALERT, 1);
	bpf_map_delete_elem(&ew_pending_options, &tid);
}

#define EW_CGROUP_FS_NAME "cgroup"

/* ew_hook_fs_param is security_fs_context_parse_param(fc, param), attached under --enforce only (lsm/ by the lsm
 * backend, fmod_ret/ by the fentry backend): every option of every mount, remount and fsconfig passes here
 * before the file system's own parser. A cgroup v1 release_agent option from outside the host is refused, so
 * the value is never set. Returns -EPERM to refuse. */
static __always_inline int ew_hook_fs_param(struct fs_context *fc, struct fs_parameter *param)
{
	char type[sizeof(EW_CGROUP_FS_NAME) + 1] = {};
	const char want[] = EW_CGROUP_FS_NAME;
	if (bpf_probe_read_kernel_str(type, sizeof(type), BPF_CORE_READ(fc, fs_type, name)) != sizeof(want))
		return 0;
	for (int i = 0; i < (int)sizeof(want); i++)
		if (type[i] != want[i])
			return 0;
	if (!ew_param_is_agent(param))
		return 0;
	__u32 zero = 0;
	struct ew_record *r = bpf_map_lookup_elem(&ew_record_scratch, &zero);
	if (!r)
		return 0;
	struct task_struct *task = ew_current_task();
	int whole = ew_cgroup_path(task, r->cgroup_path);
	if (ew_enforce(task, 1, r->cgroup_path, whole) != EW_ACTION_DENIED)
		return 0;
	struct ew_syscall sc;
	ew_syscall_of(task, ew_task_regs(task), &sc);
	const char *value = "";
	if (BPF_CORE_READ_BITFIELD_PROBED(param, type) == bpf_core_enum_value(enum fs_value_type, fs_value_is_string))
		value = BPF_CORE_READ(param, string);
	ew_mount_option(value, 0, sc.source, -EW_EPERM, sc.nr, sc.facts, EW_ACTION_DENIED, 0);
	return -EW_EPERM;
}

#endif