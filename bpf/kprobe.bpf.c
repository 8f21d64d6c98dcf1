// SPDX-License-Identifier: GPL-2.0
/* kprobe backend: for kernels with kprobes but without BPF trampolines. It cannot refuse; --enforce kills. */
#include "hooks.h"

char LICENSE[] SEC("license") = "GPL";

SEC("kprobe/security_file_open")
int BPF_KPROBE(ew_kprobe_file_open, struct file *file)
{
	ew_hook_file_open(file, 0);
	return 0;
}

SEC("kprobe/security_inode_rename")
int BPF_KPROBE(ew_kprobe_inode_rename, struct inode *old_dir, struct dentry *old_dentry, struct inode *new_dir,
	       struct dentry *new_dentry)
{
	ew_hook_inode_rename(old_dentry, new_dentry, 0);
	return 0;
}
