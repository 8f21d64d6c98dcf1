/* SPDX-License-Identifier: GPL-2.0 */
/* The kernel's types (the target architecture's vmlinux.h), libbpf's helpers and the kernel constants several
 * headers use. bpf2go defines __TARGET_ARCH_<arch> for each -target. */
#ifndef EW_KERNEL_H
#define EW_KERNEL_H

/* -Wpadded guards our own record layout (record.h), not the kernel's types. */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpadded"
#if defined(__TARGET_ARCH_x86)
#include "x86/vmlinux.h"
#elif defined(__TARGET_ARCH_arm64)
#include "arm64/vmlinux.h"
#else
#error "escapewatch's BPF objects are built for x86 and arm64 only (bpf2go -target amd64 or arm64)"
#endif
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#pragma clang diagnostic pop

/* EW_LEGACY builds the objects for kernels that lack the newer helpers (5.10: no bpf_loop, 5.17; no
 * bpf_task_pt_regs, 5.15; no bpf_get_current_task_btf, 5.11). The sensor loads them when a load of the regular
 * ones fails and probing finds such a helper missing, and the tracepoint backend's whenever the kernel's
 * io_uring_complete passes no request (tracepoint.bpf.c). Their loops: EW_LOOP in maps.h. */
/* ew_current_task returns the current task; with bpf_get_current_task_btf, a pointer the verifier lets programs
 * load from directly (and bpf_task_pt_regs take). */
#ifdef EW_LEGACY
#define ew_current_task() ((struct task_struct *)bpf_get_current_task())
/* The user registers sit at the top of the task's kernel stack: THREAD_SIZE is 16 KiB on x86-64 (32 KiB with
 * KASAN, which distribution kernels leave off), with no padding above the registers. */
#define EW_THREAD_SIZE (16 << 10)
static __always_inline struct pt_regs *ew_task_regs(struct task_struct *task)
{
	void *stack = BPF_CORE_READ(task, stack);
	return (struct pt_regs *)(stack + EW_THREAD_SIZE) - 1;
}
#else
#define ew_current_task() bpf_get_current_task_btf()
#define ew_task_regs(task) ((struct pt_regs *)bpf_task_pt_regs(task))
#endif

#define CGROUP_SUPER_MAGIC 0x27e0eb
#define EW_NAME_MAX 255
#define EW_EPERM 1

#endif
