// SPDX-License-Identifier: GPL-2.0
/* Tracepoint backend: for kernels without kprobes, fentry or BPF LSM. One program on the raw syscall-exit
 * tracepoint sees every open and rename (native and 32-bit) after the kernel resolved it, and one on io_uring
 * completions sees opens that never pass through a syscall. */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

/* x86_64 and ia32 syscall numbers of the calls we watch. */
enum {
	NR_OPEN = 2, NR_CREAT = 85, NR_OPENAT = 257, NR_OPEN_BY_HANDLE_AT = 304, NR_OPENAT2 = 437,
	NR_RENAME = 82, NR_RENAMEAT = 264, NR_RENAMEAT2 = 316,
	NR32_OPEN = 5, NR32_CREAT = 8, NR32_OPENAT = 295, NR32_OPEN_BY_HANDLE_AT = 342, NR32_OPENAT2 = 437,
	NR32_RENAME = 38, NR32_RENAMEAT = 302, NR32_RENAMEAT2 = 353,
};

#define X32_SYSCALL_BIT 0x40000000
#define FFS_MASK (~3UL)
#define IORING_FILE_INDEX_ALLOC (~0U)

enum ew_op { EW_OP_NONE, EW_OP_OPEN, EW_OP_OPEN_AT, EW_OP_OPEN_BY_HANDLE, EW_OP_RENAME, EW_OP_RENAME_AT };

static __always_inline enum ew_op native_op(long nr)
{
	switch (nr) {
	case NR_OPEN: case NR_CREAT: return EW_OP_OPEN;
	case NR_OPENAT: case NR_OPENAT2: return EW_OP_OPEN_AT;
	case NR_OPEN_BY_HANDLE_AT: return EW_OP_OPEN_BY_HANDLE;
	case NR_RENAME: return EW_OP_RENAME;
	case NR_RENAMEAT: case NR_RENAMEAT2: return EW_OP_RENAME_AT;
	}
	return EW_OP_NONE;
}

static __always_inline enum ew_op compat_op(long nr)
{
	switch (nr) {
	case NR32_OPEN: case NR32_CREAT: return EW_OP_OPEN;
	case NR32_OPENAT: case NR32_OPENAT2: return EW_OP_OPEN_AT;
	case NR32_OPEN_BY_HANDLE_AT: return EW_OP_OPEN_BY_HANDLE;
	case NR32_RENAME: return EW_OP_RENAME;
	case NR32_RENAMEAT: case NR32_RENAMEAT2: return EW_OP_RENAME_AT;
	}
	return EW_OP_NONE;
}

/* Syscall arguments are still in the saved user registers at exit: the kernel only overwrites ax. */
static __always_inline unsigned long sys_arg(struct pt_regs *regs, int compat, int i)
{
	if (compat) {
		switch (i) {
		case 0: return BPF_CORE_READ(regs, bx);
		case 1: return BPF_CORE_READ(regs, cx);
		case 2: return BPF_CORE_READ(regs, dx);
		default: return BPF_CORE_READ(regs, si);
		}
	}
	switch (i) {
	case 0: return BPF_CORE_READ(regs, di);
	case 1: return BPF_CORE_READ(regs, si);
	case 2: return BPF_CORE_READ(regs, dx);
	default: return BPF_CORE_READ(regs, r10);
	}
}

/* dir_path writes the directory a relative name given with dfd starts from. Returns its dentry. */
static __always_inline struct dentry *dir_path(struct task_struct *task, int dfd, char *dst, __u32 *facts)
{
	struct dentry *dentry;
	struct vfsmount *mnt;

	if (dfd == EW_AT_FDCWD) {
		struct fs_struct *fs = BPF_CORE_READ(task, fs);
		dentry = BPF_CORE_READ(fs, pwd.dentry);
		mnt = BPF_CORE_READ(fs, pwd.mnt);
	} else {
		struct file *file = ew_fd_file(task, dfd);
		if (!file)
			return NULL;
		dentry = BPF_CORE_READ(file, f_path.dentry);
		mnt = BPF_CORE_READ(file, f_path.mnt);
	}
	ew_path_write(dentry, mnt, dst, facts);
	return dentry;
}

/* agent_name_at returns the offset at which the final component "release_agent" starts in the user string s
 * of length n (with its NUL), or -1 when the final component is another name. Trailing slashes are ignored. */
static __always_inline int agent_name_at(const char *s, int n)
{
	const char want[] = EW_AGENT_NAME;
	int end = n - 2;

	for (int k = 0; k < 4; k++)
		if (end > 0 && s[end & (EW_PATH_MAX - 1)] == '/')
			end--;
	int start = end - (EW_AGENT_LEN - 1);
	if (start < 0)
		return -1;
	for (int i = 0; i < EW_AGENT_LEN; i++)
		if (s[(start + i) & (EW_PATH_MAX - 1)] != want[i])
			return -1;
	if (start > 0 && s[(start - 1) & (EW_PATH_MAX - 1)] != '/')
		return -1;
	return start;
}

static __always_inline void renamed(struct pt_regs *regs, int compat, enum ew_op op, long nr, long ret, __u32 facts)
{
	int base = op == EW_OP_RENAME_AT ? 1 : 0;
	int old_dfd = op == EW_OP_RENAME_AT ? (int)sys_arg(regs, compat, 0) : EW_AT_FDCWD;
	int new_dfd = op == EW_OP_RENAME_AT ? (int)sys_arg(regs, compat, 2) : EW_AT_FDCWD;
	const char *old_name = (const char *)sys_arg(regs, compat, base);
	const char *new_name = (const char *)sys_arg(regs, compat, op == EW_OP_RENAME_AT ? 3 : 1);

	/* kernfs refuses every rename onto the real release_agent (and cross-filesystem renames fail), so a rename
	 * that succeeded never replaced it: in the strict mode only refused attempts can be about the agent. */
	if (ret == 0 && !any_fs)
		return;

	__u32 zero = 0;
	struct ew_record *r = bpf_map_lookup_elem(&ew_record_scratch, &zero);
	if (!r)
		return;
	int n = bpf_probe_read_user_str(r->arg_path, sizeof(r->arg_path), new_name);
	if (n <= 0)
		return;
	int start = agent_name_at(r->arg_path, n);
	if (start < 0)
		return;

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	r->path[0] = 0;
	r->base_path[0] = 0;
	if (r->arg_path[0] != '/') {
		struct dentry *dir = dir_path(task, new_dfd, r->path, &facts);
		/* A plain name: its parent is the directory itself, so the kernel can tell whether it is the
		 * root of a cgroup v1 hierarchy. Names with a directory part are resolved in user space. */
		if (start == 0 && dir) {
			struct super_block *sb = BPF_CORE_READ(dir, d_sb);
			facts |= EW_FACT_DIR_RESOLVED;
			if (BPF_CORE_READ(sb, s_magic) == CGROUP_SUPER_MAGIC && BPF_CORE_READ(sb, s_root) == dir)
				facts |= EW_FACT_CGROUP1_AGENT;
			else if (!any_fs)
				return;
		}
	}
	bpf_probe_read_user_str(r->arg_path2, sizeof(r->arg_path2), old_name);
	if (r->arg_path2[0] != '/')
		dir_path(task, old_dfd, r->base_path, &facts);

	ew_record_head(r, EW_KIND_INODE_RENAME, EW_SOURCE_SYSCALL, ret, nr, facts);
	ew_emit(r);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(ew_sys_exit, struct pt_regs *regs, long ret)
{
	/* Direct loads through the BTF-typed arguments: far cheaper than bpf_probe_read_kernel on a path that runs
	 * at every syscall exit of the machine. */
	long nr = regs->orig_ax & ~X32_SYSCALL_BIT;
	enum ew_op op = native_op(nr);
	if (op == EW_OP_NONE && compat_op(nr) == EW_OP_NONE)
		return 0; /* the hot path: every unrelated syscall leaves here */

	struct task_struct *task = bpf_get_current_task_btf();
	int compat = task->thread_info.status & EW_TS_COMPAT;
	__u32 facts = 0;
	if (compat) {
		op = compat_op(nr);
		facts |= EW_FACT_COMPAT_SYSCALL;
	}

	switch (op) {
	case EW_OP_OPEN:
	case EW_OP_OPEN_AT:
	case EW_OP_OPEN_BY_HANDLE: {
		if (ret < 0)
			return 0;
		struct file *file = ew_fd_file_btf(task, (int)ret);
		if (!file)
			return 0;
		const char *user_path = NULL;
		if (op == EW_OP_OPEN)
			user_path = (const char *)sys_arg(regs, compat, 0);
		else if (op == EW_OP_OPEN_AT)
			user_path = (const char *)sys_arg(regs, compat, 1);
		ew_file_opened(file, EW_SOURCE_SYSCALL, ret, nr, facts, user_path);
		return 0;
	}
	case EW_OP_RENAME:
	case EW_OP_RENAME_AT:
		renamed(regs, compat, op, nr, ret, facts);
		return 0;
	default:
		return 0;
	}
}

/* Kernels before 6.12 keep fixed files in an array of io_fixed_file. */
struct io_fixed_file___old {
	unsigned long file_ptr;
} __attribute__((preserve_access_index));

struct io_file_table___old {
	struct io_fixed_file___old *files;
} __attribute__((preserve_access_index));

struct io_ring_ctx___old {
	struct io_file_table___old file_table;
} __attribute__((preserve_access_index));

static __always_inline struct file *io_fixed_file(struct io_ring_ctx *ctx, __u32 index)
{
	unsigned long ptr = 0;

	if (bpf_core_field_exists(ctx->file_table.data)) {
		struct io_rsrc_node **nodes = BPF_CORE_READ(ctx, file_table.data.nodes);
		struct io_rsrc_node *node = NULL;
		if (index >= BPF_CORE_READ(ctx, file_table.data.nr))
			return NULL;
		bpf_probe_read_kernel(&node, sizeof(node), &nodes[index]);
		ptr = BPF_CORE_READ(node, file_ptr);
	} else {
		struct io_ring_ctx___old *old = (void *)ctx;
		struct io_fixed_file___old *files = BPF_CORE_READ(old, file_table.files);
		bpf_probe_read_kernel(&ptr, sizeof(ptr), &files[index & 0xffff]);
	}
	return (struct file *)(ptr & FFS_MASK);
}

/* io_uring completes IORING_OP_OPENAT/OPENAT2 without any open syscall. The request is the second argument in
 * every version of this tracepoint, and its result is already in req->cqe.res. */
SEC("tp_btf/io_uring_complete")
int ew_io_uring_complete(__u64 *ctx)
{
	struct io_kiocb *req = (struct io_kiocb *)ctx[1];
	__u8 opcode = BPF_CORE_READ(req, opcode);

	if (opcode != bpf_core_enum_value(enum io_uring_op, IORING_OP_OPENAT) &&
	    opcode != bpf_core_enum_value(enum io_uring_op, IORING_OP_OPENAT2))
		return 0;
	int res = BPF_CORE_READ(req, cqe.res);
	if (res < 0)
		return 0;

	struct io_open *open = (void *)req + bpf_core_field_offset(struct io_kiocb, cmd);
	__u32 slot = BPF_CORE_READ(open, file_slot);
	struct file *file;
	if (slot == 0)
		file = ew_fd_file((struct task_struct *)bpf_get_current_task(), res);
	else
		file = io_fixed_file(BPF_CORE_READ(req, ctx), slot == IORING_FILE_INDEX_ALLOC ? res : slot - 1);
	if (!file)
		return 0;
	ew_file_opened(file, EW_SOURCE_IO_URING, res, opcode, 0, NULL);
	return 0;
}
