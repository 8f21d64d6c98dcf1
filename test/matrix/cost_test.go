package matrix

import (
	"context"
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
const costBenchmarks = "^Benchmark(Unrelated|Mixed)"

// TestKernelMatrixBench runs the cost benchmarks of internal/sensor in the VM, once per kernel and backend that
// runs the suite (with -vmbench; scripts/bench.sh --vm prints the table). The guest clock counts instructions
// (vm.Config.Icount), so the host's load does not move the figures, and each timed loop runs in a process of its
// own. What still runs in the guest kernel moves the percentages by a few points from run to run: too much yet
// for a budget that CI could enforce.
func TestKernelMatrixBench(t *testing.T) {
	if !*benchInVM {
		t.Skip("a benchmark runner, not a test: run with -vmbench")
	}
	testutil.RequirePrivileged(t)
	dir := t.TempDir()
	for _, k := range kernels {
		for _, b := range backends {
			if _, refused := refusals[k.Name+"/"+b]; refused {
				continue
			}
			lines, err := costBench(t, dir, k, b, "5x", 3)
			if err != nil {
				t.Errorf("%s/%s: %v", k.Name, b, err)
				continue
			}
			for _, line := range lines {
				fmt.Println(labelBenchmark(line, k.Name, b))
			}
		}
	}
}

// benchBuild serializes the builds of the benchmark binary (one per architecture, in the caller's directory).
var benchBuild sync.Mutex

// costBench runs the cost benchmarks in a guest of kernel k with backend forced, the guest clock counting
// instructions, and returns the result lines. The benchmark binary is built into dir once per architecture.
func costBench(t *testing.T, dir string, k vm.Kernel, backend, benchtime string, count int) ([]string, error) {
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
		Argv: []string{"/ew/sensor.test", "-test.run", "^$", "-test.bench", costBenchmarks, "-test.benchtime", benchtime,
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
