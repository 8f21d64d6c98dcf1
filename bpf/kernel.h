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

#define CGROUP_SUPER_MAGIC 0x27e0eb
#define EW_NAME_MAX 255
#define EW_EPERM 1

#endif
