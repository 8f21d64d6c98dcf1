#!/usr/bin/env bash
# The whole test loop, exactly as CI runs it (.ci/run calls this): on a Debian machine as root with Go, it
# installs the Debian packages the tests need when they are missing (and says which), then checks formatting,
# go vet, staticcheck, that the generated files come out of their pinned inputs unchanged (with the running
# kernel's BTF hidden), and runs every test with privileged tests required: once under the race detector
# (the kernel matrix aside: its guests run prebuilt static binaries), then the kernel matrix. A test that skips
# fails the run unless test/allowed-skips.txt allows it.
set -euo pipefail
cd "$(dirname "$0")/.."
export ESCAPEWATCH_REQUIRE_PRIVILEGED=1

step() { printf '\n== %s\n' "$*"; }

# Debian packages: the pinned compiler for the BPF objects (scripts/generate.sh checks the versions), the
# tools the tests drive, and gcc for the race detector's cgo.
packages=(
	clang-14=1:14.0.6-12 llvm-14=1:14.0.6-12 libbpf-dev=1:1.1.2-0+deb12u1 bpftool lz4
	qemu-system-x86 qemu-system-arm runc busybox-static containerd python3 util-linux mount systemd gcc libc6-dev debian-archive-keyring
)
missing=()
for p in "${packages[@]}"; do
	name=${p%%=*} want=${p#*=}
	have=$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$name" 2>/dev/null || true)
	if [[ $have != ii* ]] || { [ "$want" != "$name" ] && [ "${have#ii }" != "$want" ]; }; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -gt 0 ]; then
	step "install Debian packages the tests need: ${missing[*]}"
	[ "$(id -u)" -eq 0 ] || { echo "test.sh: run as root to install them (or install them yourself)" >&2; exit 1; }
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

step "Go modules"
go mod download

step "gofmt, go vet, staticcheck"
unformatted=$(gofmt -l .)
[ -z "$unformatted" ] || { echo "gofmt needed on: $unformatted" >&2; exit 1; }
go vet ./...
go tool staticcheck ./...

step "generated files: regenerate from the pinned inputs, the running kernel's BTF hidden, and compare"
unshare --mount sh -c 'mount -t tmpfs none /sys/kernel/btf && BTF=/nonexistent scripts/generate.sh --check'

step "tests, under the race detector (the kernel matrix next)"
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
go build -o "$tools/testreport" ./internal/testutil/testreport
report() { "$tools/testreport" -skips test/allowed-skips.txt "$@"; }
go test -race -json -count=1 -timeout 30m $(go list ./... | grep -v '^escapewatch/test/matrix$') | report

step "kernel matrix: the end-to-end suite in qemu, per pinned kernel and backend"
go test -json -count=1 -timeout 45m -v ./test/matrix | report -show escapewatch/test/matrix
