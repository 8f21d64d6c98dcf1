/* SPDX-License-Identifier: GPL-2.0 */
/* FNV-1a (64 bits): tells values apart where a collision only costs a report, never a trust decision. */
#ifndef EW_HASH_H
#define EW_HASH_H

#include "kernel.h"
#include "record.h"
#include "maps.h"
#include "legacy.h"

#define EW_FNV_OFFSET 0xcbf29ce484222325ULL
#define EW_FNV_PRIME 0x100000001b3ULL

struct ew_hash_scan {
	const char *s;
	__u64 h;
};

#ifndef EW_LEGACY
static long ew_hash_step(__u64 i, void *data)
{
	struct ew_hash_scan *scan = data;
	char c = scan->s[i & (EW_PATH_MAX - 1)];
	if (!c)
		return 1;
	scan->h = (scan->h ^ (__u8)c) * EW_FNV_PRIME;
	return 0;
}

/* ew_string_hash continues hash h over the NUL-terminated string s, in map memory of EW_PATH_MAX bytes. */
static __always_inline __u64 ew_string_hash(__u64 h, const char *s)
{
	struct ew_hash_scan scan = {.s = s, .h = h};
	bpf_loop(EW_PATH_MAX, ew_hash_step, &scan, 0);
	return scan.h;
}
#else
/* The hash of ew_hash_scratch: a global function, which the verifier checks once for all its callers. */
__attribute__((noinline)) __u64 ew_hash_input_global(__u64 h)
{
	__u32 zero = 0;
	struct ew_hash_input *in = bpf_map_lookup_elem(&ew_hash_scratch, &zero);
	if (!in)
		return h;
	return ew_words_hash(h, (const char *)in->words, EW_PATH_MAX / 8, EW_FNV_PRIME);
}

static __always_inline __u64 ew_string_hash(__u64 h, const char *s)
{
	__u32 zero = 0;
	struct ew_hash_input *in = bpf_map_lookup_elem(&ew_hash_scratch, &zero);
	if (!in)
		return h;
	bpf_probe_read_kernel(in->words, sizeof(in->words), s);
	return ew_hash_input_global(h);
}
#endif

/* ew_value_hash is the hash of a release_agent value: it only tells whether a value is still the one its setter
 * left (user space computes the same for the values it seeds). */
static __always_inline __u64 ew_value_hash(const char *s)
{
	return ew_string_hash(EW_FNV_OFFSET, s);
}

/* ew_word_hash continues hash h over the 8 bytes of v. */
static __always_inline __u64 ew_word_hash(__u64 h, __u64 v)
{
	for (int i = 0; i < 8; i++) {
		h = (h ^ (v & 0xff)) * EW_FNV_PRIME;
		v >>= 8;
	}
	return h;
}

#endif
