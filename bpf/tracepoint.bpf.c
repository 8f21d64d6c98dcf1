// SPDX-License-Identifier: GPL-2.0
/* Tracepoint backend: for kernels without kprobes, fentry or BPF LSM. One program on the raw syscall-exit
 * tracepoint sees every open, rename, write and mount (native and 32-bit) after the kernel handled it, and one on
 * io_uring completions sees opens and writes that never pass through a syscall. */
#include "tracepoint.h"
/* No hook on the option parser here: a mount(2)'s release_agent is reported from the hierarchy's state. */
#define EW_MOUNT_FROM_STATE
#include "lifecycle.h"

char LICENSE[] SEC("license") = "GPL";

#define FFS_MASK (~3UL)
#define IORING_FILE_INDEX_ALLOC (~0U)

static __always_inline void renamed(struct task_struct *task, struct ew_syscall *sc, long ret)
{
	/* kernfs refuses every rename onto the real release_agent (and cross-filesystem renames fail), so a rename
	 * that succeeded never replaced it: in the strict mode only refused attempts can be about the agent. */
	if (ret == 0 && !any_fs)
		return;

	__u32 zero = 0;
	struct ew_record *r = bpf_map_lookup_elem(&ew_record_scratch, &zero);
	if (!r)
		return;
	struct dentry *dir;
	__u32 facts = sc->facts;
	if (ew_rename_names(r, task, sc, &dir, &facts) < 0)
		return;
	/* A plain name: its parent is the directory itself, so the kernel can tell whether it is the root of a
	 * cgroup v1 hierarchy. Names with a directory part are resolved in user space. */
	if (dir) {
		struct super_block *sb = BPF_CORE_READ(dir, d_sb);
		facts |= EW_FACT_DIR_RESOLVED;
		if (BPF_CORE_READ(sb, s_magic) == CGROUP_SUPER_MAGIC && BPF_CORE_READ(sb, s_root) == dir)
			facts |= EW_FACT_CGROUP1_AGENT;
		else if (!any_fs)
			return;
	}
	ew_record_head(r, EW_KIND_INODE_RENAME, EW_SOURCE_SYSCALL, ret, sc->nr, facts);
	ew_emit(r);
}

/* Linux AIO: io_submit(ctx, nr, iocbpp) returns how many iocbs it took; a write to kernfs completes during the
 * call. At most EW_AIO_MAX iocbs per call are looked at, and the first write to a cgroup file is reported (after
 * the loop: reporting inside its callback nests too deep for the 6.1 verifier's 512-byte stack of a call chain);
 * the rest still meet the helper exec's judgement. */
#define EW_AIO_MAX 64
#define EW_IOCB_CMD_PWRITE 1
#define EW_IOCB_CMD_PWRITEV 8

/* The fields of struct iocb (include/uapi/linux/aio_abi.h) read here: the same on every architecture. */
struct ew_iocb_head {
	__u64 aio_data;
	__u32 aio_key;
	__u32 aio_rw_flags;
	__u16 aio_lio_opcode;
	__s16 aio_reqprio;
	__u32 aio_fildes;
};

struct ew_aio_scan {
	const void *iocbpp; /* user array of iocb pointers (32-bit ones for an ia32 caller) */
	struct file *file;  /* the first file written on a cgroup file system */
	__u32 n;
	__u32 compat;
};

static long ew_aio_step(__u64 i, void *data)
{
	struct ew_aio_scan *scan = data;
	if (i >= scan->n)
		return 1;
	__u64 iocb = 0;
	if (scan->compat)
		bpf_probe_read_user(&iocb, 4, scan->iocbpp + i * 4);
	else
		bpf_probe_read_user(&iocb, 8, scan->iocbpp + i * 8);
	struct ew_iocb_head head = {};
	if (bpf_probe_read_user(&head, sizeof(head), (void *)iocb))
		return 0;
	if (head.aio_lio_opcode != EW_IOCB_CMD_PWRITE && head.aio_lio_opcode != EW_IOCB_CMD_PWRITEV)
		return 0;
	struct file *file = ew_fd_file((struct task_struct *)bpf_get_current_task(), (int)head.aio_fildes);
	if (file && BPF_CORE_READ(file, f_path.dentry, d_sb, s_magic) == CGROUP_SUPER_MAGIC) {
		scan->file = file;
		return 1;
	}
	return 0;
}
EW_LOOP_STEP(ew_aio_step)

/* ew_open_reads_only: the flags of an open(2), openat(2) or open_by_handle_at(2) ask for no write access (the
 * kernel's own test, OPEN_FMODE), so the file it opened is not writable through this descriptor: most opens of the
 * machine leave here, on the registers alone, before the descriptor's file is looked up. creat(2) always writes;
 * openat2's flags are in user memory: those take the file's own f_mode test. */
static __always_inline int ew_open_reads_only(struct pt_regs *regs, long nr, int compat)
{
	unsigned long flags;

	if (nr == (compat ? NR32_OPEN : NR_OPEN))
		flags = EW_BTF_ARG1(regs, compat);
	else if (nr == (compat ? NR32_OPENAT : NR_OPENAT) ||
		 nr == (compat ? NR32_OPEN_BY_HANDLE_AT : NR_OPEN_BY_HANDLE_AT))
		flags = EW_BTF_ARG2(regs);
	else
		return 0;
	return !((flags + 1) & EW_FMODE_WRITE);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(ew_sys_exit, struct pt_regs *regs, long ret)
{
	/* Direct loads through the BTF-typed arguments: far cheaper than bpf_probe_read_kernel on a path that runs
	 * at every syscall exit of the machine. */
	long nr = EW_BTF_SYSCALL_NR(regs);
	if (!ew_nr_watched_any(nr))
		return 0; /* the hot path: every unrelated syscall leaves here */

	struct task_struct *task = ew_current_task();
#ifdef EW_LEGACY
	int compat = ew_task_compat(task); /* no BTF-typed task there */
#else
	int compat = EW_BTF_TASK_COMPAT(task);
#endif
	enum ew_op op = compat ? compat_op(nr) : native_op(nr);
	struct ew_syscall sc;

	switch (op) {
	case EW_OP_OPEN:
	case EW_OP_OPEN_AT:
	case EW_OP_OPEN_BY_HANDLE: {
		if (ret < 0 || ew_open_reads_only(regs, nr, compat))
			return 0;
		struct file *file = ew_fd_file_btf(task, (int)ret);
		if (!file)
			return 0;
		struct ew_record *r = ew_open_begin(file, EW_SOURCE_SYSCALL, ret);
		if (!r)
			return 0;
		ew_syscall_of(task, regs, &sc);
		ew_open_syscall(r, &sc, 1);
		ew_open_finish(r, file, 0);
		return 0;
	}
	case EW_OP_WRITE:
	case EW_OP_WRITE_FD2: {
		/* Writes are the hottest calls here: the descriptor comes straight from the registers. */
		int fd = op == EW_OP_WRITE ? EW_BTF_ARG0(regs, compat) : EW_BTF_ARG2(regs);
		struct file *file = ew_fd_file_btf(task, fd);
		if (file)
			ew_file_written(file, EW_SOURCE_SYSCALL, ret, nr, compat ? EW_FACT_COMPAT_SYSCALL : 0);
		return 0;
	}
	case EW_OP_RENAME:
	case EW_OP_RENAME_AT:
		ew_syscall_of(task, regs, &sc);
		renamed(task, &sc, ret);
		return 0;
	case EW_OP_MOUNT:
	case EW_OP_FSCONFIG:
		ew_syscall_of(task, regs, &sc);
		ew_mount_syscall(&sc, ret);
		return 0;
	case EW_OP_AIO_SUBMIT: {
		if (ret <= 0)
			return 0;
		struct ew_aio_scan scan = {
			.iocbpp = (const void *)EW_BTF_ARG2(regs),
			.n = ret < EW_AIO_MAX ? ret : EW_AIO_MAX,
			.compat = compat != 0,
		};
		EW_LOOP(EW_AIO_MAX, ew_aio_step, &scan);
		struct file *file = scan.file; /* a local: the loop wrote it through a pointer */
		if (file)
			ew_file_written(file, EW_SOURCE_SYSCALL, 0, nr, compat ? EW_FACT_COMPAT_SYSCALL : 0);
		return 0;
	}
	default:
		return 0;
	}
}

/* Since 6.12 fixed files are io_rsrc_node pointers in file_table.data; before, an array of io_fixed_file
 * (vmlinux.h's layout). */
struct io_rsrc_node___new {
	unsigned long file_ptr;
} __attribute__((preserve_access_index));

struct io_rsrc_data___new {
	struct io_rsrc_node___new **nodes;
	unsigned int nr;
	unsigned int unused_pad; /* never read: explicit padding for -Wpadded */
} __attribute__((preserve_access_index));

struct io_file_table___new {
	struct io_rsrc_data___new data;
} __attribute__((preserve_access_index));

struct io_ring_ctx___new {
	struct io_file_table___new file_table;
} __attribute__((preserve_access_index));

static __always_inline struct file *io_fixed_file(struct io_ring_ctx *ctx, __u32 index)
{
	struct io_ring_ctx___new *ctx_new = (void *)ctx;
	unsigned long ptr = 0;

	if (bpf_core_field_exists(ctx_new->file_table.data)) {
		struct io_rsrc_node___new **nodes = BPF_CORE_READ(ctx_new, file_table.data.nodes);
		struct io_rsrc_node___new *node = NULL;
		if (index >= BPF_CORE_READ(ctx_new, file_table.data.nr))
			return NULL;
		bpf_probe_read_kernel(&node, sizeof(node), &nodes[index]);
		ptr = BPF_CORE_READ(node, file_ptr);
	} else {
		struct io_fixed_file *files = BPF_CORE_READ(ctx, file_table.files);
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

	/* req->file is the file written (for a splice, the output: struct io_splice's file_out overlays it). */
	if (opcode == bpf_core_enum_value(enum io_uring_op, IORING_OP_WRITE) ||
	    opcode == bpf_core_enum_value(enum io_uring_op, IORING_OP_WRITEV) ||
	    opcode == bpf_core_enum_value(enum io_uring_op, IORING_OP_WRITE_FIXED) ||
	    opcode == bpf_core_enum_value(enum io_uring_op, IORING_OP_SPLICE)) {
		struct file *file = BPF_CORE_READ(req, file);
		if (file)
			ew_file_written(file, EW_SOURCE_IO_URING, BPF_CORE_READ(req, cqe.res), opcode, 0);
		return 0;
	}
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
	/* The request's flags are gone by now: io_uring opens report file->f_flags only. */
	struct ew_record *r = ew_open_begin(file, EW_SOURCE_IO_URING, res);
	if (!r)
		return 0;
	r->syscall_nr = opcode;
	ew_open_finish(r, file, 0);
	return 0;
}
