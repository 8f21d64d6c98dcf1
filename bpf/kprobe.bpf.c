// SPDX-License-Identifier: GPL-2.0
/* kprobe backend: for kernels with kprobes but without BPF trampolines. It cannot refuse; --enforce kills. */
#include "hooks.h"
#include "lifecycle.h"

char LICENSE[] SEC("license") = "GPL";

/* Attached with --any-fs only (kprobes cannot refuse: --enforce kills from ew_kprobe_cgroup_file_open). */
SEC("kprobe/security_file_open")
int BPF_KPROBE(ew_kprobe_file_open, struct file *file)
{
	ew_hook_file_open(file, 0);
	return 0;
}

SEC("kprobe/cgroup_file_open")
int BPF_KPROBE(ew_kprobe_cgroup_file_open, struct kernfs_open_file *of)
{
	ew_hook_cgroup_file_open(of);
	return 0;
}

SEC("kprobe/security_inode_rename")
int BPF_KPROBE(ew_kprobe_inode_rename, struct inode *old_dir, struct dentry *old_dentry, struct inode *new_dir,
	       struct dentry *new_dentry)
{
	ew_hook_inode_rename(old_dentry, new_dentry, 0);
	return 0;
}

/* kretprobes see only the return value: the entry probe keeps the handler's argument per thread. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH); /* an exit that never fires (a missed kretprobe) cannot fill it */
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} ew_agent_write_args SEC(".maps");

SEC("kprobe/cgroup_release_agent_write")
int BPF_KPROBE(ew_kprobe_agent_write, struct kernfs_open_file *of)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 arg = (__u64)of;
	bpf_map_update_elem(&ew_agent_write_args, &tid, &arg, BPF_ANY);
	return 0;
}

SEC("kretprobe/cgroup_release_agent_write")
int BPF_KRETPROBE(ew_kretprobe_agent_write, long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *arg = bpf_map_lookup_elem(&ew_agent_write_args, &tid);
	if (!arg)
		return 0;
	struct kernfs_open_file *of = (struct kernfs_open_file *)*arg;
	bpf_map_delete_elem(&ew_agent_write_args, &tid);
	ew_hook_agent_write(of, ret);
	return 0;
}

struct ew_notify_args {
	__u64 css;
	__u64 val;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH); /* an exit that never fires (a missed kretprobe) cannot fill it */
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct ew_notify_args);
} ew_notify_write_args SEC(".maps");

SEC("kprobe/cgroup_write_notify_on_release")
int BPF_KPROBE(ew_kprobe_notify_write, struct cgroup_subsys_state *css, struct cftype *cft, __u64 val)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct ew_notify_args args = {.css = (__u64)css, .val = val};
	bpf_map_update_elem(&ew_notify_write_args, &tid, &args, BPF_ANY);
	return 0;
}

SEC("kretprobe/cgroup_write_notify_on_release")
int BPF_KRETPROBE(ew_kretprobe_notify_write, long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct ew_notify_args *args = bpf_map_lookup_elem(&ew_notify_write_args, &tid);
	if (!args)
		return 0;
	struct cgroup_subsys_state *css = (struct cgroup_subsys_state *)args->css;
	__u64 val = args->val;
	bpf_map_delete_elem(&ew_notify_write_args, &tid);
	ew_hook_notify_write(css, val, (int)ret);
	return 0;
}

/* The mount option parser: its value at entry, its verdict at exit. */
SEC("kprobe/cgroup1_parse_param")
int BPF_KPROBE(ew_kprobe_parse_param, struct fs_context *fc, struct fs_parameter *param)
{
	ew_hook_parse_param_entry(param);
	return 0;
}

SEC("kretprobe/cgroup1_parse_param")
int BPF_KRETPROBE(ew_kretprobe_parse_param, long ret)
{
	ew_hook_parse_param_exit((int)ret);
	return 0;
}
