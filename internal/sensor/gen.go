package sensor

// The generated objects are committed so that `go build` needs no clang; CI regenerates them and fails on a diff.
// One object per backend (only the chosen one is loaded); "kernel" carries just the record types.
//
// Warnings are errors, -Wextra included. The one escape, -Wno-unused-parameter for the objects with programs,
// is for libbpf's BPF_PROG, BPF_KPROBE and BPF_KRETPROBE (<bpf/bpf_tracing.h>): each wraps a program's body in
// a function whose ctx parameter most bodies never use, and takes the hooked function's arguments by position,
// so a program names every argument up to the last it reads (fexit, fmod_ret and lsm programs: all of them,
// then ret). types.bpf.c has no programs and keeps the warning.
//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type ew_record_head -type ew_kind -type ew_source -type ew_fact -type ew_counter -type ew_action -type ew_set_how -type ew_trust kernel ../../bpf/types.bpf.c -- -I../../bpf -O2 -g -Wall -Wextra -Werror -Wpadded
//go:generate go tool bpf2go -tags linux -target amd64,arm64 tracepoint ../../bpf/tracepoint.bpf.c -- -I../../bpf -O2 -g -Wall -Wextra -Wno-unused-parameter -Werror -Wpadded
//go:generate go tool bpf2go -tags linux -target amd64,arm64 lsm ../../bpf/lsm.bpf.c -- -I../../bpf -O2 -g -Wall -Wextra -Wno-unused-parameter -Werror -Wpadded
//go:generate go tool bpf2go -tags linux -target amd64,arm64 fentry ../../bpf/fentry.bpf.c -- -I../../bpf -O2 -g -Wall -Wextra -Wno-unused-parameter -Werror -Wpadded
//go:generate go tool bpf2go -tags linux -target amd64,arm64 kprobe ../../bpf/kprobe.bpf.c -- -I../../bpf -O2 -g -Wall -Wextra -Wno-unused-parameter -Werror -Wpadded
//go:generate go tool bpf2go -tags linux -target amd64,arm64 tracepointLegacy ../../bpf/tracepoint.bpf.c -- -I../../bpf -DEW_LEGACY -O2 -g -Wall -Wextra -Wno-unused-parameter -Werror -Wpadded
//go:generate go tool bpf2go -tags linux -target amd64,arm64 lsmLegacy ../../bpf/lsm.bpf.c -- -I../../bpf -DEW_LEGACY -O2 -g -Wall -Wextra -Wno-unused-parameter -Werror -Wpadded
//go:generate go tool bpf2go -tags linux -target amd64,arm64 fentryLegacy ../../bpf/fentry.bpf.c -- -I../../bpf -DEW_LEGACY -O2 -g -Wall -Wextra -Wno-unused-parameter -Werror -Wpadded
//go:generate go tool bpf2go -tags linux -target amd64,arm64 kprobeLegacy ../../bpf/kprobe.bpf.c -- -I../../bpf -DEW_LEGACY -O2 -g -Wall -Wextra -Wno-unused-parameter -Werror -Wpadded
//go:generate go tool bpf2go -tags linux -target amd64,arm64 noop ../../bpf/noop.bpf.c -- -I../../bpf -O2 -g -Wall -Wextra -Wno-unused-parameter -Werror
