// Package pipeline takes each event from the sensor to the outputs: through the rules, the allowlist and the
// aggregation of repeats, counting in the metrics every event, every finding written and every finding
// suppressed, and keeping the errors of the writes for the end of the run.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"escapewatch/internal/event"
	"escapewatch/internal/finding"
	"escapewatch/internal/metrics"
	"escapewatch/internal/output"
	"escapewatch/internal/rule"
	"escapewatch/internal/suppress"
)

// Options are the stages of a Pipeline. Engine, Out and Metrics are required.
type Options struct {
	Engine  *rule.Engine
	Allow   suppress.Allowlist
	Window  time.Duration // repeats of a finding within it are folded into one with a count; 0 folds nothing
	Out     *output.Dispatcher
	Metrics *metrics.Metrics
	Logger  *slog.Logger     // nil discards the logs
	Now     func() time.Time // the clock of the aggregation; nil is time.Now
}

// Pipeline is safe for concurrent use: Event runs on the sensor's goroutine, FlushEvery on its own.
type Pipeline struct {
	eng   *rule.Engine
	allow suppress.Allowlist
	out   *output.Dispatcher
	m     *metrics.Metrics
	log   *slog.Logger
	now   func() time.Time

	mu       sync.Mutex // the aggregator is shared with the flushes
	agg      *suppress.Aggregator
	writeErr error
}

// New builds a Pipeline.
func New(o Options) *Pipeline {
	p := &Pipeline{eng: o.Engine, allow: o.Allow, out: o.Out, m: o.Metrics, log: o.Logger, now: o.Now,
		agg: suppress.NewAggregator(o.Window)}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	return p
}

// Event runs ev through the rules and takes each finding through the allowlist and the aggregation to the
// outputs: one matched by an allow entry, or folded into a coming aggregate, is counted as suppressed.
func (p *Pipeline) Event(ev *event.Event) {
	p.m.Event(ev.EventName)
	p.log.Debug("event", "name", ev.EventName, "pid", ev.HostProcessID, "comm", ev.ProcessName, "origin", ev.Origin, "args", ev.Args)
	for _, f := range p.eng.Process(ev) {
		if p.allow.Match(&f) {
			p.m.Suppressed(f.SigMetadata.ID, "allow")
			p.log.Debug("finding allowed by the configuration", "rule", f.SigMetadata.ID, "pid", ev.HostProcessID)
			continue
		}
		p.mu.Lock()
		write := p.agg.Offer(f, p.now())
		p.mu.Unlock()
		if !write {
			p.m.Suppressed(f.SigMetadata.ID, "aggregated")
			continue
		}
		p.write(f)
	}
}

func (p *Pipeline) write(f finding.Finding) {
	p.m.Finding(f.SigMetadata.ID, f.Event.Action)
	if err := p.out.Dispatch(f); err != nil {
		p.log.Error("write finding", "err", err)
		p.mu.Lock()
		p.writeErr = errors.Join(p.writeErr, err)
		p.mu.Unlock()
	}
}

// FlushEvery writes the aggregates whose window closed, every interval until ctx ends.
func (p *Pipeline) FlushEvery(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.Flush(false)
		}
	}
}

// Flush writes the aggregates whose window has closed, or all of them when final (at the end of a run).
func (p *Pipeline) Flush(final bool) {
	p.mu.Lock()
	due := p.agg.Flush(p.now(), final)
	p.mu.Unlock()
	for _, f := range due {
		p.write(f)
	}
}

// Err reports the errors of every write that failed so far, or nil.
func (p *Pipeline) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.writeErr != nil {
		return fmt.Errorf("write findings: %w", p.writeErr)
	}
	return nil
}
