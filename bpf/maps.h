/* SPDX-License-Identifier: GPL-2.0 */
/* The maps every backend shares: the ring buffer, the counters and the per-CPU scratch buffers. */
#ifndef EW_MAPS_H
#define EW_MAPS_H

#include "kernel.h"
#include "record.h"

/* 1 MiB: about 2,300 records of a typical size (~450 bytes: ew_emit), 60 of the largest (17 KiB: every path
 * at PATH_MAX). Each origin sends at most EW_ORIGIN_BURST at once (emit.h), so a few origins' bursts fit while user
 * space, which only decodes on the reader's path, catches up; beyond, records are counted per origin. The last
 * EW_RING_RESERVE bytes are kept for the first record of each new origin (ew_emit). */
#define EW_RING_SIZE (1 << 20)
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EW_RING_SIZE);
} ew_events SEC(".maps");

/* The kernel's own helpers' execs (EW-1004's verdicts) have a ring of their own: no origin's storm can fill it.
 * 64 KiB: about 140 records; each needs a cgroup released, and a storm of them is a storm of escapes. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 << 10);
} ew_helper_events SEC(".maps");

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

#endif
