#!/usr/bin/env bash
# Regenerates bpf/vmlinux.h from the running kernel's BTF. Never edit vmlinux.h by hand: CO-RE relocations make
# the objects built from it portable, so one header generated here serves every kernel the sensor supports.
set -euo pipefail
cd "$(dirname "$0")/.."
btf=${BTF:-/sys/kernel/btf/vmlinux}
[ -r "$btf" ] || { echo "gen-vmlinux: $btf is not readable; the kernel needs CONFIG_DEBUG_INFO_BTF=y" >&2; exit 1; }
bpftool btf dump file "$btf" format c > bpf/vmlinux.h.tmp
mv bpf/vmlinux.h.tmp bpf/vmlinux.h
