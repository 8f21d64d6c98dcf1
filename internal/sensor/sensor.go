// Package sensor loads the BPF programs, attaches them to the kernel and turns their ring-buffer records into
// events. It knows nothing about rules.
package sensor

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
)

// Config selects what the kernel side lets through.
type Config struct {
	// AnyFS passes every file named release_agent on any filesystem (Tracee's behaviour) instead of only the
	// release_agent at the root of a cgroup v1 hierarchy.
	AnyFS bool
}

// Sensor is a loaded and attached set of programs.
type Sensor struct {
	objs   tracepointObjects
	links  []link.Link
	reader *ringbuf.Reader
}

// Open loads the tracepoint backend and attaches it.
func Open(cfg Config) (s *Sensor, err error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock limit: %w", err)
	}
	spec, err := loadTracepoint()
	if err != nil {
		return nil, fmt.Errorf("load BPF object: %w", err)
	}
	if err := spec.Variables["any_fs"].Set(boolByte(cfg.AnyFS)); err != nil {
		return nil, fmt.Errorf("set any_fs: %w", err)
	}
	s = &Sensor{}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("kernel verifier rejected the programs: %+v", ve)
		}
		return nil, fmt.Errorf("load programs into the kernel: %w", err)
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	for _, p := range []*ebpf.Program{s.objs.EwSysExit, s.objs.EwIoUringComplete} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			return nil, fmt.Errorf("attach %s: %w", p, err)
		}
		s.links = append(s.links, l)
	}
	s.reader, err = ringbuf.NewReader(s.objs.EwEvents)
	if err != nil {
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	return s, nil
}

// Close detaches every program and frees the kernel objects.
func (s *Sensor) Close() error {
	var errs []error
	for _, l := range s.links {
		errs = append(errs, l.Close())
	}
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
