// Package sensor loads the BPF programs, attaches them to the kernel and turns their ring-buffer records into
// Tracee-shaped events. It knows nothing about rules.
package sensor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"

	"escapewatch/internal/enrich"
	"escapewatch/internal/event"
)

// Backend names.
const BackendTracepoint = "tracepoint"

// Config selects what the kernel side lets through.
type Config struct {
	// AnyFS passes every file named release_agent on any filesystem (Tracee's behaviour) instead of only the
	// release_agent at the root of a cgroup v1 hierarchy.
	AnyFS bool
	// Classifier assigns origin classes; required.
	Classifier *enrich.Classifier
	Logger     *slog.Logger
}

// Sensor is a loaded and attached set of programs.
type Sensor struct {
	objs   tracepointObjects
	mu     sync.Mutex // guards links: Run's shutdown and Close both detach
	links  []link.Link
	reader *ringbuf.Reader
	conv   *converter
	anyFS  bool
	log    *slog.Logger

	records      atomic.Uint64 // records read from the ring buffer
	decodeErrors atomic.Uint64 // records that could not be decoded (never expected: a layout bug)
	filtered     atomic.Uint64 // renames that user space found not to target the real release_agent
}

// Stats counts what the sensor saw. KernelDropped are records lost because the ring buffer was full.
type Stats struct {
	Records, DecodeErrors, Filtered uint64
	KernelEmitted, KernelDropped    uint64
}

// Open loads the tracepoint backend and attaches it.
func Open(cfg Config) (s *Sensor, err error) {
	if cfg.Classifier == nil {
		return nil, errors.New("sensor: no origin classifier")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	conv, err := newConverter(cfg.Classifier)
	if err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove the memlock limit (run as root): %w", err)
	}
	spec, err := loadTracepoint()
	if err != nil {
		return nil, fmt.Errorf("parse the embedded BPF object: %w", err)
	}
	if err := spec.Variables["any_fs"].Set(boolByte(cfg.AnyFS)); err != nil {
		return nil, fmt.Errorf("set any_fs: %w", err)
	}
	s = &Sensor{conv: conv, anyFS: cfg.AnyFS, log: log}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("the kernel's verifier rejected the programs (a bug: please report it with this log): %+v", ve)
		}
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("load BPF programs: %w (run as root, or with CAP_BPF and CAP_PERFMON)", err)
		}
		return nil, fmt.Errorf("load BPF programs: %w", err)
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := s.attach(); err != nil {
		return nil, err
	}
	s.reader, err = ringbuf.NewReader(s.objs.EwEvents)
	if err != nil {
		return nil, fmt.Errorf("open the ring buffer: %w", err)
	}
	return s, nil
}

// Backend names the kind of hooks in use.
func (s *Sensor) Backend() string { return BackendTracepoint }

// Programs lists the hooks the programs attach to, for the startup log.
func (s *Sensor) Programs() []string {
	var hooks []string
	for _, p := range s.programs() {
		hooks = append(hooks, p.hook)
	}
	return hooks
}

type program struct {
	prog *ebpf.Program
	hook string
}

func (s *Sensor) programs() []program {
	return []program{
		{s.objs.EwSysExit, "tp_btf/sys_exit"},
		{s.objs.EwIoUringComplete, "tp_btf/io_uring_complete"},
	}
}

// Run delivers events until ctx is cancelled. Then it detaches the programs, so nothing new arrives, delivers
// every record still in the ring buffer, and returns nil.
func (s *Sensor) Run(ctx context.Context, emit func(*event.Event)) error {
	stop := context.AfterFunc(ctx, func() {
		s.detach()
		if err := s.reader.Flush(); err != nil {
			s.log.Error("flush the ring buffer", "err", err)
		}
	})
	defer stop()
	var rec ringbuf.Record
	for {
		err := s.reader.ReadInto(&rec)
		if errors.Is(err, ringbuf.ErrFlushed) || errors.Is(err, ringbuf.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the ring buffer: %w", err)
		}
		s.handle(rec.RawSample, emit)
	}
}

func (s *Sensor) handle(raw []byte, emit func(*event.Event)) {
	s.records.Add(1)
	r, err := decodeRecord(raw)
	if err != nil {
		s.decodeErrors.Add(1)
		s.log.Error("undecodable kernel record dropped", "err", err)
		return
	}
	if r.Kind == tracepointEwKindEW_KIND_INODE_RENAME && !s.anyFS && !s.conv.renameTargetsAgent(&r) {
		s.filtered.Add(1)
		return
	}
	ev := s.conv.event(&r)
	emit(&ev)
}

// Stats returns the counters so far, the kernel's included.
func (s *Sensor) Stats() Stats {
	st := Stats{Records: s.records.Load(), DecodeErrors: s.decodeErrors.Load(), Filtered: s.filtered.Load()}
	st.KernelEmitted, _ = s.counter(tracepointEwCounterEW_COUNTER_EMITTED)
	st.KernelDropped, _ = s.counter(tracepointEwCounterEW_COUNTER_DROPPED)
	return st
}

func (s *Sensor) counter(idx tracepointEwCounter) (uint64, error) {
	var perCPU []uint64
	if err := s.objs.EwCounters.Lookup(uint32(idx), &perCPU); err != nil {
		return 0, fmt.Errorf("read kernel counter %d: %w", idx, err)
	}
	var sum uint64
	for _, v := range perCPU {
		sum += v
	}
	return sum, nil
}

// ReportDrops logs, every interval until ctx ends, how many records the kernel could not hand over since the
// last report. Drops are never silent.
func (s *Sensor) ReportDrops(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := s.counter(tracepointEwCounterEW_COUNTER_DROPPED)
			if err != nil {
				s.log.Error("read the drop counter", "err", err)
				continue
			}
			if n > last {
				s.log.Warn("ring buffer full: kernel records lost", "lost", n-last, "lost_total", n)
				last = n
			}
		}
	}
}

func (s *Sensor) attach() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.programs() {
		l, err := link.AttachTracing(link.TracingOptions{Program: p.prog})
		if err != nil {
			return fmt.Errorf("attach %s (needs BTF-enabled raw tracepoints, kernel 5.5 or later): %w", p.hook, err)
		}
		s.links = append(s.links, l)
	}
	return nil
}

func (s *Sensor) detach() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.links {
		if err := l.Close(); err != nil {
			s.log.Error("detach", "err", err)
		}
	}
	s.links = nil
}

// Close detaches every program and frees the kernel objects.
func (s *Sensor) Close() error {
	s.detach()
	var errs []error
	if s.reader != nil {
		errs = append(errs, s.reader.Close())
	}
	errs = append(errs, s.objs.Close())
	return errors.Join(errs...)
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
