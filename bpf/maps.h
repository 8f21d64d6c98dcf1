/* SPDX-License-Identifier: GPL-2.0 */
/* The maps every backend shares: the ring buffer, the counters and the per-CPU scratch buffers; sending records. */
#ifndef EW_MAPS_H
#define EW_MAPS_H

#include "kernel.h"
#include "record.h"

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

static __always_inline void ew_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&ew_counters, &idx);
	if (v)
		*v += 1;
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ew_wire);
} ew_wire_scratch SEC(".maps");

/* ew_wire_string appends the NUL-terminated string s (at most max bytes with its NUL) to w's strings at off,
 * and returns the offset after it. */
static __always_inline __u32 ew_wire_string(struct ew_wire *w, __u32 off, const char *s, __u32 max)
{
	if (off > EW_WIRE_STRINGS) /* never: the strings' sizes add up to EW_WIRE_STRINGS; for the verifier */
		off = EW_WIRE_STRINGS;
	long n = bpf_probe_read_kernel_str(&w->strings[off], max, s);
	if (n <= 0) {
		w->strings[off] = 0;
		n = 1;
	}
	return off + n;
}

/* ew_emit sends record r, as long as its strings: a typical record is a few hundred bytes, not the 17 KiB of
 * struct ew_record, so the ring holds that many more. */
static __always_inline void ew_emit(struct ew_record *r)
{
	__u32 zero = 0;
	struct ew_wire *w = bpf_map_lookup_elem(&ew_wire_scratch, &zero);
	if (!w)
		return;
	bpf_probe_read_kernel(&w->head, sizeof(w->head), r);
	__u32 off = ew_wire_string(w, 0, r->cgroup_path, EW_CGROUP_PATH_MAX);
	off = ew_wire_string(w, off, r->path, EW_PATH_MAX);
	off = ew_wire_string(w, off, r->arg_path, EW_PATH_MAX);
	off = ew_wire_string(w, off, r->arg_path2, EW_PATH_MAX);
	off = ew_wire_string(w, off, r->base_path, EW_PATH_MAX);
	if (off > EW_WIRE_STRINGS)
		off = EW_WIRE_STRINGS;
	if (bpf_ringbuf_output(&ew_events, w, sizeof(w->head) + off, 0))
		ew_count(EW_COUNTER_DROPPED);
	else
		ew_count(EW_COUNTER_EMITTED);
}

#endif
