/* SPDX-License-Identifier: GPL-2.0 */
/* Which syscall a task is in and what it passed: the syscall numbers we watch (x86_64 and ia32; arm64 and
 * AArch32), their arguments from the saved user registers, and the path strings of opens and renames. Shared by
 * the syscall tracepoint (which gets the registers as an argument) and the hook backends (bpf_task_pt_regs). */
#ifndef EW_SYSCALL_H
#define EW_SYSCALL_H

#include "filter.h"
#include "path.h"

#define EW_AT_FDCWD -100

/* The syscall numbers we watch: the native table ("NR_") and the compat one ("NR32_": ia32 on x86, AArch32 on
 * arm64). A call a table lacks gets a negative number no syscall has, so the switches below keep one shape. */
#if defined(__TARGET_ARCH_x86)
enum {
	NR_OPEN = 2, NR_CREAT = 85, NR_OPENAT = 257, NR_OPEN_BY_HANDLE_AT = 304, NR_OPENAT2 = 437,
	NR_RENAME = 82, NR_RENAMEAT = 264, NR_RENAMEAT2 = 316,
	NR32_OPEN = 5, NR32_CREAT = 8, NR32_OPENAT = 295, NR32_OPEN_BY_HANDLE_AT = 342, NR32_OPENAT2 = 437,
	NR32_RENAME = 38, NR32_RENAMEAT = 302, NR32_RENAMEAT2 = 353,
	NR_WRITE = 1, NR_PWRITE64 = 18, NR_WRITEV = 20, NR_SENDFILE = 40, NR_SPLICE = 275, NR_PWRITEV = 296,
	NR_COPY_FILE_RANGE = 326, NR_PWRITEV2 = 328,
	NR32_WRITE = 4, NR32_WRITEV = 146, NR32_PWRITE64 = 181, NR32_SENDFILE = 187, NR32_SENDFILE64 = 239,
	NR32_SPLICE = 313, NR32_PWRITEV = 334, NR32_COPY_FILE_RANGE = 377, NR32_PWRITEV2 = 379,
	NR_MOUNT = 165, NR_FSCONFIG = 431, NR32_MOUNT = 21,
	NR_IO_SUBMIT = 209, NR32_IO_SUBMIT = 248,
};
#elif defined(__TARGET_ARCH_arm64)
/* arm64's table is asm-generic's: no open, creat or rename. */
enum {
	NR_OPEN = -1000, NR_CREAT = -1001, NR_OPENAT = 56, NR_OPEN_BY_HANDLE_AT = 265, NR_OPENAT2 = 437,
	NR_RENAME = -1002, NR_RENAMEAT = 38, NR_RENAMEAT2 = 276,
	NR32_OPEN = 5, NR32_CREAT = 8, NR32_OPENAT = 322, NR32_OPEN_BY_HANDLE_AT = 371, NR32_OPENAT2 = 437,
	NR32_RENAME = 38, NR32_RENAMEAT = 329, NR32_RENAMEAT2 = 382,
	NR_WRITE = 64, NR_PWRITE64 = 68, NR_WRITEV = 66, NR_SENDFILE = 71, NR_SPLICE = 76, NR_PWRITEV = 70,
	NR_COPY_FILE_RANGE = 285, NR_PWRITEV2 = 287,
	NR32_WRITE = 4, NR32_WRITEV = 146, NR32_PWRITE64 = 181, NR32_SENDFILE = 187, NR32_SENDFILE64 = 239,
	NR32_SPLICE = 340, NR32_PWRITEV = 362, NR32_COPY_FILE_RANGE = 391, NR32_PWRITEV2 = 393,
	NR_MOUNT = 40, NR_FSCONFIG = 431, NR32_MOUNT = 21,
	NR_IO_SUBMIT = 2, NR32_IO_SUBMIT = 246,
};
#endif

#define NR_IO_URING_ENTER 426 /* the same number in every table */
#define EW_PF_IO_WORKER 0x00000010

/* Where the saved user registers keep the syscall's number and arguments, and whether a task is a compat one.
 * The EW_BTF_ forms are direct loads for BTF-typed pointers (the sys_exit tracepoint's hot path); the others
 * read through CO-RE from any pointer. At syscall exit the return value has replaced one register (x86's ax,
 * arm64's x0); the number and the arguments are still where these read them. */
#if defined(__TARGET_ARCH_x86)
#define X32_SYSCALL_BIT 0x40000000
#define EW_TS_COMPAT 0x0002
#define EW_BTF_SYSCALL_NR(regs) ((long)((regs)->orig_ax & ~X32_SYSCALL_BIT))
#define EW_BTF_ARG0(regs, compat) ((compat) ? (regs)->bx : (regs)->di)
#define EW_BTF_ARG1(regs, compat) ((compat) ? (regs)->cx : (regs)->si)
#define EW_BTF_ARG2(regs) ((regs)->dx) /* both tables: rdx, ia32's edx */
#define EW_BTF_TASK_COMPAT(task) ((task)->thread_info.status & EW_TS_COMPAT)

static __always_inline long ew_regs_syscall_nr(struct pt_regs *regs)
{
	return BPF_CORE_READ(regs, orig_ax) & ~X32_SYSCALL_BIT;
}

static __always_inline int ew_task_compat(struct task_struct *task)
{
	return BPF_CORE_READ(task, thread_info.status) & EW_TS_COMPAT;
}

/* Syscall arguments 0-4. */
static __always_inline unsigned long sys_arg(struct pt_regs *regs, int compat, int i)
{
	if (compat) {
		switch (i) {
		case 0: return BPF_CORE_READ(regs, bx);
		case 1: return BPF_CORE_READ(regs, cx);
		case 2: return BPF_CORE_READ(regs, dx);
		case 3: return BPF_CORE_READ(regs, si);
		default: return BPF_CORE_READ(regs, di);
		}
	}
	switch (i) {
	case 0: return BPF_CORE_READ(regs, di);
	case 1: return BPF_CORE_READ(regs, si);
	case 2: return BPF_CORE_READ(regs, dx);
	case 3: return BPF_CORE_READ(regs, r10);
	default: return BPF_CORE_READ(regs, r8);
	}
}
#elif defined(__TARGET_ARCH_arm64)
/* AArch32 tasks have TIF_32BIT in thread_info.flags. Both tables pass arguments in x0-x5 (r0-r5): x0 holds the
 * return value at exit, orig_x0 the first argument. */
#define EW_TIF_32BIT (1UL << 22)
#define EW_BTF_SYSCALL_NR(regs) ((long)(regs)->syscallno)
#define EW_BTF_ARG0(regs, compat) ((regs)->orig_x0)
#define EW_BTF_ARG1(regs, compat) ((regs)->regs[1])
#define EW_BTF_ARG2(regs) ((regs)->regs[2])
#define EW_BTF_TASK_COMPAT(task) (((task)->thread_info.flags & EW_TIF_32BIT) != 0)

static __always_inline long ew_regs_syscall_nr(struct pt_regs *regs)
{
	return BPF_CORE_READ(regs, syscallno);
}

static __always_inline int ew_task_compat(struct task_struct *task)
{
	return (BPF_CORE_READ(task, thread_info.flags) & EW_TIF_32BIT) != 0;
}

/* Syscall arguments 0-4. */
static __always_inline unsigned long sys_arg(struct pt_regs *regs, int compat, int i)
{
	switch (i) {
	case 0: return BPF_CORE_READ(regs, orig_x0);
	case 1: return BPF_CORE_READ(regs, regs[1]);
	case 2: return BPF_CORE_READ(regs, regs[2]);
	case 3: return BPF_CORE_READ(regs, regs[3]);
	default: return BPF_CORE_READ(regs, regs[4]);
	}
}
#endif

enum ew_op {
	EW_OP_NONE, EW_OP_OPEN, EW_OP_OPEN_AT, EW_OP_OPEN_BY_HANDLE, EW_OP_RENAME, EW_OP_RENAME_AT,
	EW_OP_WRITE,	 /* the written descriptor is argument 0 */
	EW_OP_WRITE_FD2, /* the written descriptor is argument 2 (splice, copy_file_range) */
	EW_OP_MOUNT,
	EW_OP_FSCONFIG,
	EW_OP_AIO_SUBMIT, /* Linux AIO: the written descriptors are in the iocbs */
};

/* The sys_exit tracepoint's first test: is nr a number above, in either table? A bitmap made at compile time, so an
 * unrelated syscall costs one bounded load (the two switches below take about twenty comparisons each). Every
 * number is below EW_NR_BITS in every table; a call a table lacks (negative) sets no bit. */
#define EW_NR_BITS 512
#define EW_NR_BIT(nr, w) ((nr) >= 0 && (nr) / 64 == (w) ? 1ULL << ((nr) & 63) : 0)
#define EW_NR_WORD(w)                                                                                              \
	(EW_NR_BIT(NR_OPEN, w) | EW_NR_BIT(NR_CREAT, w) | EW_NR_BIT(NR_OPENAT, w) | EW_NR_BIT(NR_OPENAT2, w) |   \
	 EW_NR_BIT(NR_OPEN_BY_HANDLE_AT, w) | EW_NR_BIT(NR_RENAME, w) | EW_NR_BIT(NR_RENAMEAT, w) |              \
	 EW_NR_BIT(NR_RENAMEAT2, w) | EW_NR_BIT(NR_WRITE, w) | EW_NR_BIT(NR_PWRITE64, w) |                       \
	 EW_NR_BIT(NR_WRITEV, w) | EW_NR_BIT(NR_SENDFILE, w) | EW_NR_BIT(NR_PWRITEV, w) |                         \
	 EW_NR_BIT(NR_PWRITEV2, w) | EW_NR_BIT(NR_SPLICE, w) | EW_NR_BIT(NR_COPY_FILE_RANGE, w) |                \
	 EW_NR_BIT(NR_MOUNT, w) | EW_NR_BIT(NR_FSCONFIG, w) | EW_NR_BIT(NR_IO_SUBMIT, w) |                        \
	 EW_NR_BIT(NR32_OPEN, w) | EW_NR_BIT(NR32_CREAT, w) | EW_NR_BIT(NR32_OPENAT, w) |                         \
	 EW_NR_BIT(NR32_OPENAT2, w) | EW_NR_BIT(NR32_OPEN_BY_HANDLE_AT, w) | EW_NR_BIT(NR32_RENAME, w) |         \
	 EW_NR_BIT(NR32_RENAMEAT, w) | EW_NR_BIT(NR32_RENAMEAT2, w) | EW_NR_BIT(NR32_WRITE, w) |                  \
	 EW_NR_BIT(NR32_PWRITE64, w) | EW_NR_BIT(NR32_WRITEV, w) | EW_NR_BIT(NR32_SENDFILE, w) |                  \
	 EW_NR_BIT(NR32_SENDFILE64, w) | EW_NR_BIT(NR32_PWRITEV, w) | EW_NR_BIT(NR32_PWRITEV2, w) |               \
	 EW_NR_BIT(NR32_SPLICE, w) | EW_NR_BIT(NR32_COPY_FILE_RANGE, w) | EW_NR_BIT(NR32_MOUNT, w) |              \
	 EW_NR_BIT(NR32_IO_SUBMIT, w))

static const __u64 ew_nr_watched[EW_NR_BITS / 64] = {
	EW_NR_WORD(0), EW_NR_WORD(1), EW_NR_WORD(2), EW_NR_WORD(3),
	EW_NR_WORD(4), EW_NR_WORD(5), EW_NR_WORD(6), EW_NR_WORD(7),
};

static __always_inline int ew_nr_watched_any(long nr)
{
	if ((unsigned long)nr >= EW_NR_BITS)
		return 0;
	return (ew_nr_watched[nr / 64] >> (nr % 64)) & 1;
}

static __always_inline enum ew_op native_op(long nr)
{
	switch (nr) {
	case NR_OPEN: case NR_CREAT: return EW_OP_OPEN;
	case NR_OPENAT: case NR_OPENAT2: return EW_OP_OPEN_AT;
	case NR_OPEN_BY_HANDLE_AT: return EW_OP_OPEN_BY_HANDLE;
	case NR_RENAME: return EW_OP_RENAME;
	case NR_RENAMEAT: case NR_RENAMEAT2: return EW_OP_RENAME_AT;
	case NR_WRITE: case NR_PWRITE64: case NR_WRITEV: case NR_SENDFILE: case NR_PWRITEV: case NR_PWRITEV2:
		return EW_OP_WRITE;
	case NR_SPLICE: case NR_COPY_FILE_RANGE: return EW_OP_WRITE_FD2;
	case NR_MOUNT: return EW_OP_MOUNT;
	case NR_FSCONFIG: return EW_OP_FSCONFIG;
	case NR_IO_SUBMIT: return EW_OP_AIO_SUBMIT;
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
	case NR32_WRITE: case NR32_PWRITE64: case NR32_WRITEV: case NR32_SENDFILE: case NR32_SENDFILE64:
	case NR32_PWRITEV: case NR32_PWRITEV2:
		return EW_OP_WRITE;
	case NR32_SPLICE: case NR32_COPY_FILE_RANGE: return EW_OP_WRITE_FD2;
	case NR32_MOUNT: return EW_OP_MOUNT;
	case NR32_IO_SUBMIT: return EW_OP_AIO_SUBMIT;
	}
	return EW_OP_NONE;
}

/* ew_syscall is the syscall a task is in, as far as escapewatch cares. */
struct ew_syscall {
	struct pt_regs *regs;
	long nr;
	enum ew_op op;
	int compat;
	__u32 source; /* enum ew_source */
	__u32 facts;  /* EW_FACT_COMPAT_SYSCALL */
};

static __always_inline void ew_syscall_of(struct task_struct *task, struct pt_regs *regs, struct ew_syscall *sc)
{
	sc->regs = regs;
	sc->nr = ew_regs_syscall_nr(regs);
	sc->compat = ew_task_compat(task);
	sc->op = sc->compat ? compat_op(sc->nr) : native_op(sc->nr);
	sc->facts = sc->compat ? EW_FACT_COMPAT_SYSCALL : 0;
	/* io_uring runs requests inline in io_uring_enter or in worker threads of the process; either way the
	 * registers are not an open syscall's. */
	if (sc->nr == NR_IO_URING_ENTER || (BPF_CORE_READ(task, flags) & EW_PF_IO_WORKER))
		sc->source = EW_SOURCE_IO_URING;
	else
		sc->source = EW_SOURCE_SYSCALL;
}

/* ew_open_user_path returns the path string an open syscall passed, or NULL (open_by_handle_at, or no open). */
static __always_inline const char *ew_open_user_path(struct ew_syscall *sc)
{
	if (sc->source != EW_SOURCE_SYSCALL)
		return NULL;
	if (sc->op == EW_OP_OPEN)
		return (const char *)sys_arg(sc->regs, sc->compat, 0);
	if (sc->op == EW_OP_OPEN_AT)
		return (const char *)sys_arg(sc->regs, sc->compat, 1);
	return NULL;
}

#define EW_O_CREAT 00000100
#define EW_O_EXCL 00000200
#define EW_O_NOCTTY 00000400
#define EW_O_TRUNC 00001000
#define EW_OPEN_ONLY_FLAGS (EW_O_CREAT | EW_O_EXCL | EW_O_NOCTTY | EW_O_TRUNC)

/* ew_open_only_flags returns the flags the open passed that the kernel drops from file->f_flags once the file is
 * open (O_CREAT, O_EXCL, O_NOCTTY, O_TRUNC). The security hooks still see them, and Tracee reports them; the
 * syscall-exit tracepoint adds them back from the arguments so every backend reports the same flags. */
static __always_inline __u32 ew_open_only_flags(struct ew_syscall *sc)
{
	__u64 flags = 0;

	if (sc->source != EW_SOURCE_SYSCALL)
		return 0;
	switch (sc->op) {
	case EW_OP_OPEN:
		if (sc->nr == (sc->compat ? NR32_CREAT : NR_CREAT))
			return EW_O_CREAT | EW_O_TRUNC;
		flags = sys_arg(sc->regs, sc->compat, 1);
		break;
	case EW_OP_OPEN_AT:
		if (sc->nr == NR_OPENAT2) { /* struct open_how: flags is the first member */
			bpf_probe_read_user(&flags, sizeof(flags), (void *)sys_arg(sc->regs, sc->compat, 2));
			break;
		}
		flags = sys_arg(sc->regs, sc->compat, 2);
		break;
	case EW_OP_OPEN_BY_HANDLE:
		flags = sys_arg(sc->regs, sc->compat, 2);
		break;
	default:
		return 0;
	}
	return flags & EW_OPEN_ONLY_FLAGS;
}

/* dir_path writes the directory a relative name given with dfd starts from, and adds fact cut to facts when its
 * path was cut. Returns its dentry. */
static __always_inline struct dentry *dir_path(struct task_struct *task, int dfd, char *dst, __u32 *facts, __u32 cut)
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
	if (!ew_path_write(dentry, mnt, dst))
		*facts |= cut;
	return dentry;
}

/* agent_name_at returns the offset at which the final component "release_agent" starts in the string s of
 * length n (with its NUL), or -1 when the final component is another name. Trailing slashes are ignored. */
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

/* ew_rename_names reads a rename syscall's names into r: arg_path (new name as passed), path (the directory a
 * relative new name starts from), arg_path2 (old name), base_path (its directory). Returns the offset of the
 * final component "release_agent" in the new name, or -1 when it is another name. *new_dir gets the dentry of
 * that directory when the new name is a plain name, else NULL. */
static __always_inline int ew_rename_names(struct ew_record *r, struct task_struct *task, struct ew_syscall *sc,
					   struct dentry **new_dir, __u32 *facts)
{
	int at = sc->op == EW_OP_RENAME_AT;
	int old_dfd = at ? (int)sys_arg(sc->regs, sc->compat, 0) : EW_AT_FDCWD;
	int new_dfd = at ? (int)sys_arg(sc->regs, sc->compat, 2) : EW_AT_FDCWD;
	const char *old_name = (const char *)sys_arg(sc->regs, sc->compat, at ? 1 : 0);
	const char *new_name = (const char *)sys_arg(sc->regs, sc->compat, at ? 3 : 1);

	*new_dir = NULL;
	r->path[0] = 0;
	r->base_path[0] = 0;
	r->arg_path2[0] = 0;
	int n = bpf_probe_read_user_str(r->arg_path, sizeof(r->arg_path), new_name);
	if (n <= 0)
		return -1;
	int start = agent_name_at(r->arg_path, n);
	if (start < 0)
		return -1;
	if (r->arg_path[0] != '/') {
		struct dentry *dir = dir_path(task, new_dfd, r->path, facts, EW_FACT_PATH_TRUNCATED);
		if (start == 0)
			*new_dir = dir;
	}
	bpf_probe_read_user_str(r->arg_path2, sizeof(r->arg_path2), old_name);
	if (r->arg_path2[0] != '/')
		dir_path(task, old_dfd, r->base_path, facts, EW_FACT_BASE_PATH_TRUNCATED);
	return start;
}

/* ew_open_syscall completes an open's record with the syscall it came from: number, path string, and (from the
 * syscall-exit tracepoint, restore_flags) the open-only flags the file no longer shows. */
static __always_inline void ew_open_syscall(struct ew_record *r, struct ew_syscall *sc, int restore_flags)
{
	r->source = sc->source;
	r->syscall_nr = sc->nr;
	r->facts |= sc->facts;
	if (restore_flags)
		r->file_flags |= ew_open_only_flags(sc);
	const char *user_path = ew_open_user_path(sc);
	if (user_path)
		bpf_probe_read_user_str(r->arg_path, sizeof(r->arg_path), user_path);
}

#endif
