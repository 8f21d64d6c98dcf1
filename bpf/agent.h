/* SPDX-License-Identifier: GPL-2.0 */
/* The release_agent value each hierarchy holds, and the records of writes to a real release_agent. */
#ifndef EW_AGENT_H
#define EW_AGENT_H

#include "report.h"
#include "state.h"

/* The release_agent value each hierarchy holds, by hierarchy ID, to report the value a write replaced. Kept
 * from the hierarchy's creation (cgroup_setup_root), its remounts and every write; user space adds the
 * hierarchies that existed before the sensor started, from their mount options. */
/* A plain hash: an LRU map this small evicts entries early (each CPU takes free entries in batches of 128). When
 * full, a new hierarchy's old value is not reported; entries go with their hierarchy (cgroup_destroy_root). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64); /* 4 KiB each */
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

/* ew_agent_written reports a write to the real release_agent of hierarchy root, through file, with the value the
 * kernel now stores (read after the write) and the one it replaced, when known. action is what the caller did
 * about it; for a write the kernel accepted, --enforce kills a writer outside the host (the value is stored
 * by then: the lsm and fentry backends refuse such a write before the handler, in ew_hook_file_permission). */
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
	if (ret >= 0) {
		struct ew_agent_setter *prev = bpf_map_lookup_elem(&ew_agent_setters, &key);
		if (!prev || prev->origin_id != r->task.origin_id)
			r->facts |= EW_FACT_NEW_SETTER;
		ew_setter_record(root, r->arg_path, EW_SET_WRITE, r->cgroup_path, !(r->facts & EW_FACT_CGROUP_CUT), 0);
	}
	r->setter.hierarchy_id = key; /* which hierarchy, should the record be lost */
	ew_emit(r);
}

#endif
