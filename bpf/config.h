/* SPDX-License-Identifier: GPL-2.0 */
/* The configuration the loader sets before the programs are loaded (read-only to them). */
#ifndef EW_CONFIG_H
#define EW_CONFIG_H

#include "kernel.h"

/* any_fs: pass every file named release_agent (Tracee's behaviour), not only the real cgroup v1 one. */
const volatile __u8 any_fs = 0;
/* enforce: stop writes to the real release_agent by processes outside the host's namespaces. */
const volatile __u8 enforce = 0;
const volatile __u32 host_mnt_ns = 0;
const volatile __u32 host_pid_ns = 0;
/* enforce_allow_count: how many entries of ew_enforce_allowed (enforce.h) are in use. */
const volatile __u32 enforce_allow_count = 0;

#endif
