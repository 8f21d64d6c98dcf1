// SPDX-License-Identifier: GPL-2.0
/* LSM backend: BPF programs on the LSM hooks themselves, which may refuse an operation (under --enforce). Needs
 * the bpf LSM active; the fentry backend refuses the same operations without it. */
#include "hooks.h"
#include "lifecycle.h"

char LICENSE[] SEC("license") = "GPL";

/* Attached under --enforce or --any-fs only; otherwise ew_lsm_cgroup_file_open sees the opens. */
SEC("lsm/file_open")
int BPF_PROG(ew_lsm_file_open, struct file *file, int ret)
{
	if (ret)
		return ret; /* an earlier LSM refused it already */
	if (!ew_btf_open_may_matter(file))
		return 0;
	return ew_hook_file_open(file, 1) == EW_ACTION_DENIED ? -EW_EPERM : 0;
}

SEC("fentry/cgroup_file_open")
int BPF_PROG(ew_lsm_cgroup_file_open, struct kernfs_open_file *of)
{
	ew_hook_cgroup_file_open(of);
	return 0;
}

/* The LSM hook has no flags argument (security_inode_rename calls it twice for RENAME_EXCHANGE). */
SEC("lsm/inode_rename")
int BPF_PROG(ew_lsm_inode_rename, struct inode *old_dir, struct dentry *old_dentry, struct inode *new_dir,
	     struct dentry *new_dentry, int ret)
{
	if (ret)
		return ret;
	return ew_hook_inode_rename(old_dentry, new_dentry, 1) == EW_ACTION_DENIED ? -EW_EPERM : 0;
}

/* Every write to a release_agent ends in this handler: after it, the hierarchy holds the new value. LSM kernels
 * have BPF trampolines, so fexit is there too. */
SEC("fexit/cgroup_release_agent_write")
int BPF_PROG(ew_lsm_fexit_agent_write, struct kernfs_open_file *of, char *buf, size_t nbytes, loff_t off, ssize_t ret)
{
	ew_hook_agent_write(of, ret);
	return 0;
}

SEC("fexit/cgroup_write_notify_on_release")
int BPF_PROG(ew_lsm_fexit_notify_write, struct cgroup_subsys_state *css, struct cftype *cft, __u64 val, int ret)
{
	ew_hook_notify_write(css, val, ret);
	return 0;
}

/* The mount option parser: its value at entry, its verdict at exit. */
SEC("fentry/cgroup1_parse_param")
int BPF_PROG(ew_lsm_fentry_parse_param, struct fs_context *fc, struct fs_parameter *param)
{
	ew_hook_parse_param_entry(param);
	return 0;
}

SEC("fexit/cgroup1_parse_param")
int BPF_PROG(ew_lsm_fexit_parse_param, struct fs_context *fc, struct fs_parameter *param, int ret)
{
	ew_hook_parse_param_exit(ret);
	return 0;
}

/* Attached under --enforce only: refuses writes through descriptors whose open it did not see. */
SEC("lsm/file_permission")
int BPF_PROG(ew_lsm_file_permission, struct file *file, int mask, int ret)
{
	if (ret)
		return ret;
	return ew_hook_file_permission(file, mask);
}

/* Attached under --enforce only: refuses a release_agent mount option from outside the host. */
SEC("lsm/fs_context_parse_param")
int BPF_PROG(ew_lsm_fs_context_parse_param, struct fs_context *fc, struct fs_parameter *param, int ret)
{
	if (ret)
		return ret;
	return ew_hook_fs_param(fc, param);
}
