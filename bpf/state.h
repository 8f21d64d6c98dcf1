/* SPDX-License-Identifier: GPL-2.0 */
/* The authoritative record of who set each hierarchy's release_agent, kept by every path that changes it, and
 * the judgement of a user-mode helper against the kernel's own state at its exec: is the program the kernel is
 * starting as root a release agent that the host did not set? Events can be missed; this decision never reads
 * what user space remembers, only the kernel's current values and these records. */
#ifndef EW_STATE_H
#define EW_STATE_H

#include "maps.h"
#include "task.h"
#include "cgroup.h"
#include "enforce.h"
#include "hash.h"

/* Records for this many hierarchies (a host has about a dozen); when full, a new hierarchy has no record and its
 * agent counts as set by an unknown setter: an escape, never a trusted value. */
#define EW_HIERARCHIES_MAX 1024
/* Whole values of this many hierarchies set by trusted setters; when full, a trusted value is not kept and its
 * agent counts as an escape (a false alarm, never a missed one). */
#define EW_HOST_AGENTS_MAX 16
/* How many hierarchies an exec's walk visits. Beyond, an agent started the kernel's way still counts as an
 * escape (EW_FACT_AGENT_SHAPED). */
#define EW_HIERARCHY_STEPS 4096

/* cgroup1_release_agent's environment, as it lies in the new program's memory. */
#define EW_AGENT_ENV "HOME=/\0PATH=/sbin:/bin:/usr/sbin:/usr/bin"

struct ew_agent_value {
	char v[EW_PATH_MAX];
};

/* Who set each hierarchy's current release_agent, by hierarchy ID. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EW_HIERARCHIES_MAX);
	__type(key, __u32);
	__type(value, struct ew_agent_setter);
} ew_agent_setters SEC(".maps");

/* The whole value a trusted setter left, by hierarchy ID: trust is granted on an exact comparison, never on a
 * hash an attacker could collide. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EW_HOST_AGENTS_MAX);
	__type(key, __u32);
	__type(value, struct ew_agent_value);
} ew_host_agents SEC(".maps");

#ifndef EW_LEGACY
struct ew_equal_scan {
	const char *a;
	const char *b;
	__u32 n;
	__u32 equal;
};

static long ew_equal_step(__u64 i, void *data)
{
	struct ew_equal_scan *scan = data;
	if (i >= scan->n)
		return 1;
	if (scan->a[i & (EW_PATH_MAX - 1)] != scan->b[i & (EW_PATH_MAX - 1)]) {
		scan->equal = 0;
		return 1;
	}
	return 0;
}

/* ew_equal compares the first n bytes of a and b, both in map memory of EW_PATH_MAX bytes. */
static __always_inline int ew_equal(const char *a, const char *b, long n)
{
	struct ew_equal_scan scan = {.a = a, .b = b, .n = n, .equal = 1};
	if (n <= 0 || n > EW_PATH_MAX)
		return 0;
	bpf_loop(EW_PATH_MAX, ew_equal_step, &scan, 0);
	return scan.equal;
}
#else
static __always_inline int ew_equal(const char *a, const char *b, long n)
{
	return ew_words_equal(a, b, n, EW_PATH_MAX / 8);
}
#endif

/* ew_setter_record records the current task as the setter, by how, of value: hierarchy root's release_agent as
 * it is now, in map memory. cgroup_path is the task's (as ew_cgroup_path writes it, whole when not cut). With
 * only_changed, a value equal to the recorded one keeps its setter (a remount that left release_agent alone).
 * Returns whether it recorded. */
static __always_inline int ew_setter_record(struct cgroup_root *root, const char *value, __u32 how,
					     const char *cgroup_path, int cgroup_whole, int only_changed)
{
	__u32 id = BPF_CORE_READ(root, hierarchy_id);
	__u64 hash = ew_value_hash(value);
	if (only_changed) {
		struct ew_agent_setter *old = bpf_map_lookup_elem(&ew_agent_setters, &id);
		if (old && old->value_hash == hash)
			return 0;
	}
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct ew_agent_setter s = {
		.value_hash = hash,
		.boot_ns = bpf_ktime_get_boot_ns(),
		.cgroup_id = bpf_get_current_cgroup_id(),
		.origin_id = BPF_CORE_READ(ew_task_cgroup(task), kn, id),
		.how = how,
		.trust = ew_trust_of(task, cgroup_path, cgroup_whole),
		.host_pid = BPF_CORE_READ(task, tgid),
		.mnt_ns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum),
		.pid_ns = ew_pid_ns(task),
		.hierarchy_id = id,
	};
	bpf_get_current_comm(s.comm, sizeof(s.comm));
	bpf_map_update_elem(&ew_agent_setters, &id, &s, BPF_ANY);
	if (s.trust == EW_TRUST_HOST && value[0])
		bpf_map_update_elem(&ew_host_agents, &id, value, BPF_ANY);
	else
		bpf_map_delete_elem(&ew_host_agents, &id);
	return 1;
}

/* ew_setter_changed records the current task as the setter of root's value, if it differs from the recorded
 * one (only_changed) or always. Reads the value and the task's cgroup itself: for the lifecycle tracepoints.
 * Returns whether it recorded. */
static __always_inline int ew_setter_changed(struct cgroup_root *root, __u32 how, int only_changed)
{
	__u32 zero = 0;
	struct ew_record *r = bpf_map_lookup_elem(&ew_record_scratch, &zero);
	if (!r)
		return 0;
	/* The cgroup path first: ew_cgroup_path works in the path scratch the value is read into next. */
	int whole = ew_cgroup_path((struct task_struct *)bpf_get_current_task(), r->cgroup_path);
	struct ew_path_buf *buf = bpf_map_lookup_elem(&ew_path_scratch, &zero);
	if (!buf)
		return 0;
	bpf_probe_read_kernel_str(buf->data, EW_PATH_MAX, &root->release_agent_path);
	return ew_setter_record(root, buf->data, how, r->cgroup_path, whole, only_changed);
}

/* ew_setter_forget drops the records of a hierarchy that ends: its ID is free for the next one. */
static __always_inline void ew_setter_forget(struct cgroup_root *root)
{
	__u32 id = BPF_CORE_READ(root, hierarchy_id);
	bpf_map_delete_elem(&ew_agent_setters, &id);
	bpf_map_delete_elem(&ew_host_agents, &id);
}

/* The walk over every hierarchy, for one exec. */
struct ew_hierarchy_walk {
	struct list_head *head; /* the task's css_set's links: one per hierarchy, every hierarchy of the machine */
	struct list_head *pos;
	const char *program; /* the program exec'd, map memory (in the legacy objects: always the record's) */
	long program_len;    /* with its NUL */
	struct cgroup_root *trusted;   /* a hierarchy whose value it is, set by a trusted setter */
	struct cgroup_root *untrusted; /* a hierarchy whose value it is, set by anyone else: the last set */
	__u64 untrusted_set_at;
	__u32 untrusted_id;
	__u32 pad;
};

static long ew_hierarchy_step(__u64 i, void *data)
{
	struct ew_hierarchy_walk *w = data;
	struct list_head *pos = w->pos; /* a local: BPF_CORE_READ(w->pos, ...) would relocate our own struct too */
	struct list_head *next = BPF_CORE_READ(pos, next);
	if (!next || next == w->head)
		return 1;
	w->pos = next;
	/* A css_set's links are chained through their cgrp_link member (link_css_set). */
	struct cgrp_cset_link *link = (void *)next - bpf_core_field_offset(struct cgrp_cset_link, cgrp_link);
	struct cgroup_root *root = BPF_CORE_READ(link, cgrp, root);
	__u32 zero = 0;
	struct ew_path_buf *buf = bpf_map_lookup_elem(&ew_path_scratch, &zero);
	if (!buf)
		return 1;
#ifdef EW_LEGACY
	/* A global function's state comes through map memory, where a pointer does not stay one: the program is
	 * the record's (ew_judge_helper's). */
	struct ew_record *r = bpf_map_lookup_elem(&ew_record_scratch, &zero);
	if (!r)
		return 1;
	const char *program = r->base_path;
#else
	const char *program = w->program;
#endif
	long n = bpf_probe_read_kernel_str(buf->data, EW_PATH_MAX, &root->release_agent_path);
	if (n != w->program_len || !ew_equal(buf->data, program, n))
		return 0;
	__u32 id = BPF_CORE_READ(root, hierarchy_id);
	struct ew_agent_value *host = bpf_map_lookup_elem(&ew_host_agents, &id);
	if (host && ew_equal(host->v, program, n)) {
		/* The host's own agent: running the same program for another hierarchy runs nothing it did not choose. */
		w->trusted = root;
		return 1;
	}
	/* Several hierarchies may hold the value (leftovers of earlier attempts): the one set last, by a setter
	 * on record, is the likeliest to have run it, and names the planting best. */
	struct ew_agent_setter *s = bpf_map_lookup_elem(&ew_agent_setters, &id);
	__u64 set_at = s ? s->boot_ns : 0;
	if (!w->untrusted || set_at > w->untrusted_set_at) {
		w->untrusted = root;
		w->untrusted_id = id;
		w->untrusted_set_at = set_at;
	}
	return 0;
}
EW_LOOP_STEP(ew_hierarchy_step)

/* ew_judge_helper judges the user-mode helper task (a child of kthreadd) that is executing bprm, whose program
 * path is already in r->base_path (length n with its NUL): which hierarchy's release_agent it is, who set that,
 * and whether it is the escape. Adds the agent bits to r->facts, fills r->arg_path (the hierarchy) and r->setter
 * (zero from ew_record_head). */
static __always_inline void ew_judge_helper(struct ew_record *r, struct task_struct *task, struct linux_binprm *bprm,
					    long n)
{
	__u32 facts = 0;

	r->arg_path[0] = 0;
	/* The kernel runs a release agent with two arguments (its path, the cgroup's; a script's interpreter adds
	 * more) and exactly this environment; the new program's strings are in place at this tracepoint. */
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	if (BPF_CORE_READ(bprm, argc) >= 2 && BPF_CORE_READ(bprm, envc) == 2 &&
	    BPF_CORE_READ(mm, env_end) - BPF_CORE_READ(mm, env_start) == sizeof(EW_AGENT_ENV))
		facts |= EW_FACT_AGENT_SHAPED;
	struct css_set *cset = BPF_CORE_READ(task, cgroups);
	struct list_head *head = (void *)cset + bpf_core_field_offset(struct css_set, cgrp_links);
	struct ew_hierarchy_walk w = {.head = head, .pos = head, .program = r->base_path, .program_len = n};
	if (n > 1)
		EW_LOOP(EW_HIERARCHY_STEPS, ew_hierarchy_step, &w);

	/* Locals: inside BPF_CORE_READ, w's own fields would be relocated too. */
	struct cgroup_root *trusted = w.trusted, *untrusted = w.untrusted;
	if (trusted) {
		facts |= EW_FACT_AGENT_CURRENT;
		bpf_probe_read_kernel_str(r->arg_path, sizeof(r->arg_path), &trusted->name);
		__u32 id = BPF_CORE_READ(trusted, hierarchy_id);
		struct ew_agent_setter *s = bpf_map_lookup_elem(&ew_agent_setters, &id);
		if (s)
			r->setter = *s;
	} else if (untrusted) {
		facts |= EW_FACT_AGENT_CURRENT | EW_FACT_AGENT_ESCAPE;
		bpf_probe_read_kernel_str(r->arg_path, sizeof(r->arg_path), &untrusted->name);
		struct ew_agent_setter *s = bpf_map_lookup_elem(&ew_agent_setters, &w.untrusted_id);
		if (s) {
			r->setter = *s;
			if (s->value_hash != ew_value_hash(r->base_path))
				facts |= EW_FACT_SETTER_STALE;
		} else {
			r->setter.hierarchy_id = w.untrusted_id;
		}
	} else if (facts & EW_FACT_AGENT_SHAPED) {
		/* Started as a release agent, yet no hierarchy holds this value now: it was changed between the
		 * release and this exec. Nothing vouches for it. */
		facts |= EW_FACT_AGENT_ESCAPE;
	}
	r->facts |= facts;
}

#endif
