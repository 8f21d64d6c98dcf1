/* SPDX-License-Identifier: GPL-2.0 */
/* The task's cgroup path, walked up kernfs, and the hierarchy a cgroup v1 root file belongs to. */
#ifndef EW_CGROUP_H
#define EW_CGROUP_H

#include "path.h"

#define EW_CGROUP_LEVELS 12

/* vmlinux.h is 6.1's (see scripts/generate.sh); since 6.15 the kernfs parent pointer is "__parent". */
struct kernfs_node___new {
	struct kernfs_node *__parent;
} __attribute__((preserve_access_index));

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
EW_LOOP_STEP(ew_cgroup_step)

/* ew_task_cgroup returns the cgroup that says where the task lives: the unified (v2) cgroup when the task is
 * below its root, otherwise the first cgroup v1 controller hierarchy that places it below the root (hybrid and
 * v1 hosts). */
static __always_inline struct cgroup *ew_task_cgroup(struct task_struct *task)
{
	struct css_set *cset = BPF_CORE_READ(task, cgroups);
	struct cgroup *cgrp = BPF_CORE_READ(cset, dfl_cgrp);
	if (BPF_CORE_READ(cgrp, level) == 0) {
		for (int i = 0; i < 12; i++) {
			if ((unsigned long)i >= bpf_core_enum_value(enum cgroup_subsys_id, CGROUP_SUBSYS_COUNT))
				break;
			struct cgroup_subsys_state *css = BPF_CORE_READ(cset, subsys[i]);
			struct cgroup *c = BPF_CORE_READ(css, cgroup);
			if (c && BPF_CORE_READ(c, level) > 0) {
				cgrp = c;
				break;
			}
		}
	}
	return cgrp;
}

/* ew_cgroup_path writes the path of the task's cgroup (ew_task_cgroup; ew_cgroup_path_of: of cgroup cgrp). It is what container detection in user
 * space works from, captured here because the process may be gone. Returns 1 when the path is whole, 0 when only
 * its lower part fitted: a task can nest cgroups at will, so a cut path must never be taken for the cgroup its
 * lower part names. */
static __always_inline int ew_cgroup_path_of(struct cgroup *cgrp, char *dst)
{
	__u32 zero = 0;
	struct ew_path_buf *buf = bpf_map_lookup_elem(&ew_path_scratch, &zero);
	if (!buf)
		return 0;
	struct ew_cgroup_walk w = {.kn = BPF_CORE_READ(cgrp, kn), .pos = EW_CGROUP_PATH_MAX - 1};
	buf->data[EW_CGROUP_PATH_MAX - 1] = 0;
	EW_LOOP(EW_CGROUP_LEVELS, ew_cgroup_step, &w);
	ew_path_copy(dst, w.pos, EW_CGROUP_PATH_MAX);
	return w.complete;
}

static __always_inline int ew_cgroup_path(struct task_struct *task, char *dst)
{
	return ew_cgroup_path_of(ew_task_cgroup(task), dst);
}

/* ew_cgroup_root_of returns the hierarchy a cgroup v1 file at the root belongs to: the root directory's kernfs
 * node holds the root cgroup, which points at its cgroup_root. */
static __always_inline struct cgroup_root *ew_cgroup_root_of(struct kernfs_node *root_dir)
{
	struct cgroup *cgrp = BPF_CORE_READ(root_dir, priv);
	return BPF_CORE_READ(cgrp, root);
}

#endif
