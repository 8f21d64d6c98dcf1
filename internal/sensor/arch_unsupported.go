//go:build !amd64

package sensor

// The BPF objects are built for x86-64 only: they read x86 registers and x86 syscall numbers. On any other
// architecture this file stops the build with the name below, instead of an undefined loader function.
var _ = escapewatch_runs_on_amd64_only_see_README
