package sensor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
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
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"escapewatch/internal/event"
	"escapewatch/internal/rule"
	"escapewatch/internal/testutil"
)

// Operations per timed loop, chosen so that each loop lasts about 50 ms on the 6.1 matrix guest (50 million
// instructions under -icount): over shorter loops, the kernel's own periodic work (the timer tick and what runs
// from it) moved the figures by points.
const (
	opensPerRound  = 5000
	writesPerRound = 30000
	readsPerRound  = 40000
	execsPerRound  = 50
	treesPerRound  = 60
)

// execEnv names the program the exec loop runs, with its arguments (default /bin/true).
const execEnv = "ESCAPEWATCH_BENCH_EXEC"

// loopEnv makes the test binary serve timed loops instead of running the tests (see TestMain): "OP DIR".
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
		name, err := unix.BytePtrFromString(path)
		if err != nil {
			return nil, err
		}
		return func() error {
			fd, _, errno := rawSyscall(unix.SYS_OPENAT, atFDCWD, uintptr(unsafe.Pointer(name)), unix.O_RDONLY, 0)
			if errno == 0 {
				_, _, errno = rawSyscall(unix.SYS_CLOSE, fd, 0, 0, 0)
			}
			return errnoErr(errno)
		}, nil
	},
	// A one-byte pwrite(): since release_agent writes through any descriptor are tracked, the tracepoint backend
	// looks at every write's file.
	"write": func(dir string) (func() error, error) {
		f, err := os.Create(filepath.Join(dir, "unrelated"))
		if err != nil {
			return nil, err
		}
		fd, one := f.Fd(), []byte{'x'}
		return func() error {
			_, _, errno := rawSyscall(unix.SYS_PWRITE64, fd, uintptr(unsafe.Pointer(&one[0])), 1, 0)
			return errnoErr(errno)
		}, nil
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
		fd, one := f.Fd(), make([]byte, 1)
		return func() error {
			_, _, errno := rawSyscall(unix.SYS_PREAD64, fd, uintptr(unsafe.Pointer(&one[0])), 1, 0)
			return errnoErr(errno)
		}, nil
	},
	// A fork and exec of a small program ($ESCAPEWATCH_BENCH_EXEC, default /bin/true) and its wait: every exec
	// passes the sensor's exec tracepoint, whatever the backend.
	"exec": func(string) (func() error, error) {
		argv := strings.Fields(os.Getenv(execEnv))
		if len(argv) == 0 {
			argv = []string{"/bin/true"}
		}
		attr := &syscall.ProcAttr{Env: []string{}}
		return func() error {
			// ForkExec and Wait4, not os/exec: no pipes or goroutines of the runtime's around the one process.
			pid, err := syscall.ForkExec(argv[0], argv, attr)
			if err != nil {
				return fmt.Errorf("%s (set %s to a program that exits 0): %w", argv, execEnv, err)
			}
			var status syscall.WaitStatus
			if _, err := syscall.Wait4(pid, &status, 0, nil); err != nil {
				return err
			}
			if !status.Exited() || status.ExitStatus() != 0 {
				return fmt.Errorf("%s: %v (set %s to a program that exits 0)", argv, status, execEnv)
			}
			return nil
		}, nil
	},
	// A small file workload, like unpacking and reading back a source tree: a directory of 10 files, 4 KiB
	// written into each, read back, and all removed.
	"tree": func(dir string) (func() error, error) {
		data, buf := make([]byte, 4096), make([]byte, 4096)
		tree, err := unix.BytePtrFromString(filepath.Join(dir, "tree"))
		if err != nil {
			return nil, err
		}
		var names [10]*byte
		for i := range names {
			if names[i], err = unix.BytePtrFromString(filepath.Join(dir, "tree", strconv.Itoa(i))); err != nil {
				return nil, err
			}
		}
		call := func(nr uintptr, args ...uintptr) (uintptr, error) {
			var a [4]uintptr
			copy(a[:], args)
			r, _, errno := rawSyscall(nr, a[0], a[1], a[2], a[3])
			return r, errnoErr(errno)
		}
		ptr := func(b *byte) uintptr { return uintptr(unsafe.Pointer(b)) }
		return func() error {
			if _, err := call(unix.SYS_MKDIRAT, atFDCWD, ptr(tree), 0o755); err != nil {
				return err
			}
			for _, name := range names {
				fd, err := call(unix.SYS_OPENAT, atFDCWD, ptr(name), unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC, 0o644)
				if err != nil {
					return err
				}
				_, err = call(unix.SYS_WRITE, fd, ptr(&data[0]), uintptr(len(data)))
				call(unix.SYS_CLOSE, fd)
				if err != nil {
					return err
				}
				if fd, err = call(unix.SYS_OPENAT, atFDCWD, ptr(name), unix.O_RDONLY); err != nil {
					return err
				}
				_, err = call(unix.SYS_READ, fd, ptr(&buf[0]), uintptr(len(buf)))
				call(unix.SYS_CLOSE, fd)
				if err != nil {
					return err
				}
			}
			for _, name := range names {
				if _, err := call(unix.SYS_UNLINKAT, atFDCWD, ptr(name), 0); err != nil {
					return err
				}
			}
			_, err := call(unix.SYS_UNLINKAT, atFDCWD, ptr(tree), unix.AT_REMOVEDIR)
			return err
		}, nil
	},
}

// rawSyscall makes a system call without telling the Go scheduler: the runtime's monitor thread then has no
// blocked call to hand the processor over for, which moved the figures by points on a one-CPU guest. The calls
// are short and cannot block.
func rawSyscall(nr, a1, a2, a3, a4 uintptr) (uintptr, uintptr, unix.Errno) {
	return unix.RawSyscall6(nr, a1, a2, a3, a4, 0, 0)
}

// atFDCWD is AT_FDCWD as a system call argument.
var atFDCWD = func() uintptr { fd := unix.AT_FDCWD; return uintptr(fd) }()

func errnoErr(errno unix.Errno) error {
	if errno != 0 {
		return errno
	}
	return nil
}

// TestMain serves timed loops when loopEnv asks for them (the cost benchmarks' child process), else runs the tests.
func TestMain(m *testing.M) {
	if spec := os.Getenv(loopEnv); spec != "" {
		if err := serveLoops(spec, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "timed loop:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serveLoops prepares the loop spec names ("OP DIR"), then for each count N read from in, runs N/10 operations to
// warm up and N timed ones, and writes the nanoseconds they took to out, until in ends. The garbage collector is
// off, so that nothing but the operations runs in the process while it is timed; the process lives across the
// states measured, so that no start of it is ever in the machine's recent past.
func serveLoops(spec string, in io.Reader, out io.Writer) error {
	var name, dir string
	if _, err := fmt.Sscan(spec, &name, &dir); err != nil {
		return fmt.Errorf("%s %q: %w", loopEnv, spec, err)
	}
	prepare, ok := loops[name]
	if !ok {
		return fmt.Errorf("%s %q: no loop %q", loopEnv, spec, name)
	}
	op, err := prepare(dir)
	if err != nil {
		return err
	}
	debug.SetGCPercent(-1)
	lines := bufio.NewScanner(in)
	for lines.Scan() {
		n, err := strconv.Atoi(lines.Text())
		if err != nil {
			return fmt.Errorf("a count of operations: %w", err)
		}
		for range n / 10 {
			if err := op(); err != nil {
				return err
			}
		}
		start := time.Now()
		for range n {
			if err := op(); err != nil {
				return err
			}
		}
		if _, err := fmt.Fprintln(out, time.Since(start).Nanoseconds()); err != nil {
			return err
		}
	}
	return lines.Err()
}

// BenchmarkUnrelatedOpenClose measures what the attached sensor adds to an open()+close() of an unrelated
// file. Each iteration measures three states, in a rotating order, so drift (CPU frequency, page cache, other
// load) hits them alike: detached (no program), noop (an empty program on the same hook: the cost of the
// hook mechanism alone) and attached (escapewatch's programs). Each measurement is a loop in a child process
// (TestMain) that runs nothing else meanwhile: not the sensor's goroutines, not the garbage collector.
// Reported per operation: ns in each state; mechanism-% (noop vs detached), filter-% (attached vs noop:
// escapewatch's own code) and overhead-% (attached vs detached: what a user pays).
func BenchmarkUnrelatedOpenClose(b *testing.B) { benchmarkOverhead(b, "open", opensPerRound, false) }

// BenchmarkUnrelatedWrite is the same for a one-byte pwrite() to an unrelated file.
func BenchmarkUnrelatedWrite(b *testing.B) { benchmarkOverhead(b, "write", writesPerRound, false) }

// BenchmarkUnrelatedRead is the same for a one-byte pread() of an unrelated file.
func BenchmarkUnrelatedRead(b *testing.B) { benchmarkOverhead(b, "read", readsPerRound, false) }

// BenchmarkUnrelatedExec is the same for a fork and exec of a small program and its wait.
func BenchmarkUnrelatedExec(b *testing.B) { benchmarkOverhead(b, "exec", execsPerRound, false) }

// BenchmarkMixed is the same for a small file workload (the "tree" loop).
func BenchmarkMixed(b *testing.B) { benchmarkOverhead(b, "tree", treesPerRound, false) }

// BenchmarkEnforcedOpenClose is BenchmarkUnrelatedOpenClose under --enforce, where the backends that can refuse
// (lsm, fentry) see every open of the machine at security_file_open, and every read and write at
// security_file_permission.
func BenchmarkEnforcedOpenClose(b *testing.B) { benchmarkOverhead(b, "open", opensPerRound, true) }

// BenchmarkEnforcedMixed is BenchmarkMixed under --enforce.
func BenchmarkEnforcedMixed(b *testing.B) { benchmarkOverhead(b, "tree", treesPerRound, true) }

// benchmarkOverhead times opsPerRound operations of the loop called unit with no program, with the floor's empty
// programs and with the sensor (with enforce, Config.Enforce); reported per operation, as "-ns/unit" (with
// enforce, "-ns/enforced-unit").
func benchmarkOverhead(b *testing.B, unit string, opsPerRound int, enforce bool) {
	s := openForBench(b, enforce)
	// As on any host that runs containers, a cgroup file is written while the sensor runs: the tracepoint backend
	// learns kernfs files' operations from it (bpf/tracepoint.h), and its writes take the short test from then on.
	h := testutil.MountHierarchy(b)
	learn := func() {
		if err := os.WriteFile(filepath.Join(h.Dir, "notify_on_release"), []byte("0"), 0); err != nil {
			b.Fatal(err)
		}
	}
	learn()
	attachNoop := noopFor(b, s)
	s.detach()
	// Linux 5.10 attaches a tracing program (fentry, fexit, lsm, tp_btf) once: detached, it cannot be attached
	// again. There each round of the attached state opens a sensor afresh (and has it learn, as above).
	attachSensor := func() func() {
		if err := s.attach(); err != nil {
			b.Fatal(err)
		}
		return s.detach
	}
	if err := s.attach(); err != nil {
		s.detach() // what did attach
		b.Logf("the sensor cannot be attached again (%v): a fresh one each round", err)
		attachSensor = func() func() {
			fresh := openSensorWith(b, os.Getenv("ESCAPEWATCH_BACKEND"), func(cfg *Config) { cfg.Enforce = enforce })
			learn()
			return func() { fresh.Close() }
		}
	} else {
		s.detach()
	}
	dir := b.TempDir()
	cmd := exec.Command(os.Args[0])
	// One processor and no preemption signals: the loop's own runtime then adds the same work to every run.
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s", loopEnv, unit, dir), "GOMAXPROCS=1", "GODEBUG=asyncpreemptoff=1")
	cmd.Stderr = os.Stderr
	toLoop, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	fromLoop, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { toLoop.Close(); cmd.Wait() })
	results := bufio.NewScanner(fromLoop)
	loop := func() time.Duration {
		if _, err := fmt.Fprintln(toLoop, opsPerRound); err != nil {
			b.Fatalf("the timed loop: %v", err)
		}
		if !results.Scan() {
			b.Fatalf("the timed loop ended: %v", results.Err())
		}
		ns, err := strconv.ParseInt(results.Text(), 10, 64)
		if err != nil {
			b.Fatalf("the timed loop printed %q", results.Text())
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
		attachSensor,
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
	if enforce {
		unit = "enforced-" + unit
	}
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
	s := openForBench(b, false)
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

// noopFor loads empty programs for the hooks through which the backend sees unrelated opens, reads and writes
// in this configuration (security_file_open or cgroup_file_open, security_file_permission under --enforce, or
// sys_exit for tracepoint) and returns how to attach them.
func noopFor(b *testing.B, s *Sensor) func() (io.Closer, error) {
	spec, err := loadNoop()
	if err != nil {
		b.Fatal(err)
	}
	var noop noopProgramSpecs
	if err := spec.Assign(&noop); err != nil {
		b.Fatal(err)
	}
	type attachment struct {
		h    hook
		spec *ebpf.ProgramSpec
		prog *ebpf.Program
	}
	var floor []attachment
	for _, h := range s.hooks() {
		if !strings.HasSuffix(h.point, "file_open") && !strings.HasSuffix(h.point, "file_permission") &&
			h.point != "tp_btf/sys_exit" {
			continue
		}
		kind, fn, _ := strings.Cut(h.point, "/")
		var progSpec *ebpf.ProgramSpec
		switch {
		case h.point == "lsm/file_open":
			progSpec = noop.EwNoopLsmFileOpen
		case h.point == "lsm/file_permission":
			progSpec = noop.EwNoopLsmFilePermission
		case kind == "fentry":
			progSpec = noop.EwNoopFentryFileOpen.Copy()
			progSpec.AttachTo = fn // the empty program reads no argument: any function will do
		case kind == "fmod_ret":
			progSpec = noop.EwNoopFmodret.Copy()
			progSpec.AttachTo = fn // the same
		case kind == "kprobe":
			progSpec = noop.EwNoopKprobeFileOpen // the hook's attach names the symbol
		case kind == "tp_btf":
			progSpec = noop.EwNoopSysExit
		default:
			b.Fatalf("no empty program for %s", h.point)
		}
		prog, err := ebpf.NewProgram(progSpec)
		if err != nil {
			b.Fatalf("an empty program for %s: %v", h.point, err)
		}
		b.Cleanup(func() { prog.Close() })
		floor = append(floor, attachment{h, progSpec, prog})
	}
	if len(floor) == 0 {
		b.Fatalf("%s: no hook sees opens in %v", s.backend.name, s.Programs())
	}
	fresh := false // load the programs afresh for each attach (Linux 5.10: see benchmarkOverhead)
	attach := func() (io.Closer, error) {
		var held closers
		for _, a := range floor {
			prog := a.prog
			if fresh {
				var err error
				if prog, err = ebpf.NewProgram(a.spec); err != nil {
					held.Close()
					return nil, err
				}
				held = append(held, prog)
			}
			l, err := a.h.attach(prog)
			if err != nil {
				held.Close()
				return nil, err
			}
			held = append(held, l)
		}
		return held, nil
	}
	for range 2 {
		c, err := attach()
		if err != nil {
			b.Logf("the empty programs cannot be attached again (%v): fresh ones for each attach", err)
			fresh = true
			break
		}
		c.Close()
	}
	return attach
}

// closers closes everything it holds, last first.
type closers []io.Closer

func (cs closers) Close() error {
	var errs []error
	for i := len(cs) - 1; i >= 0; i-- {
		errs = append(errs, cs[i].Close())
	}
	return errors.Join(errs...)
}

func openForBench(b *testing.B, enforce bool) *Sensor {
	testutil.RequirePrivileged(b)
	s := openSensorWith(b, os.Getenv("ESCAPEWATCH_BACKEND"), func(cfg *Config) { cfg.Enforce = enforce })
	b.Cleanup(func() { s.Close() })
	return s
}
