/* SPDX-License-Identifier: GPL-2.0 */
/* Helpers only the tracepoint backend uses: writes resolved to their file, mount options from syscall arguments. */
#ifndef EW_TRACEPOINT_H
#define EW_TRACEPOINT_H

#include "syscall.h"
#include "agent.h"

/* ew_fd_file_btf is ew_fd_file for a BTF-typed task (bpf_get_current_task_btf): the pointer chain is read with
 * direct loads, only the indexed slot needs a helper. */
static __always_inline struct file *ew_fd_file_btf(struct task_struct *task, int fd)
{
#ifdef EW_LEGACY
	return ew_fd_file(task, fd); /* no BTF-typed task there */
#else
	struct fdtable *fdt = task->files->fdt;
	struct file *file = NULL;

	if (fd < 0 || (unsigned int)fd >= fdt->max_fds)
		return NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fdt->fd[fd]);
	return file;
#endif
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
	if (BPF_CORE_READ(dentry, d_name.len) != (__u32)len)
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

/* The file operations of kernfs files (kernfs_file_fops), learned from the first regular file of a kernfs file
 * system (cgroup v1 or v2, sysfs) seen written: every cgroup file has them, so once they are known the write of a
 * file with other operations leaves after one read, where the superblock test takes three. Until then (zero)
 * each write takes the superblock test alone. Learned in the kernel from the kernel's own objects, so nothing can
 * feed it a wrong value; a restart costs only the longer test until the next such write (container hosts write
 * cgroup files all the time). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} ew_kernfs_fops SEC(".maps");

#define EW_S_IFMT 00170000
#define EW_S_IFREG 0100000
#define EW_CGROUP2_SUPER_MAGIC 0x63677270
#define EW_SYSFS_MAGIC 0x62656572

/* ew_file_written: the tracepoint's body for a write-family syscall on file. */
static __always_inline void ew_file_written(struct file *file, __u32 source, __s64 ret, __u32 nr, __u32 facts)
{
	__u32 zero = 0;
	__u64 *kernfs_fops = bpf_map_lookup_elem(&ew_kernfs_fops, &zero); /* an array: the verifier inlines it */
	__u64 known = kernfs_fops ? *kernfs_fops : 0;
	if (known && (__u64)BPF_CORE_READ(file, f_op) != known)
		return; /* the hot path: every other file's write leaves here */
	struct dentry *dentry = BPF_CORE_READ(file, f_path.dentry);
	struct super_block *sb = BPF_CORE_READ(dentry, d_sb);
	unsigned long magic = BPF_CORE_READ(sb, s_magic);
	if (!known && kernfs_fops && (magic == CGROUP_SUPER_MAGIC || magic == EW_CGROUP2_SUPER_MAGIC || magic == EW_SYSFS_MAGIC) &&
	    (BPF_CORE_READ(file, f_inode, i_mode) & EW_S_IFMT) == EW_S_IFREG)
		*kernfs_fops = (__u64)BPF_CORE_READ(file, f_op); /* a regular file there is a kernfs file */
	if (magic != CGROUP_SUPER_MAGIC)
		return; /* not learned yet, or a kernfs file of another file system */
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

#define EW_FSCONFIG_SET_STRING 1
#define EW_MS_REMOUNT 32

/* ew_user_str_is compares a user string with want (len bytes, NUL included). */
static __always_inline int ew_user_str_is(const char *user, const char *want, int len)
{
	char buf[16] = {};
	if (bpf_probe_read_user_str(buf, sizeof(buf), user) != len)
		return 0;
	for (int i = 0; i < 16; i++) {
		if (i >= len)
			break;
		if (buf[i] != want[i])
			return 0;
	}
	return 1;
}

/* ew_mount_syscall: a cgroup v1 mount(2) the kernel refused (its data string may hold release_agent=; user
 * space parses it), or an fsconfig setting the key release_agent. A mount(2) the kernel accepted is reported from
 * the hierarchy's state (lifecycle.h), never from its data read again here: another thread may have changed it. */
static __always_inline void ew_mount_syscall(struct ew_syscall *sc, long ret)
{
	if (sc->op == EW_OP_MOUNT) {
		if (ret >= 0)
			return;
		const char *type = (const char *)sys_arg(sc->regs, sc->compat, 2);
		unsigned long flags = sys_arg(sc->regs, sc->compat, 3);
		const char *data = (const char *)sys_arg(sc->regs, sc->compat, 4);
		/* A remount names no file system type: any remount's data goes to user space, which keeps only
		 * release_agent= (remounts are rare). */
		if (data && ((flags & EW_MS_REMOUNT) || ew_user_str_is(type, "cgroup", 7)))
			ew_mount_option(data, 1, EW_SOURCE_SYSCALL, ret, sc->nr, sc->facts | EW_FACT_MOUNT_DATA,
					EW_ACTION_ALERT, 0);
		return;
	}
	if (sys_arg(sc->regs, sc->compat, 1) != EW_FSCONFIG_SET_STRING)
		return;
	if (ew_user_str_is((const char *)sys_arg(sc->regs, sc->compat, 2), EW_AGENT_NAME, EW_AGENT_LEN + 1))
		ew_mount_option((const char *)sys_arg(sc->regs, sc->compat, 3), 1, EW_SOURCE_SYSCALL, ret, sc->nr, sc->facts,
				EW_ACTION_ALERT, 1);
}

#endif
