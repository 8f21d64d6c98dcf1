// SPDX-License-Identifier: GPL-2.0
/* No programs: this object only carries the BTF of the record types, from which bpf2go generates the Go types
 * that every backend's records decode into. */
#include "kernel.h"
#include "record.h"

char LICENSE[] __attribute__((section("license"), used)) = "GPL";

struct ew_types {
	struct ew_record_head record_head;
	enum ew_kind kind;
	enum ew_source source;
	enum ew_fact fact;
	enum ew_counter counter;
	enum ew_action action;
	enum ew_set_how set_how;
	enum ew_trust trust;
	__u32 pad;
};
const struct ew_types *ew_types __attribute__((used));
