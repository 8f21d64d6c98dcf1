package sensor

// The generated objects are committed so that `go build` needs no clang; CI regenerates them and fails on a diff.
// One object per backend (only the chosen one is loaded); "kernel" carries just the record types.
//go:generate go tool bpf2go -tags linux -target amd64 -type ew_record -type ew_kind -type ew_source -type ew_fact -type ew_counter -type ew_action kernel ../../bpf/types.bpf.c -- -I../../bpf -O2 -g -Wall -Werror -Wpadded
//go:generate go tool bpf2go -tags linux -target amd64 tracepoint ../../bpf/tracepoint.bpf.c -- -I../../bpf -O2 -g -Wall -Werror -Wpadded
//go:generate go tool bpf2go -tags linux -target amd64 lsm ../../bpf/lsm.bpf.c -- -I../../bpf -O2 -g -Wall -Werror -Wpadded
//go:generate go tool bpf2go -tags linux -target amd64 fentry ../../bpf/fentry.bpf.c -- -I../../bpf -O2 -g -Wall -Werror -Wpadded
//go:generate go tool bpf2go -tags linux -target amd64 kprobe ../../bpf/kprobe.bpf.c -- -I../../bpf -O2 -g -Wall -Werror -Wpadded
//go:generate go tool bpf2go -tags linux -target amd64 noop ../../bpf/noop.bpf.c -- -I../../bpf -O2 -g -Wall -Werror
