/* SPDX-License-Identifier: GPL-2.0 */
/* Paths of files as the current task sees them, walked up from the dentry across mounts; files by descriptor. */
#ifndef EW_PATH_H
#define EW_PATH_H

#include "maps.h"

#define EW_MAX_COMPONENTS 48 /* steps of a path walk: components written and mount points crossed */

static __always_inline struct mount *ew_real_mount(struct vfsmount *mnt)
{
	return (struct mount *)((void *)mnt - bpf_core_field_offset(struct mount, mnt));
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
	__u32 complete; /* the walk reached the top: the task's root, its mount namespace's, or a detached tree's */
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
	if (dentry == w->root_dentry && vfsmnt == w->root_mnt) {
		w->complete = 1;
		return 1;
	}
	struct dentry *mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);

	if (dentry == mnt_root || dentry == parent) {
		struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
		if (dentry != mnt_root || mnt == mnt_parent) {
			w->complete = 1;
			return 1;
		}
		if (i == EW_MAX_COMPONENTS)
			return 1; /* the extra step only looks for the top: more to walk, the path is cut */
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = mnt_parent;
		w->vfsmnt = (struct vfsmount *)((void *)mnt_parent + bpf_core_field_offset(struct mount, mnt));
		return 0;
	}
	if (i == EW_MAX_COMPONENTS)
		return 1;
	int len = BPF_CORE_READ(dentry, d_name.len) & EW_NAME_MAX;
	int pos = w->pos & (EW_PATH_MAX - 1);
	if (len + 1 > pos)
		return 1;
	pos -= len;
	bpf_probe_read_kernel(&buf->data[pos & (EW_PATH_MAX - 1)], len, BPF_CORE_READ(dentry, d_name.name));
	pos -= 1;
	buf->data[pos & (EW_PATH_MAX - 1)] = '/';
	w->pos = pos;
	w->dentry = parent;
	return 0;
}
EW_LOOP_STEP(ew_path_step)

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
 * detached mount ends at its own root. Returns 1 when the path is whole, 0 when it was cut: longer than
 * EW_PATH_MAX, or more than EW_MAX_COMPONENTS steps. A cut path is its lower part, the file's end. (The last
 * step only looks for the top, so a path of exactly EW_MAX_COMPONENTS steps is whole.) */
static __always_inline int ew_path_write(struct dentry *dentry, struct vfsmount *vfsmnt, char *dst)
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
	EW_LOOP(EW_MAX_COMPONENTS + 1, ew_path_step, &w);
	ew_path_copy(dst, w.pos, EW_PATH_MAX);
	return w.complete;
}

#endif
