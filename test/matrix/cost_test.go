package matrix

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"escapewatch/internal/testutil"
	"escapewatch/internal/testutil/vm"
)

// costBenchmarks are the benchmarks of internal/sensor that measure what the sensor adds to unrelated work.
const costBenchmarks = "^Benchmark(Unrelated|Mixed|Enforced)"

// notBenched are the kernels whose cells TestKernelMatrixBench leaves out, with why.
var notBenched = map[string]string{
	// The benchmark loads the programs afresh there (internal/sensor: benchmarkOverhead), which took over 20
	// minutes a cell, and moved its figures by a point from run to run.
	"debian-5.10": "it attaches a tracing program once, so each round would load every program afresh: a cell takes over 20 minutes, and its figures move by a point",
}

var benchRun = flag.String("vmbench.run", costBenchmarks, "the cost benchmarks TestKernelMatrixBench runs (a -test.bench pattern)")

// TestKernelMatrixBench runs the cost benchmarks of internal/sensor in the VM, once per kernel and backend that
// runs there (with -vmbench; scripts/bench.sh --vm), then prints their table: the medians of 3 runs. The guest
// clock counts instructions (vm.Config.Icount), so the host's load does not move the figures: they repeat within
// 0.5 % from run to run, so the matrix also checks a budget of them (costBudgetFile).
func TestKernelMatrixBench(t *testing.T) {
	if !*benchInVM {
		t.Skip("a benchmark runner, not a test: run with -vmbench")
	}
	testutil.RequirePrivileged(t)
	dir := t.TempDir()
	var table []string
	for _, k := range kernels {
		for _, b := range backends {
			if _, refused := refusals[k.Name+"/"+b]; refused {
				continue
			}
			if why, ok := notBenched[k.Name]; ok {
				fmt.Printf("%s/%s: not measured: %s\n", k.Name, b, why)
				continue
			}
			// A subtest per cell, so that -run picks cells (TestKernelMatrixBench/debian-6.1/lsm).
			t.Run(k.Name+"/"+b, func(t *testing.T) {
				lines, err := costBench(t, dir, k, b, *benchRun, "5x", 3)
				if err != nil {
					t.Fatal(err)
				}
				for _, line := range lines {
					fmt.Println(labelBenchmark(line, k.Name, b))
				}
				figs, err := costFigures(lines)
				if err != nil {
					t.Fatal(err)
				}
				for _, op := range []string{"open", "write", "read", "exec", "tree", "enforced-open", "enforced-tree"} {
					if f, ok := figs[op]; ok {
						table = append(table, fmt.Sprintf("| %s | %s | %s | %.0f | %+.2f %% | %+.2f %% | %+.2f %% |",
							k.Name, b, op, f.detached, 100*(f.noop/f.detached-1), f.filter, f.total))
					}
				}
			})
		}
	}
	fmt.Println("| kernel | backend | operation | instructions, no program | floor: an empty program | escapewatch above the floor | escapewatch in all |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, row := range table {
		fmt.Println(row)
	}
}

// benchBuild serializes the builds of the benchmark binary (one per architecture, in the caller's directory).
var benchBuild sync.Mutex

// costBench runs the cost benchmarks matching pattern in a guest of kernel k with backend forced, the guest clock
// counting instructions, and returns the result lines. The benchmark binary is built into dir once per
// architecture.
func costBench(t *testing.T, dir string, k vm.Kernel, backend, pattern, benchtime string, count int) ([]string, error) {
	cache, err := vm.DefaultCacheDir()
	if err != nil {
		return nil, err
	}
	image, err := vm.FetchKernel(context.Background(), k, cache)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", k.Name, err)
	}
	arch := k.GOARCH()
	bench := filepath.Join(dir, arch, "sensor.test")
	benchBuild.Lock()
	if _, err := os.Stat(bench); err != nil {
		goBuild(t, arch, "test", "-c", "-o", bench, "escapewatch/internal/sensor")
	}
	benchBuild.Unlock()
	files := map[string]string{"/ew/sensor.test": bench}
	if err := addBusybox(t, files, arch, cache); err != nil {
		return nil, err
	}
	res, err := vm.Run(context.Background(), vm.Config{
		Kernel:  image,
		Arch:    arch,
		Cmdline: cmdline,
		Icount:  true,
		Files:   files,
		Argv: []string{"/ew/sensor.test", "-test.run", "^$", "-test.bench", pattern, "-test.benchtime", benchtime,
			"-test.count", strconv.Itoa(count)},
		Env: []string{testutil.RequirePrivilegedEnv + "=1", "ESCAPEWATCH_BACKEND=" + backend,
			"ESCAPEWATCH_BENCH_EXEC=/bin/busybox true"},
		Timeout: 20 * time.Minute,
	})
	if err != nil || res.ExitCode != 0 {
		return nil, fmt.Errorf("the benchmarks in the guest: %v, exit %d\n%s", err, res.ExitCode, res.Output)
	}
	var lines []string
	for _, line := range strings.Split(string(res.Output), "\n") {
		if strings.HasPrefix(line, "Benchmark") {
			lines = append(lines, line)
		}
	}
	return lines, nil
}

// addBusybox adds a static busybox at /bin/busybox for the exec benchmark: the host's on amd64, the arm64
// userland's on arm64.
func addBusybox(t *testing.T, files map[string]string, arch, cache string) error {
	if arch != "arm64" {
		testutil.RequireTool(t, "/bin/busybox", "busybox-static")
		return vm.AddExecutable(files, "/bin/busybox")
	}
	root, err := vm.FetchUserland(context.Background(), vm.Arm64Userland, cache)
	if err != nil {
		return err
	}
	return root.AddExecutable(files, "/bin/busybox")
}
