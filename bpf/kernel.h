/* SPDX-License-Identifier: GPL-2.0 */
/* The kernel's types (vmlinux.h), libbpf's helpers and the kernel constants several headers use. */
#ifndef EW_KERNEL_H
#define EW_KERNEL_H

/* -Wpadded guards our own record layout (record.h), not the kernel's types. */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpadded"
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#pragma clang diagnostic pop

#define CGROUP_SUPER_MAGIC 0x27e0eb
#define EW_NAME_MAX 255
#define EW_EPERM 1

#endif
