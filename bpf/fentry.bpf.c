// SPDX-License-Identifier: GPL-2.0
/* fentry backend: BPF trampolines at the entry of the security hooks. Under --enforce the same hooks are taken
 * with fmod_ret instead, which may return an error in the hook's place: the kernel allows that for every
 * security_* function, so this backend refuses as the lsm one does, without the bpf LSM being active. */
#include "hooks.h"
#include "lifecycle.h"

char LICENSE[] SEC("license") = "GPL";

/* Attached with --any-fs only (and not under --enforce, where ew_fmodret_file_open does it); otherwise
 * ew_fentry_cgroup_file_open sees the opens. */
SEC("fentry/security_file_open")
int BPF_PROG(ew_fentry_file_open, struct file *file)
{
	if (ew_btf_open_may_matter(file))
		ew_hook_file_open(file, 0);
	return 0;
}

SEC("fentry/cgroup_file_open")
int BPF_PROG(ew_fentry_cgroup_file_open, struct kernfs_open_file *of)
{
	ew_hook_cgroup_file_open(of);
	return 0;
}

SEC("fentry/security_inode_rename")
int BPF_PROG(ew_fentry_inode_rename, struct inode *old_dir, struct dentry *old_dentry, struct inode *new_dir,
	     struct dentry *new_dentry, unsigned int flags)
{
	ew_hook_inode_rename(old_dentry, new_dentry, 0);
	return 0;
}

SEC("fmod_ret/security_file_open")
int BPF_PROG(ew_fmodret_file_open, struct file *file, int ret)
{
	if (ret || !ew_btf_open_may_matter(file))
		return ret;
	return ew_hook_file_open(file, 1) == EW_ACTION_DENIED ? -EW_EPERM : 0;
}

SEC("fmod_ret/security_inode_rename")
int BPF_PROG(ew_fmodret_inode_rename, struct inode *old_dir, struct dentry *old_dentry, struct inode *new_dir,
	     struct dentry *new_dentry, unsigned int flags, int ret)
{
	if (ret)
		return ret;
	return ew_hook_inode_rename(old_dentry, new_dentry, 1) == EW_ACTION_DENIED ? -EW_EPERM : 0;
}

SEC("fmod_ret/security_file_permission")
int BPF_PROG(ew_fmodret_file_permission, struct file *file, int mask, int ret)
{
	if (ret)
		return ret;
	return ew_hook_file_permission(file, mask);
}

SEC("fmod_ret/security_fs_context_parse_param")
int BPF_PROG(ew_fmodret_fs_context_parse_param, struct fs_context *fc, struct fs_parameter *param, int ret)
{
	if (ret)
		return ret;
	return ew_hook_fs_param(fc, param);
}

/* Every write to a release_agent ends in this handler: after it, the hierarchy holds the new value. */
SEC("fexit/cgroup_release_agent_write")
int BPF_PROG(ew_fexit_agent_write, struct kernfs_open_file *of, char *buf, size_t nbytes, loff_t off, ssize_t ret)
{
	ew_hook_agent_write(of, ret);
	return 0;
}

SEC("fexit/cgroup_write_notify_on_release")
int BPF_PROG(ew_fexit_notify_write, struct cgroup_subsys_state *css, struct cftype *cft, __u64 val, int ret)
{
	ew_hook_notify_write(css, val, ret);
	return 0;
}

/* The mount option parser: its value at entry, its verdict at exit. */
SEC("fentry/cgroup1_parse_param")
int BPF_PROG(ew_fentry_parse_param, struct fs_context *fc, struct fs_parameter *param)
{
	ew_hook_parse_param_entry(param);
	return 0;
}

SEC("fexit/cgroup1_parse_param")
int BPF_PROG(ew_fexit_parse_param, struct fs_context *fc, struct fs_parameter *param, int ret)
{
	ew_hook_parse_param_exit(ret);
	return 0;
}
