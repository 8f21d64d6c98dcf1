package sensor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"escapewatch/internal/event"
	"escapewatch/internal/rule"
	"escapewatch/internal/testutil"
)

// opsPerRound is how many unrelated operations one measurement makes in one state (fewer of the costly ones:
// an exec costs as much as hundreds of opens).
const opsPerRound = 5000

// execEnv names the program the exec loop runs, with its arguments (default /bin/true).
const execEnv = "ESCAPEWATCH_BENCH_EXEC"

// loopEnv makes the test binary run one timed loop instead of the tests (see TestMain): "OP N DIR".
const loopEnv = "ESCAPEWATCH_BENCH_LOOP"

// loops are the unrelated operations the cost benchmarks time, by name: each prepares its files in dir and
// returns one operation.
var loops = map[string]func(dir string) (func() error, error){
	// open()+close() of an unrelated file.
	"open": func(dir string) (func() error, error) {
		path := filepath.Join(dir, "unrelated")
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			return nil, err
		}
		return func() error {
			fd, err := unix.Open(path, unix.O_RDONLY, 0)
			if err == nil {
				err = unix.Close(fd)
			}
			return err
		}, nil
	},
	// A one-byte pwrite(): since release_agent writes through any descriptor are tracked, the tracepoint backend
	// looks at every write's file.
	"write": func(dir string) (func() error, error) {
		f, err := os.Create(filepath.Join(dir, "unrelated"))
		if err != nil {
			return nil, err
		}
		fd, one := int(f.Fd()), []byte{'x'}
		return func() error { _, err := unix.Pwrite(fd, one, 0); return err }, nil
	},
	// A one-byte pread(): reads enter no hook backend's programs, the tracepoint backend's only at the number.
	"read": func(dir string) (func() error, error) {
		path := filepath.Join(dir, "unrelated")
		if err := os.WriteFile(path, []byte{'x'}, 0o644); err != nil {
			return nil, err
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		fd, one := int(f.Fd()), make([]byte, 1)
		return func() error { _, err := unix.Pread(fd, one, 0); return err }, nil
	},
	// A fork and exec of a small program ($ESCAPEWATCH_BENCH_EXEC, default /bin/true) and its wait: every exec
	// passes the sensor's exec tracepoint, whatever the backend.
	"exec": func(string) (func() error, error) {
		argv := strings.Fields(os.Getenv(execEnv))
		if len(argv) == 0 {
			argv = []string{"/bin/true"}
		}
		return func() error {
			if err := exec.Command(argv[0], argv[1:]...).Run(); err != nil {
				return fmt.Errorf("%s (set %s to a program that exits 0): %w", argv, execEnv, err)
			}
			return nil
		}, nil
	},
	// A small file workload, like unpacking and reading back a source tree: a directory of 10 files, 4 KiB
	// written into each, read back, and all removed.
	"tree": func(dir string) (func() error, error) {
		data, buf := make([]byte, 4096), make([]byte, 4096)
		tree := filepath.Join(dir, "tree")
		return func() error {
			if err := os.Mkdir(tree, 0o755); err != nil {
				return err
			}
			for i := range 10 {
				name := filepath.Join(tree, strconv.Itoa(i))
				if err := os.WriteFile(name, data, 0o644); err != nil {
					return err
				}
				f, err := os.Open(name)
				if err != nil {
					return err
				}
				_, err = io.ReadFull(f, buf)
				f.Close()
				if err != nil {
					return err
				}
			}
			return os.RemoveAll(tree)
		}, nil
	},
}

// TestMain runs one timed loop when loopEnv asks for it (the cost benchmarks' child process), else the tests.
func TestMain(m *testing.M) {
	if spec := os.Getenv(loopEnv); spec != "" {
		ns, err := timeLoop(spec)
		if err != nil {
			fmt.Fprintln(os.Stderr, "timed loop:", err)
			os.Exit(1)
		}
		fmt.Println(ns)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// timeLoop runs the loop spec names ("OP N DIR") and returns its nanoseconds: N operations after N/10 to warm up,
// with the garbage collector off, so that nothing but the operations runs in the process while it is timed.
func timeLoop(spec string) (int64, error) {
	var name, dir string
	var n int
	if _, err := fmt.Sscan(spec, &name, &n, &dir); err != nil {
		return 0, fmt.Errorf("%s %q: %w", loopEnv, spec, err)
	}
	prepare, ok := loops[name]
	if !ok {
		return 0, fmt.Errorf("%s %q: no loop %q", loopEnv, spec, name)
	}
	op, err := prepare(dir)
	if err != nil {
		return 0, err
	}
	debug.SetGCPercent(-1)
	for range n / 10 {
		if err := op(); err != nil {
			return 0, err
		}
	}
	start := time.Now()
	for range n {
		if err := op(); err != nil {
			return 0, err
		}
	}
	return time.Since(start).Nanoseconds(), nil
}

// BenchmarkUnrelatedOpenClose measures what the attached sensor adds to an open()+close() of an unrelated
// file. Each iteration measures three states, in a rotating order, so drift (CPU frequency, page cache, other
// load) hits them alike: detached (no program), noop (an empty program on the same hook: the cost of the
// hook mechanism alone) and attached (escapewatch's programs). Each measurement is a loop in a child process of
// its own (TestMain), which runs nothing else meanwhile: not the sensor's goroutines, not the garbage collector.
// Reported per operation: ns in each state; mechanism-% (noop vs detached), filter-% (attached vs noop:
// escapewatch's own code) and overhead-% (attached vs detached: what a user pays).
func BenchmarkUnrelatedOpenClose(b *testing.B) { benchmarkOverhead(b, "open", opsPerRound) }

// BenchmarkUnrelatedWrite is the same for a one-byte pwrite() to an unrelated file.
func BenchmarkUnrelatedWrite(b *testing.B) { benchmarkOverhead(b, "write", opsPerRound) }

// BenchmarkUnrelatedRead is the same for a one-byte pread() of an unrelated file.
func BenchmarkUnrelatedRead(b *testing.B) { benchmarkOverhead(b, "read", opsPerRound) }

// BenchmarkUnrelatedExec is the same for a fork and exec of a small program and its wait.
func BenchmarkUnrelatedExec(b *testing.B) { benchmarkOverhead(b, "exec", opsPerRound/100) }

// BenchmarkMixed is the same for a small file workload (the "tree" loop).
func BenchmarkMixed(b *testing.B) { benchmarkOverhead(b, "tree", opsPerRound/100) }

func benchmarkOverhead(b *testing.B, unit string, opsPerRound int) {
	s := openForBench(b)
	attachNoop := noopFor(b, s)
	s.detach()
	dir := b.TempDir()
	loop := func() time.Duration {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %s", loopEnv, unit, opsPerRound, dir))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("the timed loop: %v", err)
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
		if err != nil {
			b.Fatalf("the timed loop printed %q", out)
		}
		return time.Duration(ns)
	}

	var spent [3]time.Duration // by state
	states := [3]func() func(){
		func() func() { return func() {} }, // detached
		func() func() { // noop
			l, err := attachNoop()
			if err != nil {
				b.Fatal(err)
			}
			return func() { l.Close() }
		},
		func() func() { // attached
			if err := s.attach(); err != nil {
				b.Fatal(err)
			}
			return s.detach
		},
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range 3 {
			state := (i + k) % 3
			undo := states[state]()
			spent[state] += loop()
			undo()
		}
	}
	b.StopTimer()
	ops := float64(b.N * opsPerRound)
	detached, noopT, attached := float64(spent[0]), float64(spent[1]), float64(spent[2])
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(detached/ops, "detached-ns/"+unit)
	b.ReportMetric(noopT/ops, "noop-ns/"+unit)
	b.ReportMetric(attached/ops, "attached-ns/"+unit)
	b.ReportMetric(100*(noopT/detached-1), "mechanism-%")
	b.ReportMetric(100*(attached/noopT-1), "filter-%")
	b.ReportMetric(100*(attached/detached-1), "overhead-%")
}

// BenchmarkWriteToFinding measures the time from the start of an open() for writing of a real release_agent
// to its TRC-1010 finding encoded as JSON, through the whole pipeline: kernel filter, ring buffer, decoding,
// origin, rule, encoding. Reported: p50 and p99 over b.N writes.
func BenchmarkWriteToFinding(b *testing.B) {
	h := testutil.MountHierarchy(b)
	s := openForBench(b)
	eng, err := rule.NewEngine(rule.Default(), rule.ScopeAll)
	if err != nil {
		b.Fatal(err)
	}
	enc := json.NewEncoder(io.Discard)
	found := make(chan time.Time, 1)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		s.Run(ctx, func(ev *event.Event) {
			for _, f := range eng.Process(ev) {
				enc.Encode(f)
				found <- time.Now()
			}
		})
	})
	defer func() { cancel(); wg.Wait() }()

	latencies := make([]time.Duration, 0, b.N)
	value := []byte("/payload\n")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		fd, err := unix.Open(h.Agent(), unix.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		unix.Write(fd, value)
		unix.Close(fd)
		select {
		case at := <-found:
			latencies = append(latencies, at.Sub(start))
		case <-time.After(10 * time.Second):
			b.Fatal("no finding within 10s")
		}
	}
	b.StopTimer()
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds())
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// noopFor loads the empty program on the same hook as the backend's open hook (its first) and returns how to
// attach it.
func noopFor(b *testing.B, s *Sensor) func() (link.Link, error) {
	spec, err := loadNoop()
	if err != nil {
		b.Fatal(err)
	}
	var noop noopProgramSpecs
	if err := spec.Assign(&noop); err != nil {
		b.Fatal(err)
	}
	progSpec := map[string]*ebpf.ProgramSpec{
		BackendLSM: noop.EwNoopLsmFileOpen, BackendFentry: noop.EwNoopFentryFileOpen,
		BackendKprobe: noop.EwNoopKprobeFileOpen, BackendTracepoint: noop.EwNoopSysExit,
	}[s.backend.name]
	prog, err := ebpf.NewProgram(progSpec)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { prog.Close() })
	return func() (link.Link, error) { return s.objs.hooks()[0].attach(prog) }
}

func openForBench(b *testing.B) *Sensor {
	testutil.RequirePrivileged(b)
	s := openTestSensor(b)
	b.Cleanup(func() { s.Close() })
	return s
}
