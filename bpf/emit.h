/* SPDX-License-Identifier: GPL-2.0 */
/* Sending a record: fairness per origin first (a storm from one cgroup cannot starve another, and every record
 * lost is counted against the cgroup it came from), then the record packed to its strings' length. */
#ifndef EW_EMIT_H
#define EW_EMIT_H

#include "maps.h"
#include "hash.h"

/* Each origin (a cgroup: what a container is) may send EW_ORIGIN_RATE records a second, EW_ORIGIN_BURST at once;
 * beyond, its records are counted, not sent: as repeats when they say what the origin's last record sent said
 * (nothing new is lost), else as lost. The kernel's own helpers are never limited. A new cgroup starts with a
 * full budget, so its first records always get through. What is lost never hides a planting: the hierarchy's
 * state (state.h) is kept before a record is sent, and user space reports each origin's losses and repeats with
 * that state (EW-1005). */
#define EW_ORIGINS_MAX 1024
#define EW_ORIGIN_RATE 100
#define EW_ORIGIN_BURST 500
#define EW_ORIGIN_INTERVAL_NS (1000000000ULL / EW_ORIGIN_RATE)
/* Room of the ring only an origin's first record may take: whatever other origins' bursts filled, a new cgroup's
 * first record gets through (about 290 typical records; a process that creates cgroups faster than the reader
 * drains them can still fill it, and every record that finds no room is counted). */
#define EW_RING_RESERVE (128 << 10)

/* An origin's budget (GCRA: the theoretical arrival time of its next record) and its losses. */
struct ew_origin {
	__u64 tat;	   /* boot clock */
	__u64 lost_rate;   /* records refused for the budget */
	__u64 lost_ring;   /* records the full ring could not take */
	__u64 repeated;	   /* records over the budget that repeat the last one sent (ew_record_signature) */
	__u64 last_sent;   /* the signature of the origin's last record sent */
	/* the last record not sent (lost or repeated) */
	__u64 last_lost_ns;
	__u32 last_lost_kind;	   /* enum ew_kind */
	__u32 last_lost_hierarchy; /* hierarchy ID of the last such record about a hierarchy, 0 when none */
};

/* By origin id (ew_task.origin_id). LRU: when more cgroups than this send, the least recent one's budget starts
 * over and its losses are only in the global counters. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, EW_ORIGINS_MAX);
	__type(key, __u64);
	__type(value, struct ew_origin);
} ew_origins SEC(".maps");

static __always_inline void ew_origin_lost(struct ew_origin *o, struct ew_record *r)
{
	o->last_lost_ns = r->task.boot_ns;
	o->last_lost_kind = r->kind;
	if (r->setter.hierarchy_id)
		o->last_lost_hierarchy = r->setter.hierarchy_id;
}

/* ew_record_signature tells records apart by what they say: the operation, the object, the process, and the
 * strings the process chose (the path it passed, a value written, a rename's names). Two records with the same
 * signature differ only in time (and a descriptor's number). */
static __always_inline __u64 ew_record_signature(struct ew_record *r)
{
	__u64 h = ew_string_hash(EW_FNV_OFFSET, r->arg_path);
	h = ew_string_hash(h ^ 0xff, r->arg_path2);
	h = ew_word_hash(h, (__u64)r->kind << 32 | r->source);
	h = ew_word_hash(h, r->inode);
	h = ew_word_hash(h, (__u64)r->dev << 32 | r->file_flags);
	h = ew_word_hash(h, (__u64)r->task.host_pid << 32 | r->setter.hierarchy_id);
	h = ew_word_hash(h, (__u64)r->action << 32 | r->facts);
	return ew_word_hash(h, r->ret < 0 ? (__u64)r->ret : 0);
}

/* ew_admit says whether record r may be sent, and gives its origin's state (NULL when it cannot be kept) and
 * whether r may take the ring's reserve: the origin's first record, or the first value it plants in a hierarchy. */
static __always_inline int ew_admit(struct ew_record *r, struct ew_origin **origin, int *first)
{
	__u64 key = r->task.origin_id;
	struct ew_origin *o = bpf_map_lookup_elem(&ew_origins, &key);
	if (!o) {
		struct ew_origin fresh = {};
		*first = 1;
		bpf_map_update_elem(&ew_origins, &key, &fresh, BPF_NOEXIST);
		o = bpf_map_lookup_elem(&ew_origins, &key);
		if (!o)
			return 1;
	}
	*origin = o;
	/* The kernel's helpers always go. */
	if (r->kind == EW_KIND_HELPER_EXEC)
		return 1;
	__u64 now = r->task.boot_ns;
	__u64 tat = o->tat > now ? o->tat : now;
	__u64 burst = EW_ORIGIN_INTERVAL_NS * (EW_ORIGIN_BURST - 1);
	/* So does the first value a cgroup plants in a hierarchy, over its budget if need be, and into the ring's
	 * reserve: a storm cannot hide the planting. It goes into debt, one burst at most: cgroups that take turns
	 * setting one hierarchy (each write then a first) are held back like any storm. */
	if ((r->facts & EW_FACT_NEW_SETTER) && tat - now <= 2 * burst) {
		*first = 1;
		o->tat = tat + EW_ORIGIN_INTERVAL_NS;
		return 1;
	}
	if (tat - now > burst) {
		if (ew_record_signature(r) == o->last_sent) {
			__sync_fetch_and_add(&o->repeated, 1);
			ew_origin_lost(o, r);
			ew_count(EW_COUNTER_REPEATED);
			return 0;
		}
		__sync_fetch_and_add(&o->lost_rate, 1);
		ew_origin_lost(o, r);
		ew_count(EW_COUNTER_LOST_RATE);
		return 0;
	}
	o->tat = tat + EW_ORIGIN_INTERVAL_NS;
	return 1;
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ew_wire);
} ew_wire_scratch SEC(".maps");

/* ew_clamp caps var at max in a way every verifier tracks: a compiled "if (var > max) var = max" may test one
 * register and use another, and older verifiers then lose the bound. */
#define ew_clamp(var, max) asm volatile("if %0 <= %[m] goto +1\n%0 = %[m]\n" : "+r"(var) : [m] "i"(max))

/* ew_wire_string appends the NUL-terminated string s (at most max bytes with its NUL) to w's strings at off,
 * and returns the offset after it. */
static __always_inline __u64 ew_wire_string(struct ew_wire *w, __u64 off, const char *s, __u32 max)
{
	ew_clamp(off, EW_WIRE_STRINGS); /* never clamps: the strings' sizes add up to EW_WIRE_STRINGS */
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
	struct ew_origin *origin = NULL;
	int first = 0;
	if (!ew_admit(r, &origin, &first))
		return;
	__u32 zero = 0;
	struct ew_wire *w = bpf_map_lookup_elem(&ew_wire_scratch, &zero);
	if (!w)
		return;
	bpf_probe_read_kernel(&w->head, sizeof(w->head), r);
	__u64 off = ew_wire_string(w, 0, r->cgroup_path, EW_CGROUP_PATH_MAX);
	off = ew_wire_string(w, off, r->path, EW_PATH_MAX);
	off = ew_wire_string(w, off, r->arg_path, EW_PATH_MAX);
	off = ew_wire_string(w, off, r->arg_path2, EW_PATH_MAX);
	off = ew_wire_string(w, off, r->base_path, EW_PATH_MAX);
	ew_clamp(off, EW_WIRE_STRINGS);
	long err;
	if (r->kind == EW_KIND_HELPER_EXEC)
		err = bpf_ringbuf_output(&ew_helper_events, w, sizeof(w->head) + off, 0);
	else if (!first && bpf_ringbuf_query(&ew_events, BPF_RB_AVAIL_DATA) > EW_RING_SIZE - EW_RING_RESERVE)
		err = -1; /* only the reserve is left: counted as the ring full */
	else
		err = bpf_ringbuf_output(&ew_events, w, sizeof(w->head) + off, 0);
	if (err) {
		ew_count(EW_COUNTER_DROPPED);
		if (origin) {
			__sync_fetch_and_add(&origin->lost_ring, 1);
			ew_origin_lost(origin, r);
		}
	} else {
		ew_count(EW_COUNTER_EMITTED);
		if (origin && r->kind != EW_KIND_HELPER_EXEC)
			origin->last_sent = ew_record_signature(r);
	}
}

#endif
