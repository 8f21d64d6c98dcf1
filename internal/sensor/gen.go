package sensor

// The generated objects are committed so that `go build` needs no clang; CI regenerates them and fails on a diff.
//go:generate go tool bpf2go -tags linux -target bpfel -type ew_record -type ew_kind -type ew_source -type ew_fact -type ew_counter tracepoint ../../bpf/tracepoint.bpf.c -- -I../../bpf -O2 -g -Wall -Werror -Wpadded
//go:generate go tool bpf2go -tags linux -target bpfel noop ../../bpf/noop.bpf.c -- -I../../bpf -O2 -g -Wall -Werror
