package sensor

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
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

// opsPerRound is how many unrelated operations one measurement makes in one state.
const opsPerRound = 5000

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
	benchmarkOverhead(b, "open", func() {
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
	benchmarkOverhead(b, "write", func() {
		if _, err := unix.Pwrite(fd, one, 0); err != nil {
			b.Fatal(err)
		}
	})
}

func benchmarkOverhead(b *testing.B, unit string, op func()) {
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
