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

/* EW_LOOP(n, fn, ctx) calls long fn(i, ctx) for i from 0 until n or until it returns nonzero: bpf_loop, whose
 * callback the verifier checks once. The legacy objects have no bpf_loop, and their verifier (5.10) walks a
 * loop's body once per iteration and every branch of it: a step with a few branches, run 49 times, inlined twice
 * in a program, passed its limit of a million instructions. There the step is a global function
 * (EW_LOOP_STEP), which the verifier checks once, on its own; a global function takes no pointer but the
 * context, so the loop's state is copied into ew_loop_state for the loop and back after it. Loops do not nest. */
#define EW_LOOP_STATE_MAX 128
struct ew_loop_state {
	__u64 data[EW_LOOP_STATE_MAX / 8]; /* words: a copy of pointers stays whole words */
};

/* Only the legacy objects use it (and ew_hash_scratch); the regular ones declare them too, so that both have the
 * same maps. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ew_loop_state);
} ew_loop_scratch SEC(".maps");

/* The string the legacy objects' ew_string_hash hashes (hash.h), copied there for a global function. */
struct ew_hash_input {
	__u64 words[EW_PATH_MAX / 8];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ew_hash_input);
} ew_hash_scratch SEC(".maps");

#ifdef EW_LEGACY
#define EW_LOOP(n, fn, ctx)                                                                                     \
	do {                                                                                                    \
		_Static_assert(sizeof(*(ctx)) <= EW_LOOP_STATE_MAX, "a loop state larger than ew_loop_state");  \
		__u32 ew_loop_zero = 0;                                                                         \
		struct ew_loop_state *ew_loop_s = bpf_map_lookup_elem(&ew_loop_scratch, &ew_loop_zero);         \
		if (!ew_loop_s)                                                                                 \
			break;                                                                                  \
		__builtin_memcpy(ew_loop_s->data, (ctx), sizeof(*(ctx)));                                       \
		for (__u32 ew_loop_i = 0; ew_loop_i < (n); ew_loop_i++)                                         \
			if (fn##_global(ew_loop_i))                                                             \
				break;                                                                          \
		__builtin_memcpy((ctx), ew_loop_s->data, sizeof(*(ctx)));                                       \
	} while (0)
/* EW_LOOP_STEP(fn) follows the definition of a step function fn: fn_global runs it on ew_loop_scratch. */
#define EW_LOOP_STEP(fn)                                                                                        \
	__attribute__((noinline)) long fn##_global(__u64 i)                                                     \
	{                                                                                                       \
		__u32 zero = 0;                                                                                 \
		struct ew_loop_state *s = bpf_map_lookup_elem(&ew_loop_scratch, &zero);                         \
		/* Used, so that the compiler passes it: steps that ignore i would get an unset register. */    \
		asm volatile("" : "+r"(i));                                                                     \
		return s ? fn(i, s->data) : 1;                                                                  \
	}
#else
#define EW_LOOP(n, fn, ctx) bpf_loop(n, fn, ctx, 0)
#define EW_LOOP_STEP(fn)
#endif

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
