#!/usr/bin/env bash
# Regenerates every generated file from pinned inputs only, never from the running kernel:
#   bpf/x86/vmlinux.h, bpf/arm64/vmlinux.h
#                          from the BTF of one exact Debian kernel package per architecture (vm.HeaderKernels
#                          in internal/testutil/vm/kernels.go), dumped by bpftool;
#   internal/sensor/*_{x86,arm64}_bpfel.{go,o}
#                          from bpf/ by bpf2go with one exact Debian clang.
# The same inputs give byte-identical files on any machine: CI runs this and fails on a diff.
# Usage: scripts/generate.sh [--check]   (--check: regenerate, then fail if anything differs from git's HEAD)
set -euo pipefail
cd "$(dirname "$0")/.."

# The pinned tools: Debian 12 packages (bookworm main, which takes no more point releases).
CLANG_PACKAGE=clang-14 CLANG_VERSION=1:14.0.6-12
LLVM_PACKAGE=llvm-14 LLVM_VERSION=1:14.0.6-12
LIBBPF_PACKAGE=libbpf-dev LIBBPF_VERSION=1:1.1.2-0+deb12u1
# bpftool ships with each kernel security update; its C dump is libbpf's btf_dump, pinned by its own version.
BPFTOOL_VERSION=7.1.0

die() { echo "generate: $*" >&2; exit 1; }

require_package() { # name version
	local have
	have=$(dpkg-query -W -f='${Version}' "$1" 2>/dev/null) ||
		die "Debian package $1 is not installed: apt-get install $1=$2"
	[ "$have" = "$2" ] ||
		die "Debian package $1 is $have, the generated files are made with $2: apt-get install $1=$2 (or change the pin in $0 deliberately and commit what it generates)"
}
require_package "$CLANG_PACKAGE" "$CLANG_VERSION"
require_package "$LLVM_PACKAGE" "$LLVM_VERSION"
require_package "$LIBBPF_PACKAGE" "$LIBBPF_VERSION"
command -v bpftool >/dev/null || die "bpftool is not installed: apt-get install bpftool"
have=$(bpftool version | sed -n '1s/^bpftool v//p')
[ "$have" = "$BPFTOOL_VERSION" ] || die "bpftool is v$have, the header is dumped with v$BPFTOOL_VERSION"
command -v lz4 >/dev/null || die "lz4 is not installed (it unpacks Debian's x86 kernel image): apt-get install lz4"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# vmlinux_from_bzimage IMAGE OUT: the kernel's ELF image (with its .BTF section) out of an x86 bzImage. The
# boot header gives the compressed payload's place (setup sectors at 0x1f1, payload offset and length at
# 0x248); the payload ends with its uncompressed size, 4 bytes the decompressor must not see.
vmlinux_from_bzimage() {
	local image=$1 out=$2 sects offset length magic
	sects=$(od -An -tu1 -j $((0x1f1)) -N1 "$image" | tr -d ' ')
	[ "$sects" -ne 0 ] || sects=4
	offset=$(od -An -tu4 -j $((0x248)) -N4 "$image" | tr -d ' ')
	length=$(od -An -tu4 -j $((0x24c)) -N4 "$image" | tr -d ' ')
	offset=$(((sects + 1) * 512 + offset))
	magic=$(od -An -tx1 -j "$offset" -N4 "$image" | tr -d ' ')
	[ "$magic" = 02214c18 ] || die "$image: payload magic $magic is not LZ4's legacy frame (the only compression of the pinned kernels)"
	dd if="$image" iflag=skip_bytes,count_bytes skip="$offset" count=$((length - 4)) bs=1M status=none | lz4 -dc > "$out" ||
		die "$image: the LZ4 payload does not decompress"
}

image=$(go run ./internal/testutil/vm/fetchkernel -header amd64)
vmlinux_from_bzimage "$image" "$scratch/vmlinux"
bpftool btf dump file "$scratch/vmlinux" format c > "$scratch/vmlinux.h" ||
	die "bpftool found no BTF in $image: the pinned kernel must be built with CONFIG_DEBUG_INFO_BTF=y"
mv "$scratch/vmlinux.h" bpf/x86/vmlinux.h

# Debian's arm64 image is uncompressed, but it is no ELF file: kernelbtf finds the BTF blob by its header.
image=$(go run ./internal/testutil/vm/fetchkernel -header arm64)
go run ./internal/testutil/vm/kernelbtf "$image" > "$scratch/arm64.btf"
bpftool btf dump file "$scratch/arm64.btf" format c > "$scratch/vmlinux.h" ||
	die "bpftool could not dump the BTF of $image"
mv "$scratch/vmlinux.h" bpf/arm64/vmlinux.h

BPF2GO_CC=clang-14 BPF2GO_STRIP=llvm-strip-14 go generate ./internal/sensor

if [ "${1:-}" = --check ]; then
	git add -N bpf internal/sensor # new generated files count as differences too
	if ! git diff --exit-code --stat -- bpf internal/sensor; then
		die "the generated files differ from the committed ones: run scripts/generate.sh and commit the result"
	fi
	echo "generate: the committed generated files are what the pinned inputs give"
fi
