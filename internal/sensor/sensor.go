// Package sensor loads the BPF programs, attaches them to the kernel and turns their ring-buffer records into
// Tracee-shaped events. It knows nothing about rules.
package sensor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"escapewatch/internal/enrich"
	"escapewatch/internal/event"
	"escapewatch/internal/sensoropt"
)

// Config selects the hooks and what the kernel side lets through.
type Config struct {
	// Backend is one of BackendNames(); "" or "auto" picks the best the kernel offers.
	Backend string
	// AnyFS passes every file named release_agent on any filesystem (Tracee's behaviour) instead of only the
	// release_agent at the root of a cgroup v1 hierarchy.
	AnyFS bool
	// Enforce stops writes to the real release_agent by processes outside the host's namespaces: denied on the
	// lsm and fentry backends, killed on kprobe and tracepoint.
	Enforce bool
	// EnforceAllowCgroups are cgroup paths whose processes (in them or below) Enforce lets write release_agent,
	// as the host's own processes may. At most MaxEnforceAllow, each shorter than MaxEnforceAllowLen bytes.
	EnforceAllowCgroups []string
	// HostReleaseAgents are release_agent values that, found on a hierarchy when the sensor starts, count as set
	// by the host (who set a value before the sensor started is unknown; its agent's exec is otherwise an escape).
	HostReleaseAgents []string
	// Classifier assigns origin classes and knows the host's namespaces; required.
	Classifier *enrich.Classifier
	Logger     *slog.Logger
}

// Sensor is a loaded and attached set of programs.
type Sensor struct {
	backend *backend
	objs    objects // loaded
	maps    sharedMaps
	mu      sync.Mutex // guards links and detachedMissed: Run's shutdown and Close both detach
	links   []link.Link
	// detachedMissed keeps the missed hits of detached kprobe links, which can no longer be asked.
	detachedMissed uint64
	reader         *ringbuf.Reader // ew_events
	helpers        *ringbuf.Reader // ew_helper_events
	// handleMu serializes the two readers' records: decoding state, the losses' memory and emit's order.
	handleMu sync.Mutex
	conv     *converter
	anyFS    bool
	enforce  bool
	log      *slog.Logger

	statsMu sync.Mutex // orders Stats with Close: Close reads the kernel's counters a last time, then frees them
	final   *Stats     // those last counters, set by Close and returned by Stats from then on

	records      atomic.Uint64 // records read from the ring buffer
	decodeErrors atomic.Uint64 // records that could not be decoded (never expected: a layout bug)
	filtered     atomic.Uint64 // renames that user space found not to target the real release_agent
}

// Stats counts what the sensor saw. KernelDropped are records lost because the ring buffer was full,
// KernelOverBudget those an origin sent beyond its budget (bpf/emit.h), KernelRepeated those beyond its budget
// that repeated its last record sent (counted, not lost); KernelKillsFailed are --enforce kills the kernel
// refused to send (those records say alert). KernelMissed are the times the kernel skipped one of the sensor's
// programs at its hook, so that whatever it would have recorded is lost: a program already running on that CPU
// (an interrupt in the middle of one), or a kprobe hit while another kprobe ran (reported from Linux 6.7).
// KernelUntracked are io_uring requests the tracepoint backend could not follow from submission to completion
// (before Linux 5.17: its table of requests in flight was full), so that an open or write among them is lost.
type Stats struct {
	Records, DecodeErrors, Filtered                                   uint64
	KernelEmitted, KernelDropped, KernelOverBudget, KernelKillsFailed uint64
	KernelRepeated, KernelMissed, KernelUntracked                     uint64
}

// Open loads and attaches the configured backend. With "auto" it tries the backends best first and keeps the
// first whose programs load and attach, logging why each better one was passed over.
func Open(cfg Config) (*Sensor, error) {
	if cfg.Classifier == nil {
		return nil, errors.New("sensor: no origin classifier")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove the memlock limit (run as root): %w", err)
	}
	if cfg.Backend != "" && cfg.Backend != BackendAuto {
		b, err := findBackend(cfg.Backend)
		if err != nil {
			return nil, err
		}
		s, err := openBackend(b, cfg, log)
		var named fixNamed
		if errors.As(err, &named) {
			return nil, fmt.Errorf("backend %s: %w", b.name, err) // the error names the fix
		}
		if err != nil {
			return nil, fmt.Errorf("backend %s: %w; it needs %s", b.name, err, b.needs)
		}
		return s, nil
	}
	var skipped []string
	for i := range backends {
		b := &backends[i]
		s, err := openBackend(b, cfg, log)
		if err == nil {
			log.Info("backend chosen", "backend", b.name, "passed_over", skipped)
			return s, nil
		}
		if !errors.Is(err, errNotAvailable) {
			return nil, fmt.Errorf("backend %s: %w", b.name, err)
		}
		log.Info("backend not available, trying the next", "backend", b.name, "reason", err)
		skipped = append(skipped, b.name)
	}
	return nil, fmt.Errorf("no backend works on this kernel (tried %s: each one's reason is logged above); the tracepoint backend needs %s",
		strings.Join(skipped, ", "), backends[len(backends)-1].needs)
}

// openBackend loads and attaches one backend. Errors that mean "this kernel lacks the hooks" wrap
// errNotAvailable; others (a verifier rejection of a program the kernel supports) are bugs.
func openBackend(b *backend, cfg Config, log *slog.Logger) (*Sensor, error) {
	if b.preflight != nil {
		if err := b.preflight(); err != nil {
			return nil, fmt.Errorf("%w: %w", errNotAvailable, err)
		}
	}
	conv, err := newConverter(cfg.Classifier)
	if err != nil {
		return nil, err
	}
	objs, err := loadBackend(b, cfg, log)
	if err != nil {
		return nil, err
	}
	maps := objs.shared()
	if err := setAllowedCgroups(maps.enforceAllowed, cfg.EnforceAllowCgroups); err != nil {
		objs.Close()
		return nil, err
	}
	s := &Sensor{
		backend: b, objs: objs, maps: maps, conv: conv, anyFS: cfg.AnyFS, enforce: cfg.Enforce, log: log,
	}
	if err := s.attach(); err != nil {
		s.Close()
		return nil, fmt.Errorf("%w: %w", errNotAvailable, err)
	}
	if s.reader, err = ringbuf.NewReader(s.maps.events); err != nil {
		s.Close()
		return nil, fmt.Errorf("open the ring buffer: %w", err)
	}
	if s.helpers, err = ringbuf.NewReader(s.maps.helperEvents); err != nil {
		s.Close()
		return nil, fmt.Errorf("open the helpers' ring buffer: %w", err)
	}
	// After attaching, so that no write falls between reading a value and watching for the next.
	if n, err := seedAgentState(maps, "/proc", cfg.HostReleaseAgents); err != nil {
		log.Warn("release_agent values of the existing hierarchies unknown: their first change reports no old value, and their agents count as set by an unknown setter", "err", err)
	} else {
		log.Debug("release_agent values of the existing hierarchies read", "hierarchies", n)
	}
	return s, nil
}

// loadBackend loads b's programs or, on a kernel that lacks a helper they call, the same programs built without
// the newer helpers (EW_LEGACY in bpf/kernel.h: bounded loops, the registers from the task's stack); those
// directly where b.build says the kernel needs them whatever its helpers.
func loadBackend(b *backend, cfg Config, log *slog.Logger) (objects, error) {
	build := buildAny
	if b.build != nil {
		build = b.build()
	}
	if build == buildLegacy {
		legacy := b.legacy()
		spec, err := loadObjects(legacy, cfg)
		if err != nil {
			if spec == nil {
				return nil, err
			}
			return nil, loadError(err)
		}
		log.Info("the kernel's io_uring tracepoints pass no request at completion: loaded the programs that follow requests from their submission",
			"backend", b.name)
		return legacy, nil
	}
	objs := b.objects()
	spec, err := loadObjects(objs, cfg)
	if err == nil {
		return objs, nil
	}
	if spec == nil {
		return nil, err
	}
	// A kernel that lacks a helper the programs call refuses them with a message about something else (5.10:
	// "number of funcs in func_info doesn't match number of subprogs"): probe each helper, only now, so that a
	// start that loads pays nothing for it.
	missing, perr := missingHelpers(spec)
	if perr != nil || len(missing) == 0 {
		return nil, loadError(err)
	}
	if build == buildRegular {
		return nil, fmt.Errorf("%w: %w (the programs built without them follow io_uring from submission, which this kernel's io_uring_complete tracepoint does not need)", errNotAvailable,
			missingHelpersError(missing))
	}
	legacy := b.legacy()
	legacySpec, err := loadObjects(legacy, cfg)
	if err == nil {
		log.Info("the kernel lacks newer BPF helpers: loaded the programs built without them",
			"backend", b.name, "missing", missingHelpersError(missing).Error())
		return legacy, nil
	}
	if legacySpec == nil {
		return nil, err
	}
	if missing, perr := missingHelpers(legacySpec); perr == nil && len(missing) > 0 {
		return nil, fmt.Errorf("%w: %w", errNotAvailable, missingHelpersError(missing))
	}
	return nil, loadError(err)
}

// loadObjects loads objs with cfg's settings. It returns their spec, nil if the embedded object did not parse.
func loadObjects(objs objects, cfg Config) (*ebpf.CollectionSpec, error) {
	spec, err := objs.spec()
	if err != nil {
		return nil, fmt.Errorf("parse the embedded BPF object: %w", err)
	}
	vars, err := objs.config(spec)
	if err != nil {
		return nil, fmt.Errorf("the embedded BPF object's settings: %w", err)
	}
	host := cfg.Classifier.Host()
	for _, v := range []struct {
		spec  *ebpf.VariableSpec
		value any
	}{
		{vars.AnyFs, boolByte(cfg.AnyFS)}, {vars.Enforce, boolByte(cfg.Enforce)},
		{vars.HostMntNs, host.Mnt}, {vars.HostPidNs, host.PID},
		{vars.EnforceAllowCount, uint32(len(cfg.EnforceAllowCgroups))},
	} {
		if err := v.spec.Set(v.value); err != nil {
			return nil, fmt.Errorf("set %s: %w", v.spec.Name, err)
		}
	}
	return spec, spec.LoadAndAssign(objs, nil)
}

// loadError says what a failed load means: a verifier rejection of programs the kernel supports is a bug.
func loadError(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) && !errors.Is(err, unix.EPERM) {
		// err starts with the program's name ("field X: program y: load program: ..."), the log only in %+v.
		which, _, _ := strings.Cut(err.Error(), ": load program")
		return fmt.Errorf("the kernel's verifier rejected the programs (a bug: please report it with this log): %s: %+v", which, ve)
	}
	return fmt.Errorf("%w: load: %w", errNotAvailable, err)
}

// Limits of Config.EnforceAllowCgroups: EW_ALLOW_MAX (the entries of ew_enforce_allowed, in bpf/enforce.h) and the
// size of struct ew_allowed_cgroup's prefix.
const (
	MaxEnforceAllow    = 16
	MaxEnforceAllowLen = len(tracepointEwAllowedCgroup{}.Prefix)
)

// setAllowedCgroups hands the allowed cgroup path prefixes to the kernel side.
func setAllowedCgroups(m *ebpf.Map, prefixes []string) error {
	if len(prefixes) > MaxEnforceAllow {
		return fmt.Errorf("%d allowed cgroups for --enforce, at most %d", len(prefixes), MaxEnforceAllow)
	}
	for i, p := range prefixes {
		if err := sensoropt.CheckAllowedCgroup(p); err != nil {
			return err
		}
		v := struct {
			Len    uint32
			Prefix [MaxEnforceAllowLen]byte
		}{Len: uint32(len(p))}
		copy(v.Prefix[:], p)
		if err := m.Put(uint32(i), v); err != nil {
			return fmt.Errorf("allowed cgroup %q: %w", p, err)
		}
	}
	return nil
}

// Backend names the kind of hooks in use.
func (s *Sensor) Backend() string { return s.backend.name }

// Programs lists the hooks the programs attach to, for the startup log.
func (s *Sensor) Programs() []string {
	var points []string
	for _, h := range s.hooks() {
		points = append(points, h.point)
	}
	return points
}

// hooks are the backend's hooks this configuration attaches.
func (s *Sensor) hooks() []hook {
	var hooks []hook
	for _, h := range s.objs.hooks() {
		if h.when.holds(s.enforce, s.anyFS, s.backend.refuses) {
			hooks = append(hooks, h)
		}
	}
	return hooks
}

// Run delivers events until ctx is cancelled. Then it detaches the programs, so nothing new arrives, delivers
// every record still in the ring buffer, and returns nil.
func (s *Sensor) Run(ctx context.Context, emit func(*event.Event)) error {
	stop := context.AfterFunc(ctx, func() {
		s.detach()
		for _, r := range []*ringbuf.Reader{s.helpers, s.reader} {
			if err := r.Flush(); err != nil {
				s.log.Error("flush a ring buffer", "err", err)
			}
		}
	})
	defer stop()
	l := newLosses()
	helpersDone := make(chan error, 1)
	go func() { helpersDone <- s.readHelpers(emit, l) }()
	err := s.readEvents(emit, l)
	if herr := <-helpersDone; err == nil {
		err = herr
	}
	return err
}

// readHelpers delivers the helpers' ring until it is flushed or closed.
func (s *Sensor) readHelpers(emit func(*event.Event), l *losses) error {
	var rec ringbuf.Record
	for {
		err := s.helpers.ReadInto(&rec)
		if errors.Is(err, ringbuf.ErrFlushed) || errors.Is(err, ringbuf.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the helpers' ring buffer: %w", err)
		}
		s.handle(rec.RawSample, emit, l)
	}
}

// readEvents delivers the main ring until it is flushed or closed, and reports losses every lossInterval.
func (s *Sensor) readEvents(emit func(*event.Event), l *losses) error {
	var rec ringbuf.Record
	s.reader.SetDeadline(time.Now().Add(lossInterval))
	for {
		err := s.reader.ReadInto(&rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.reportLossesLocked(l, emit)
			s.reader.SetDeadline(time.Now().Add(lossInterval))
			continue
		}
		if errors.Is(err, ringbuf.ErrFlushed) || errors.Is(err, ringbuf.ErrClosed) {
			if errors.Is(err, ringbuf.ErrFlushed) { // the losses counted until the programs detached
				s.reportLossesLocked(l, emit)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the ring buffer: %w", err)
		}
		s.handle(rec.RawSample, emit, l)
	}
}

// reportLossesLocked reports losses in turn with the readers' records.
func (s *Sensor) reportLossesLocked(l *losses, emit func(*event.Event)) {
	s.handleMu.Lock()
	defer s.handleMu.Unlock()
	if err := s.reportLosses(l, emit); err != nil {
		s.log.Error("report lost records", "err", err)
	}
}

func (s *Sensor) handle(raw []byte, emit func(*event.Event), l *losses) {
	s.handleMu.Lock()
	defer s.handleMu.Unlock()
	s.records.Add(1)
	r, err := decodeRecord(raw)
	if err != nil {
		s.decodeErrors.Add(1)
		s.log.Error("undecodable kernel record dropped", "err", err)
		return
	}
	l.remember(&r)
	if r.Kind == kernelEwKindEW_KIND_INODE_RENAME && !s.anyFS && !s.conv.renameTargetsAgent(&r) {
		s.filtered.Add(1)
		return
	}
	if r.Has(kernelEwFactEW_FACT_MOUNT_DATA) {
		value, ok := releaseAgentOption(r.ArgPath)
		if !ok {
			s.filtered.Add(1) // a cgroup mount without the option
			return
		}
		r.ArgPath = value
	}
	ev := s.conv.event(&r)
	emit(&ev)
}

// Stats returns the counters so far, the kernel's included. It is safe to call at any time, also while and
// after the sensor closes: the kernel's counters are then those Close read last, so they never go back.
func (s *Sensor) Stats() Stats {
	st := Stats{Records: s.records.Load(), DecodeErrors: s.decodeErrors.Load(), Filtered: s.filtered.Load()}
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	if s.final != nil {
		final := *s.final
		final.Records, final.DecodeErrors, final.Filtered = st.Records, st.DecodeErrors, st.Filtered
		return final
	}
	s.readKernelCounters(&st)
	return st
}

// readKernelCounters reads the kernel's counters into st (0 for one that cannot be read); statsMu is held.
func (s *Sensor) readKernelCounters(st *Stats) {
	st.KernelEmitted, _ = s.counter(kernelEwCounterEW_COUNTER_EMITTED)
	st.KernelDropped, _ = s.counter(kernelEwCounterEW_COUNTER_DROPPED)
	st.KernelKillsFailed, _ = s.counter(kernelEwCounterEW_COUNTER_KILL_FAILED)
	st.KernelOverBudget, _ = s.counter(kernelEwCounterEW_COUNTER_LOST_RATE)
	st.KernelRepeated, _ = s.counter(kernelEwCounterEW_COUNTER_REPEATED)
	st.KernelMissed = s.programsMissed()
	st.KernelUntracked, _ = s.counter(kernelEwCounterEW_COUNTER_UNTRACKED)
}

// programsMissed sums what the kernel reports as skipped runs of the sensor's programs: each program's recursion
// misses (Linux 5.12 and later) and each kprobe link's missed hits (Linux 6.7 and later; before, 0). A kernel
// that reports neither gives 0.
func (s *Sensor) programsMissed() uint64 {
	var n uint64
	for _, h := range s.hooks() {
		if st, err := h.prog.Stats(); err == nil {
			n += st.RecursionMisses
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n += s.detachedMissed
	for _, l := range s.links {
		n += linkMissed(l)
	}
	return n
}

// linkMissed is a kprobe link's missed hits, or 0 for another link or a kernel that does not report them.
func linkMissed(l link.Link) uint64 {
	info, err := l.Info()
	if err != nil || info.PerfEvent() == nil || info.PerfEvent().Kprobe() == nil {
		return 0
	}
	return info.PerfEvent().Kprobe().Missed
}

func (s *Sensor) counter(idx kernelEwCounter) (uint64, error) {
	var perCPU []uint64
	if err := s.maps.counters.Lookup(uint32(idx), &perCPU); err != nil {
		return 0, fmt.Errorf("read kernel counter %d: %w", idx, err)
	}
	var sum uint64
	for _, v := range perCPU {
		sum += v
	}
	return sum, nil
}

// ReportDrops logs, every interval until ctx ends, how many records the kernel could not hand over since the
// last report, and how many runs of the programs it skipped. Drops are never silent.
func (s *Sensor) ReportDrops(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last, lastMissed, lastUntracked uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := s.counter(kernelEwCounterEW_COUNTER_DROPPED)
			if err != nil {
				s.log.Error("read the drop counter", "err", err)
				continue
			}
			if n > last {
				s.log.Warn("ring buffer full: kernel records lost", "lost", n-last, "lost_total", n)
				last = n
			}
			if m := s.programsMissed(); m > lastMissed {
				s.log.Warn("the kernel skipped the sensor's programs (recursion or kprobe misses): what they would have recorded is lost",
					"missed", m-lastMissed, "missed_total", m)
				lastMissed = m
			}
			if u, err := s.counter(kernelEwCounterEW_COUNTER_UNTRACKED); err == nil && u > lastUntracked {
				s.log.Warn("io_uring requests in flight beyond the tracepoint backend's table: an open of release_agent among them that completes inline (through a bind mount of the file) may be missed",
					"untracked", u-lastUntracked, "untracked_total", u)
				lastUntracked = u
			}
		}
	}
}

func (s *Sensor) attach() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.hooks() {
		l, err := h.attach(h.prog)
		if err != nil && isTrampoline(h.point) && errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("attach %s: %w", h.point, &trampolinesUnsupportedError{err})
		}
		if err != nil {
			return fmt.Errorf("attach %s: %w", h.point, err)
		}
		s.links = append(s.links, l)
	}
	return nil
}

func (s *Sensor) detach() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.links {
		s.detachedMissed += linkMissed(l) // a link's count goes with it
		if err := l.Close(); err != nil {
			s.log.Error("detach", "err", err)
		}
	}
	s.links = nil
}

// Close detaches every program and frees the kernel objects; Stats keeps reporting the last counters.
func (s *Sensor) Close() error {
	s.detach()
	s.statsMu.Lock()
	if s.final == nil {
		s.final = &Stats{}
		s.readKernelCounters(s.final) // detached: nothing counts any more
	}
	s.statsMu.Unlock()
	var errs []error
	for _, r := range []*ringbuf.Reader{s.reader, s.helpers} {
		if r != nil {
			errs = append(errs, r.Close())
		}
	}
	if s.objs != nil {
		errs = append(errs, s.objs.Close())
	}
	return errors.Join(errs...)
}

// releaseAgentOption finds release_agent=VALUE in a mount(2) data string ("none,name=x,release_agent=/p").
// The kernel splits options at commas, so the value ends at the next one.
func releaseAgentOption(data string) (string, bool) {
	for _, opt := range strings.Split(data, ",") {
		if v, ok := strings.CutPrefix(opt, "release_agent="); ok {
			return v, true
		}
	}
	return "", false
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
