//go:build !amd64 && !arm64

package sensor

// The BPF objects are built for x86-64 and arm64 only: they read those architectures' registers and syscall
// numbers. On any other architecture this file stops the build with the name below, instead of an undefined
// loader function.
var _ = escapewatch_runs_on_amd64_and_arm64_only_see_README
