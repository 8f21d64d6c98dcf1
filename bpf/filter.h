/* SPDX-License-Identifier: GPL-2.0 */
/* The in-kernel filter: is a dentry the release_agent at the root of a cgroup v1 hierarchy. */
#ifndef EW_FILTER_H
#define EW_FILTER_H

#include "config.h"
#include "record.h"

#define EW_AGENT_NAME "release_agent"
#define EW_AGENT_LEN 13

/* ew_classify_dentry: is this dentry the release_agent file of a cgroup v1 hierarchy root? It is the whole
 * in-kernel filter: one superblock magic comparison rejects every unrelated file. With any_fs it is a name
 * comparison only. Returns facts bits, or -1 when the file is not of interest. */
static __always_inline int ew_classify_dentry(struct dentry *dentry)
{
	struct super_block *sb = BPF_CORE_READ(dentry, d_sb);
	unsigned long magic = BPF_CORE_READ(sb, s_magic);
	int facts = 0;

	if (magic != CGROUP_SUPER_MAGIC && !any_fs)
		return -1;
	if (BPF_CORE_READ(dentry, d_name.len) != EW_AGENT_LEN)
		return -1;
	char name[EW_AGENT_LEN + 1] = {};
	bpf_probe_read_kernel(name, EW_AGENT_LEN, BPF_CORE_READ(dentry, d_name.name));
	const char want[] = EW_AGENT_NAME;
	for (int i = 0; i < EW_AGENT_LEN; i++)
		if (name[i] != want[i])
			return -1;
	if (magic == CGROUP_SUPER_MAGIC && BPF_CORE_READ(dentry, d_parent) == BPF_CORE_READ(sb, s_root))
		facts |= EW_FACT_CGROUP1_AGENT;
	else if (!any_fs)
		return -1; /* a child cgroup directory named release_agent: not the agent */
	return facts;
}

#endif
