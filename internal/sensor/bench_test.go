package sensor

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
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

// execEnv names the program BenchmarkUnrelatedExec runs, with its arguments (default /bin/true).
const execEnv = "ESCAPEWATCH_BENCH_EXEC"

// BenchmarkUnrelatedOpenClose measures what the attached sensor adds to an open()+close() of an unrelated
// file. Each iteration measures three states, in a rotating order, so drift (CPU frequency, page cache, other
// load) hits them alike: detached (no program), noop (an empty program on the same hook: the cost of the
// hook mechanism alone) and attached (escapewatch's programs). Reported per operation: ns in each state;
// mechanism-% (noop vs detached), filter-% (attached vs noop: escapewatch's own code) and overhead-%
// (attached vs detached: what a user pays).
func BenchmarkUnrelatedOpenClose(b *testing.B) {
	path := filepath.Join(b.TempDir(), "unrelated")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	benchmarkOverhead(b, "open", opsPerRound, func() {
		fd, err := unix.Open(path, unix.O_RDONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		unix.Close(fd)
	})
}

// BenchmarkUnrelatedWrite is the same for a one-byte write() to an unrelated file: since release_agent writes
// through any descriptor are tracked, the tracepoint backend looks at every write's file.
func BenchmarkUnrelatedWrite(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "unrelated"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fd, one := int(f.Fd()), []byte{'x'}
	benchmarkOverhead(b, "write", opsPerRound, func() {
		if _, err := unix.Pwrite(fd, one, 0); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkUnrelatedRead is the same for a one-byte pread() of an unrelated file: reads enter no hook backend's
// programs, and the tracepoint backend's only at the syscall number.
func BenchmarkUnrelatedRead(b *testing.B) {
	path := filepath.Join(b.TempDir(), "unrelated")
	if err := os.WriteFile(path, []byte{'x'}, 0o644); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fd, one := int(f.Fd()), make([]byte, 1)
	benchmarkOverhead(b, "read", opsPerRound, func() {
		if _, err := unix.Pread(fd, one, 0); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkUnrelatedExec is the same for a fork and exec of a small program ($ESCAPEWATCH_BENCH_EXEC, default
// /bin/true) and its wait: every exec passes the sensor's exec tracepoint, whatever the backend.
func BenchmarkUnrelatedExec(b *testing.B) {
	argv := strings.Fields(os.Getenv(execEnv))
	if len(argv) == 0 {
		argv = []string{"/bin/true"}
	}
	benchmarkOverhead(b, "exec", opsPerRound/100, func() {
		if err := exec.Command(argv[0], argv[1:]...).Run(); err != nil {
			b.Fatalf("%s (set %s to a program that exits 0): %v", argv, execEnv, err)
		}
	})
}

// BenchmarkMixed is a small file workload, like unpacking and reading back a source tree: each operation
// creates a directory of 10 files, writes 4 KiB into each, reads them back, and removes them all.
func BenchmarkMixed(b *testing.B) {
	dir, data := b.TempDir(), make([]byte, 4096)
	buf := make([]byte, len(data))
	benchmarkOverhead(b, "tree", opsPerRound/100, func() {
		tree := filepath.Join(dir, "tree")
		if err := os.Mkdir(tree, 0o755); err != nil {
			b.Fatal(err)
		}
		for i := range 10 {
			name := filepath.Join(tree, strconv.Itoa(i))
			if err := os.WriteFile(name, data, 0o644); err != nil {
				b.Fatal(err)
			}
			f, err := os.Open(name)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(f, buf); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
		if err := os.RemoveAll(tree); err != nil {
			b.Fatal(err)
		}
	})
}

func benchmarkOverhead(b *testing.B, unit string, opsPerRound int, op func()) {
	s := openForBench(b)
	attachNoop := noopFor(b, s)
	s.detach()

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
			start := time.Now()
			for range opsPerRound {
				op()
			}
			spent[state] += time.Since(start)
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
