// SPDX-License-Identifier: GPL-2.0
/* Tracepoint backend: for kernels without kprobes, fentry or BPF LSM. One program on the raw syscall-exit
 * tracepoint sees every open, rename, write and mount (native and 32-bit) after the kernel handled it, and one on
 * io_uring completions (with one on submissions before 5.17) sees opens and writes that never pass through a
 * syscall. */
#include "tracepoint.h"
/* No hook on the option parser here: a mount(2)'s release_agent is reported from the hierarchy's state. */
#define EW_MOUNT_FROM_STATE
#include "lifecycle.h"

char LICENSE[] SEC("license") = "GPL";

/* A fixed file's pointer carries flags in its low bits: two in newer kernels (FFS_NOWAIT, FFS_ISREG), three in
 * 5.15's io_uring (FFS_ASYNC_READ, FFS_ASYNC_WRITE, FFS_ISREG); a struct file is aligned far beyond. */
#define FFS_MASK (~7UL)
#define IORING_FILE_INDEX_ALLOC (~0U)
#define EW_EEXIST 17

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

/* io_uring's opcodes are ABI (include/uapi/linux/io_uring.h): numbers that never move. Older kernels (5.10's
 * among them) declare them in an anonymous enum, which CO-RE cannot name. */
#define EW_IORING_OP_WRITEV 2
#define EW_IORING_OP_WRITE_FIXED 5
#define EW_IORING_OP_OPENAT 18
#define EW_IORING_OP_WRITE 23
#define EW_IORING_OP_OPENAT2 28
#define EW_IORING_OP_SPLICE 30

static __always_inline int ew_uring_writes(__u8 opcode)
{
	return opcode == EW_IORING_OP_WRITE || opcode == EW_IORING_OP_WRITEV || opcode == EW_IORING_OP_WRITE_FIXED ||
	       opcode == EW_IORING_OP_SPLICE;
}

static __always_inline int ew_uring_opens(__u8 opcode)
{
	return opcode == EW_IORING_OP_OPENAT || opcode == EW_IORING_OP_OPENAT2;
}

/* ew_io_uring_done: request req of ring ring finished with res; open is its struct io_open. io_uring opens and
 * writes pass through no syscall. */
static __always_inline void ew_io_uring_done(struct io_kiocb *req, struct io_ring_ctx *ring, __u8 opcode, int res,
					     struct io_open *open)
{
	/* req->file is the file written (for a splice, the output: struct io_splice's file_out overlays it). */
	if (ew_uring_writes(opcode)) {
		struct file *file = BPF_CORE_READ(req, file);
		if (file)
			ew_file_written(file, EW_SOURCE_IO_URING, res, opcode, 0);
		return;
	}
	if (!ew_uring_opens(opcode) || res < 0)
		return;
	__u32 slot = BPF_CORE_READ(open, file_slot);
	struct file *file;
	if (slot == 0)
		file = ew_fd_file((struct task_struct *)bpf_get_current_task(), res);
	else
		file = io_fixed_file(ring, slot == IORING_FILE_INDEX_ALLOC ? (__u32)res : slot - 1);
	if (!file)
		return;
	/* The request's flags are gone by now: io_uring opens report file->f_flags only. */
	struct ew_record *r = ew_open_begin(file, EW_SOURCE_IO_URING, res);
	if (!r)
		return;
	r->syscall_nr = opcode;
	ew_open_finish(r, file, 0);
}

#ifndef EW_LEGACY
/* Since 5.17 the io_uring_complete tracepoint passes the request (its second argument), and its result is
 * already in req->cqe.res. */
SEC("tp_btf/io_uring_complete")
int ew_io_uring_complete(__u64 *ctx)
{
	struct io_kiocb *req = (struct io_kiocb *)ctx[1];
	__u8 opcode = BPF_CORE_READ(req, opcode);
	if (!ew_uring_writes(opcode) && !ew_uring_opens(opcode))
		return 0;
	ew_io_uring_done(req, BPF_CORE_READ(req, ctx), opcode, BPF_CORE_READ(req, cqe.res),
			 (void *)req + bpf_core_field_offset(struct io_kiocb, cmd));
	return 0;
}
#else
/* Before 5.17 io_uring_complete passes the ring, the request's user_data and its result, not the request; the
 * user_data is the submitter's to choose, so it identifies nothing. The request is found where the kernel
 * completes it (the user space preflight checks that the kernel has these fields: 5.15's io_uring, which
 * Debian's 5.10 carries since 5.10.162):
 * - an io-wq worker completes the request it runs, its io_worker's cur_work (the worker is pf_io_worker). Opens
 *   of cgroup files by their names complete there (kernfs refuses the cached lookup an inline open needs), and so
 *   do writes to them (io_uring punts buffered writes of regular files, and splices, to workers);
 * - any other completion (by the submitter, its task_work or the SQPOLL thread) is of a request in the ring's
 *   batch, submit_state.compl_reqs, posted with this tracepoint each. Those requests are taken down at submission
 *   (io_uring_submit_sqe passes the request in that io_uring) when they may open a file for writing or write a
 *   cgroup v1 file, and each is reported once, by whoever deletes it from ew_uring_pending; a batch has as many
 *   completions as requests, so finding one per completion finds them all. An open of a cgroup file through a
 *   bind mount of the file (no kernfs name looked up) can complete here. */
struct io_kiocb___v515 {
	struct io_open open;
	__u32 result;
	__u32 unused_pad; /* never read: explicit padding for -Wpadded */
	__u64 user_data;
} __attribute__((preserve_access_index));

#define EW_URING_BATCH 32 /* IO_COMPL_BATCH */

struct io_submit_state___v515 {
	struct io_kiocb *compl_reqs[EW_URING_BATCH];
	unsigned int compl_nr;
	unsigned int unused_pad; /* never read: explicit padding for -Wpadded */
} __attribute__((preserve_access_index));

struct io_ring_ctx___v515 {
	struct io_submit_state___v515 submit_state;
} __attribute__((preserve_access_index));

struct task_struct___v515 {
	void *pf_io_worker;
} __attribute__((preserve_access_index));

/* Requests that may open or write a cgroup file, from submission to completion: request -> ring. A request
 * that completes where it is not looked for (cancelled before it ran, completed by the ring's exit work; not a
 * failed link: ew_io_uring_fail_link) stays until its memory carries another request of a ring. Full (a flood
 * of requests in flight, or of such leftovers), a request is counted, as EW_COUNTER_UNTRACKED: completed
 * inline, it would be missed (one completed by a worker is found without this table). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} ew_uring_pending SEC(".maps");

/* How many requests ew_uring_pending holds: while none, a completion outside io-wq workers leaves after two
 * loads. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} ew_uring_pending_count SEC(".maps");

/* ew_uring_followed: request req may open a file for writing, or write a cgroup v1 file. At submission its file
 * and its open's flags (a kernel copy) are set. */
static __always_inline int ew_uring_followed(struct io_kiocb *req, __u8 opcode)
{
	if (ew_uring_writes(opcode)) {
		struct file *file = BPF_CORE_READ(req, file);
		return file && BPF_CORE_READ(file, f_path.dentry, d_sb, s_magic) == CGROUP_SUPER_MAGIC;
	}
	if (ew_uring_opens(opcode)) {
		struct io_kiocb___v515 *old = (void *)req;
		__u64 flags = BPF_CORE_READ(old, open.how.flags);
		return ((flags + 1) & EW_FMODE_WRITE) != 0; /* OPEN_FMODE: the file would be open for writing */
	}
	return 0;
}

SEC("tp_btf/io_uring_submit_sqe")
int ew_io_uring_submit_sqe(__u64 *ctx)
{
	__u64 ring = ctx[0], req = ctx[1];
	__u32 zero = 0;
	__u64 *count = bpf_map_lookup_elem(&ew_uring_pending_count, &zero);
	if (!count)
		return 0;
	if (!ew_uring_followed((struct io_kiocb *)req, (__u8)ctx[2])) {
		/* The memory of a request that completed unseen now carries this one. */
		if (*count && bpf_map_delete_elem(&ew_uring_pending, &req) == 0)
			__sync_fetch_and_add(count, -1);
		return 0;
	}
	long err = bpf_map_update_elem(&ew_uring_pending, &req, &ring, BPF_NOEXIST);
	if (err == 0)
		__sync_fetch_and_add(count, 1);
	else if (err != -EW_EEXIST)
		ew_count(EW_COUNTER_UNTRACKED);
	return 0;
}

/* A request failed as a link (the one before it failed, or the ring's teardown cancelled the chain) completes
 * with an error, posted where it is not looked for: it never ran, and is forgotten here. */
SEC("tp_btf/io_uring_fail_link")
int ew_io_uring_fail_link(__u64 *ctx)
{
	__u64 link = ctx[1];
	__u32 zero = 0;
	__u64 *count = bpf_map_lookup_elem(&ew_uring_pending_count, &zero);
	if (count && *count && bpf_map_delete_elem(&ew_uring_pending, &link) == 0)
		__sync_fetch_and_add(count, -1);
	return 0;
}

struct ew_uring_scan {
	__u64 ring;
	__u64 task;  /* the current task */
	__u64 found; /* a request taken down, now deleted from ew_uring_pending */
	__u64 n;     /* requests in the batch */
};

static long ew_uring_scan_step(__u64 i, void *data)
{
	struct ew_uring_scan *scan = data;
	if (i >= scan->n)
		return 1;
	__u64 req = 0;
	bpf_probe_read_kernel(&req, sizeof(req),
			      (void *)scan->ring + bpf_core_field_offset(struct io_ring_ctx___v515, submit_state.compl_reqs) +
				      i * sizeof(req));
	/* Only the submitter (its task_work, or the SQPOLL thread that submitted) flushes its batch: another task
	 * posting a completion on the ring (one sharing it, the ring's exit work) would read the batch unlocked and
	 * resolve the open's descriptor in its own table. */
	if (!req || (__u64)BPF_CORE_READ((struct io_kiocb *)req, task) != scan->task)
		return 0;
	if (bpf_map_delete_elem(&ew_uring_pending, &req) == 0) {
		scan->found = req;
		return 1;
	}
	return 0;
}
EW_LOOP_STEP(ew_uring_scan_step)

SEC("tp_btf/io_uring_complete")
int ew_io_uring_complete(__u64 *ctx)
{
	__u64 ring = ctx[0], req = 0;
	int res = (int)ctx[2];
	__u32 zero = 0;
	__u64 *count = bpf_map_lookup_elem(&ew_uring_pending_count, &zero);
	if (!count)
		return 0;
	struct task_struct___v515 *task = (void *)bpf_get_current_task();
	struct io_worker *worker = BPF_CORE_READ(task, pf_io_worker);
	if (worker) {
		/* Found without ew_uring_pending, so no flood of requests in flight hides it. The ring and user_data
		 * tests keep a completion the worker posts for another request from reporting this one. */
		struct io_wq_work *work = BPF_CORE_READ(worker, cur_work);
		if (!work)
			return 0;
		req = (__u64)work - bpf_core_field_offset(struct io_kiocb, work);
		struct io_kiocb *r = (struct io_kiocb *)req;
		__u8 opcode = BPF_CORE_READ(r, opcode);
		if (!ew_uring_writes(opcode) && !ew_uring_opens(opcode))
			return 0;
		if ((__u64)BPF_CORE_READ(r, ctx) != ring || BPF_CORE_READ((struct io_kiocb___v515 *)r, user_data) != ctx[1])
			return 0;
		if (*count && bpf_map_delete_elem(&ew_uring_pending, &req) == 0)
			__sync_fetch_and_add(count, -1);
		ew_io_uring_done(r, (struct io_ring_ctx *)ring, opcode, res,
				 (void *)req + bpf_core_field_offset(struct io_kiocb___v515, open));
		return 0;
	}
	if (!*count)
		return 0; /* the hot path: no request taken down at submission is in flight */
	struct io_ring_ctx___v515 *rctx = (void *)ring;
	__u32 n = BPF_CORE_READ(rctx, submit_state.compl_nr);
	struct ew_uring_scan scan = {.ring = ring, .task = (__u64)task, .n = n < EW_URING_BATCH ? n : EW_URING_BATCH};
	EW_LOOP(EW_URING_BATCH, ew_uring_scan_step, &scan);
	req = scan.found;
	if (!req)
		return 0;
	__sync_fetch_and_add(count, -1);
	struct io_kiocb *r = (struct io_kiocb *)req;
	ew_io_uring_done(r, (struct io_ring_ctx *)ring, BPF_CORE_READ(r, opcode),
			 (int)BPF_CORE_READ((struct io_kiocb___v515 *)req, result),
			 (void *)req + bpf_core_field_offset(struct io_kiocb___v515, open));
	return 0;
}
#endif
