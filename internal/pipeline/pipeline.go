// Package pipeline takes each event from the sensor to the outputs, in stages that never wait for one another:
//
//	sensor reader --events--> enrich --enriched--> rules, allowlist, aggregation --> output.Dispatcher
//
// The sensor's reader goroutine only counts an event and queues it (Pipeline.Event): it never waits for I/O, so
// the kernel's ring buffer is drained as fast as records come. Enrichment (a container runtime's API, which may
// take up to 100 ms to answer) runs in its own stage, and the rules, the allowlist and the aggregation of
// repeats in the next; the Dispatcher's own stages write the outputs. Each queue between stages is bounded: when
// one is full, the event of the lowest rank waiting is shed (see eventRank), counted per stage and logged at most
// once per LogEvery, so memory stays bounded whatever a flood or a stuck output does.
package pipeline

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"escapewatch/internal/enrich"
	"escapewatch/internal/event"
	"escapewatch/internal/finding"
	"escapewatch/internal/metrics"
	"escapewatch/internal/output"
	"escapewatch/internal/queue"
	"escapewatch/internal/rule"
	"escapewatch/internal/suppress"
)

// Defaults of the Options.
const (
	// DefaultEventQueue holds the events read while enrichment waits for a runtime's answer (up to 100 ms): a
	// few times what the kernel's ring buffer holds.
	DefaultEventQueue = 4096
	// DefaultRuleQueue holds enriched events for the rules, which take microseconds each.
	DefaultRuleQueue = 1024
	// DefaultFlushEvery is how often the aggregates whose window closed are written.
	DefaultFlushEvery = time.Second
	// DefaultLogEvery is the least time between two logs of the events a stage shed.
	DefaultLogEvery = 10 * time.Second
)

// Options are the stages of a Pipeline. Engine, Out and Metrics are required.
type Options struct {
	Engine *rule.Engine
	Allow  suppress.Allowlist
	Window time.Duration // repeats of a finding within it are folded into one with a count; 0 folds nothing
	Out    *output.Dispatcher
	// Runtimes adds container names, images and pods from the runtimes' APIs; nil adds none.
	Runtimes *enrich.Runtimes
	Metrics  *metrics.Metrics
	Logger   *slog.Logger     // nil discards the logs
	Now      func() time.Time // the clock of the aggregation; nil is time.Now
	// Bounds of the queues before enrichment and before the rules; 0 takes the defaults above.
	EventQueue, RuleQueue int
	FlushEvery, LogEvery  time.Duration // 0 takes the defaults above
}

// Pipeline runs the stages from New until Close.
type Pipeline struct {
	eng      *rule.Engine
	allow    suppress.Allowlist
	agg      *suppress.Aggregator // the rules stage's alone
	out      *output.Dispatcher
	runtimes *enrich.Runtimes
	m        *metrics.Metrics
	log      *slog.Logger
	now      func() time.Time
	every    time.Duration

	events   *queue.Queue[item] // the reader's, to enrichment
	enriched *queue.Queue[item] // to the rules
	noWait   context.Context    // already done: a runtime lookup that must not wait
	wg       sync.WaitGroup

	dispatchLog rated // findings the outputs refused (closed): never expected
}

// item is an event, or a control that follows the events queued before it through the stages.
type item struct {
	ev   *event.Event
	ctrl *control
}

// control asks the rules stage to flush the aggregates (final: all of them) or nothing (a barrier), and says
// when it is done, or shed, by closing done.
type control struct {
	flush, final bool
	done         chan struct{}
}

// controlRank is below every event's: a control never takes an event's place in a full queue.
const controlRank = -1

// New builds a Pipeline and starts its stages.
func New(o Options) *Pipeline {
	p := &Pipeline{eng: o.Engine, allow: o.Allow, agg: suppress.NewAggregator(o.Window), out: o.Out, runtimes: o.Runtimes,
		m: o.Metrics, log: o.Logger, now: o.Now, every: or(o.LogEvery, DefaultLogEvery),
		events: queue.New[item](or(o.EventQueue, DefaultEventQueue)), enriched: queue.New[item](or(o.RuleQueue, DefaultRuleQueue))}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	p.dispatchLog = rated{every: p.every}
	noWait, cancel := context.WithCancel(context.Background())
	cancel()
	p.noWait = noWait
	p.wg.Go(p.enrichStage)
	p.wg.Go(func() { p.ruleStage(or(o.FlushEvery, DefaultFlushEvery)) })
	return p
}

func or[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Event takes ev from the sensor's reader goroutine: it counts it and queues it, and never waits.
func (p *Pipeline) Event(ev *event.Event) {
	p.m.Event(ev.EventName)
	p.push(p.events, item{ev: ev}, eventRank(ev))
}

// push queues it; a control shed on the way is done with.
func (p *Pipeline) push(q *queue.Queue[item], it item, rank int) {
	if lost, _, shed := q.Push(it, rank); shed && lost.ctrl != nil {
		close(lost.ctrl.done)
	}
}

// eventRank orders events for a full queue, before any rule has judged them (finding.Rank orders findings):
// the kernel's verdict that a helper it started is the escape comes first, then what a process outside the
// host's namespaces did (a planting), then the host's own, then helpers that are not the escape (modprobe, a
// core dump helper).
func eventRank(ev *event.Event) int {
	switch {
	case ev.EventName == event.UsermodeHelperExec:
		if a, ok := ev.Arg("escape"); ok && a.Value == true {
			return 3
		}
		return 0
	case event.OriginOf(ev) != event.OriginHost:
		return 2
	default:
		return 1
	}
}

// enrichStage adds what the container runtimes know to each event, then queues it for the rules.
func (p *Pipeline) enrichStage() {
	defer p.enriched.Close()
	p.drive(p.events, "enrichment", func(batch []item) {
		for _, it := range batch {
			if ev := it.ev; ev != nil {
				p.log.Debug("event", "name", ev.EventName, "pid", ev.HostProcessID, "comm", ev.ProcessName, "origin", ev.Origin, "args", ev.Args)
				p.enrich(ev)
				p.push(p.enriched, it, eventRank(ev))
			} else {
				p.push(p.enriched, it, controlRank)
			}
		}
	}, nil)
}

// enrich fills ev's container name, image and pod from the runtime's API. A lookup not cached waits up to the
// runtime's bound (100 ms) for the answer, but only while few events wait behind: under a flood the events go
// on without it, and the answer, when it comes, fills the cache for the next ones.
func (p *Pipeline) enrich(ev *event.Event) {
	if p.runtimes == nil || ev.Container.ID == "" {
		return
	}
	ctx := context.Background()
	if st := p.events.Stats(); st.Len > 64 {
		ctx = p.noWait
	}
	d := p.runtimes.Lookup(ctx, enrich.Container{ID: ev.Container.ID, Runtime: ev.Container.Runtime, PodUID: ev.Kubernetes.PodUID})
	ev.Container.Name, ev.Container.ImageName, ev.Container.ImageDigest = d.Name, d.Image, d.ImageDigest
	ev.Kubernetes.PodName, ev.Kubernetes.PodNamespace = d.PodName, d.PodNamespace
	if d.PodUID != "" {
		ev.Kubernetes.PodUID = d.PodUID
	}
}

// ruleStage runs the rules on each event and takes its findings through the allowlist and the aggregation to the
// outputs; every flushEvery it writes the aggregates whose window closed, and at the end all of them.
func (p *Pipeline) ruleStage(flushEvery time.Duration) {
	tick := time.NewTicker(flushEvery)
	defer tick.Stop()
	p.drive(p.enriched, "rules", func(batch []item) {
		for _, it := range batch {
			switch {
			case it.ev != nil:
				p.process(it.ev)
			case it.ctrl.flush:
				p.flush(it.ctrl.final)
				close(it.ctrl.done)
			default:
				close(it.ctrl.done)
			}
		}
	}, tick.C)
	p.flush(true)
}

// drive takes batches from q into do until q is closed and empty; on each tick (nil: none) it flushes the
// aggregates. It logs the events q shed, at most once per LogEvery.
func (p *Pipeline) drive(q *queue.Queue[item], stage string, do func([]item), tick <-chan time.Time) {
	var batch []item
	var logged uint64
	var last time.Time
	for {
		var open bool
		batch, open = q.Take(batch[:0], 64)
		do(batch)
		select {
		case <-tick: // due while the queue was never empty
			p.flush(false)
		default:
		}
		if st := q.Stats(); st.Shed > logged && (time.Since(last) >= p.every || !open) {
			p.log.Warn("events shed: the sensor is not keeping up", "before", stage, "shed", st.Shed-logged, "shed_total", st.Shed,
				"queued", st.Len)
			logged, last = st.Shed, time.Now()
		}
		if !open {
			return
		}
		if len(batch) == 0 {
			select {
			case <-q.Ready():
			case <-tick:
				p.flush(false)
			}
		}
		clear(batch)
	}
}

func (p *Pipeline) process(ev *event.Event) {
	for _, f := range p.eng.Process(ev) {
		if p.allow.Match(&f) {
			p.m.Suppressed(f.SigMetadata.ID, "allow")
			p.log.Debug("finding allowed by the configuration", "rule", f.SigMetadata.ID, "pid", ev.HostProcessID)
			continue
		}
		if !p.agg.Offer(f, p.now()) {
			p.m.Suppressed(f.SigMetadata.ID, "aggregated")
			continue
		}
		p.write(f)
	}
}

// write hands f to the outputs, which count and log what they lose; Dispatch only fails for outputs already
// closed, which the order of the closes rules out.
func (p *Pipeline) write(f finding.Finding) {
	p.m.Finding(f.SigMetadata.ID, f.Event.Action)
	if err := p.out.Dispatch(f); err != nil {
		if n, ok := p.dispatchLog.allow(); ok {
			p.log.Error("finding not written", "rule", f.SigMetadata.ID, "err", err, "unlogged", n)
		}
	}
}

// flush writes the aggregates whose window has closed, or all of them when final; the rules stage's alone.
func (p *Pipeline) flush(final bool) {
	for _, f := range p.agg.Flush(p.now(), final) {
		p.write(f)
	}
}

// control sends c through the stages, behind the events already queued, and waits until the rules stage did
// it (or it was shed, the queues being full of events).
func (p *Pipeline) control(c control) {
	c.done = make(chan struct{})
	p.push(p.events, item{ctrl: &c}, controlRank)
	<-c.done
}

// Close ends the pipeline once the sensor's reader stopped: the stages process what is queued, the rules stage
// writes every aggregate still open, and Close returns when they are done. The outputs are the caller's to close.
func (p *Pipeline) Close() {
	p.events.Close()
	p.wg.Wait()
}

// StageStats are a queue's counts: Shed are the events it lost.
type StageStats struct {
	Stage string
	queue.Stats
}

// Stats are the queues' counts, in the order of the stages.
func (p *Pipeline) Stats() []StageStats {
	return []StageStats{{"enrichment", p.events.Stats()}, {"rules", p.enriched.Stats()}}
}

// rated lets one event through per interval and counts the others.
type rated struct {
	every    time.Duration
	last     time.Time
	unlogged uint64
}

func (r *rated) allow() (unlogged uint64, ok bool) {
	now := time.Now()
	if !r.last.IsZero() && now.Sub(r.last) < r.every {
		r.unlogged++
		return 0, false
	}
	unlogged, r.unlogged, r.last = r.unlogged, 0, now
	return unlogged, true
}
