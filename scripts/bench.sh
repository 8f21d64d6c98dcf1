#!/usr/bin/env bash
# Reproduces the README's performance figures (root, on the machine to be measured):
#   - added cost per unrelated open()+close(): detached vs an empty program on the same hook vs escapewatch,
#     interleaved in one run, as percentages of the detached cost;
#   - write-to-finding latency p50/p99 through the whole pipeline;
#   - the events a second the pipeline's stages sustain without loss (internal/pipeline);
#   - the sensor's footprint: RSS at rest, under a storm and after it, BPF memory (test/e2e, BenchmarkFootprint).
# With --vm, the cost benchmarks run in every kernel-matrix VM (qemu TCG, the guest clock counting instructions,
# so the figures repeat within 0.5 %), once per backend that runs there, and the script prints their table.
# Raw results go to bench/out/, the summary (benchstat: median and spread over the runs) to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/out
out=bench/out/$(date -u +%Y%m%dT%H%M%SZ)
if [ "${1:-}" = "--vm" ]; then
	# About 6 minutes per kernel and backend (14 of them); the table (medians of 3 runs) goes to stdout.
	if ! go test -v -count=1 -timeout 180m -run TestKernelMatrixBench ./test/matrix -args -vmbench >"$out-vm.log"; then
		tail -50 "$out-vm.log" >&2
		exit 1
	fi
	grep '^Benchmark' "$out-vm.log" >"$out-vm.txt"
	grep '^|' "$out-vm.log" | tee "$out-vm.md"
	echo "raw results: $out-vm.txt, the whole log: $out-vm.log" >&2
	exit 0
else
	out=$out.txt
	{
		echo "# kernel: $(uname -r)  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
		go test -run '^$' -bench . -benchtime "${ITERATIONS:-60}x" -count "${COUNT:-10}" ./internal/sensor
		go test -run '^$' -bench . -benchtime 100000x -count "${COUNT:-10}" ./internal/pipeline
		go test -run '^$' -bench Footprint -benchtime 1x -count "${FOOTPRINT_COUNT:-3}" ./test/e2e
	} | tee "$out" >&2
fi
go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da "$out"
echo "raw results: $out" >&2
