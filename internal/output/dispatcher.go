package output

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"escapewatch/internal/finding"
	"escapewatch/internal/queue"
)

// DefaultLogEvery is the least time between two logs of lost findings for one output, and between two
// summaries of what a spool shed.
const DefaultLogEvery = 10 * time.Second

// DefaultQueueLen is how many findings wait for the spools' commit, and for each direct output: a burst of a
// thousand findings takes a few ms to commit; more than that waiting means the output cannot keep up.
const DefaultQueueLen = 1024

// DefaultMaxBatch bounds a group commit: the findings waiting when a commit starts go to disk together, with one
// fsync, up to this many.
const DefaultMaxBatch = 256

// Options configure a Dispatcher.
type Options struct {
	Logger *slog.Logger // nil discards the logs
	// Direct sinks are written by a goroutine each, from their own queue: the fast ones (stdout, file).
	Direct []Sink
	// Spooled sinks are fed from their own Spool by their own goroutine: the slow ones (webhook).
	Spooled []Spooled
	// Backoff spaces a spooled sink's retries; zero fields take the defaults (250ms doubling up to 30s).
	Backoff Backoff
	// LogEvery spaces the logs of lost findings, per sink, and the summaries of what a spool shed; 0 means
	// DefaultLogEvery.
	LogEvery time.Duration
	// QueueLen bounds the findings waiting for the spools and for each direct sink; 0 means DefaultQueueLen.
	QueueLen int
	// MaxBatch bounds the findings of one group commit; 0 means DefaultMaxBatch.
	MaxBatch int
}

// Spooled pairs a slow sink with its spool. The Dispatcher owns both once it is built, and closes them.
type Spooled struct {
	Sink  Sink
	Spool *Spool
}

// Dispatcher takes each finding to every sink, through stages that never wait for one another: Dispatch queues
// the finding; a commit stage writes the findings waiting to every spool in one group commit, then queues them
// for each direct sink, so a finding shows on stdout only once it is on disk for the slow sinks; a goroutine per
// direct sink writes its queue; a goroutine per spooled sink delivers its spool. Every queue and spool is
// bounded and sheds by finding.Rank. See the package comment for the guarantees.
type Dispatcher struct {
	log      *slog.Logger
	routes   []*route
	backoff  Backoff
	every    time.Duration
	maxBatch int
	in       *queue.Queue[record] // to the commit stage

	closed    atomic.Bool
	committed sync.WaitGroup // the commit stage
	stages    sync.WaitGroup // the direct sinks' goroutines
	delivery  sync.WaitGroup // the spooled sinks' goroutines
	draining  chan struct{}  // closed by Close once the stages are done: deliver what is left, then stop

	runCtx context.Context // cancelled when Close gives up draining
	stop   context.CancelFunc

	closeOnce sync.Once
	closeErr  error
}

// record is a finding on its way, with its encoding and rank.
type record struct {
	f    finding.Finding
	line []byte
	rank finding.Rank
}

// route is a sink with its counters; spool is nil for a direct sink, q nil for a spooled one.
type route struct {
	sink                       Sink
	spool                      *Spool
	q                          *queue.Queue[record]
	delivered, failed, dropped atomic.Uint64
	lost                       lossLog
	shed                       shedTally // spooled sinks: what they shed, for the summaries
}

// NewDispatcher starts the stages and a delivery goroutine per spooled sink. Entries a previous run left in a
// spool are delivered before new ones.
func NewDispatcher(opts Options) (*Dispatcher, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	every := cmpOr(opts.LogEvery, DefaultLogEvery)
	qlen := cmpOr(opts.QueueLen, DefaultQueueLen)
	routes, err := buildRoutes(opts, qlen, log, every)
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	d := &Dispatcher{log: log, routes: routes, backoff: opts.Backoff, every: every, maxBatch: cmpOr(opts.MaxBatch, DefaultMaxBatch),
		in: queue.New[record](qlen), draining: make(chan struct{}), runCtx: ctx, stop: stop}
	d.committed.Go(d.commitStage)
	for _, r := range routes {
		if r.spool == nil {
			d.stages.Go(func() { d.directStage(r) })
			continue
		}
		if n, size := r.spool.Len(); n > 0 {
			log.Info("delivering findings left in the spool by a previous run", "sink", r.sink.Name(), "entries", n, "bytes", size)
		}
		d.delivery.Go(func() { d.run(r) })
	}
	return d, nil
}

// cmpOr is v, or def when v is not positive.
func cmpOr[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// buildRoutes checks that every sink can be told apart in the stats and that every spooled one has a spool.
func buildRoutes(opts Options, qlen int, log *slog.Logger, every time.Duration) ([]*route, error) {
	var routes []*route
	seen := map[string]bool{}
	add := func(s Sink, sp *Spool) error {
		if seen[s.Name()] {
			return fmt.Errorf("two outputs named %q: their stats would mix (configure each output once)", s.Name())
		}
		seen[s.Name()] = true
		r := &route{sink: s, spool: sp, lost: lossLog{log: log, sink: s.Name(), every: every}}
		if sp == nil {
			r.q = queue.New[record](qlen)
		}
		routes = append(routes, r)
		return nil
	}
	for _, s := range opts.Spooled {
		if s.Spool == nil {
			return nil, fmt.Errorf("output %q: no spool (open one with OpenSpool)", s.Sink.Name())
		}
		if err := add(s.Sink, s.Spool); err != nil {
			return nil, err
		}
	}
	for _, s := range opts.Direct {
		if err := add(s, nil); err != nil {
			return nil, err
		}
	}
	return routes, nil
}

// Dispatch queues f for every sink and returns at once: it never waits for an output, and leaves the encoding to
// the commit stage, so the caller's goroutine (the rules) is free for the next event. When the outputs are
// behind and the queue is full, the finding of the lowest rank waiting is shed (see queue), counted as dropped
// for every sink and logged. The error is for outputs already closed.
func (d *Dispatcher) Dispatch(f finding.Finding) error {
	if d.closed.Load() {
		return fmt.Errorf("finding %s not written: the outputs are closed", f.SigMetadata.ID)
	}
	rank := finding.RankOf(&f)
	if lost, _, shed := d.in.Push(record{f: f, rank: rank}, int(rank)); shed {
		for _, r := range d.routes {
			r.lose(lost.f.SigMetadata.ID, lost.rank, "the outputs are not keeping up: shed before the spool", nil)
		}
	}
	return nil
}

// commitStage group-commits the findings waiting to every spool, then hands them to the direct sinks, until
// Close; it also writes the summaries of what the spools shed and the logs of what was lost, when due.
func (d *Dispatcher) commitStage() {
	tick := time.NewTicker(d.every / 4)
	defer tick.Stop()
	var batch []record
	for {
		var open bool
		batch, open = d.in.Take(batch[:0], d.maxBatch)
		if batch = d.encode(batch); len(batch) > 0 {
			d.commit(batch, false)
		}
		if !open {
			d.commit(nil, true) // the last summaries
			for _, r := range d.routes {
				if r.q != nil {
					r.q.Close()
				}
			}
			return
		}
		if len(batch) == 0 {
			select {
			case <-d.in.Ready():
			case <-tick.C:
				d.commit(nil, false)
			}
		}
		clear(batch) // the records are the sinks' now: keep no reference
	}
}

// encode gives each record its line, and drops those that cannot be encoded (none of the rules' can fail).
func (d *Dispatcher) encode(batch []record) []record {
	kept := batch[:0]
	for _, rec := range batch {
		line, err := jsonLine(rec.f)
		if err != nil {
			for _, r := range d.routes {
				r.lose(rec.f.SigMetadata.ID, rec.rank, "cannot be encoded", err)
			}
			continue
		}
		rec.line = line
		kept = append(kept, rec)
	}
	clear(batch[len(kept):])
	return kept
}

// commit writes batch, after the summaries that are due (all of them when final), to every spool in one
// commit each, and queues it for every direct sink.
func (d *Dispatcher) commit(batch []record, final bool) {
	now := time.Now()
	for _, r := range d.routes {
		if r.spool == nil {
			continue
		}
		sums := r.shed.due(r.sink.Name(), now, d.every, final)
		if len(sums) == 0 && len(batch) == 0 {
			if err := r.spool.Tidy(); err != nil {
				r.lost.fail(err)
			}
			continue
		}
		recs := make([]Record, 0, len(sums)+len(batch))
		for _, s := range sums {
			recs = append(recs, Record{Line: s.line, Rank: finding.MaxRank, Rule: ShedRuleID, Summary: true})
		}
		for _, rec := range batch {
			recs = append(recs, Record{Line: rec.line, Rank: rec.rank, Rule: rec.f.SigMetadata.ID})
		}
		shed, err := r.spool.Commit(recs)
		written := make([]bool, len(sums))
		for i := range sums {
			written[i] = true
		}
		for _, sh := range shed {
			if sh.Index >= 0 && sh.Index < len(sums) {
				written[sh.Index] = false // no room even for summaries: its count waits for the next
				continue
			}
			r.lose(sh.Rule, sh.Rank, "spool full: shed for more important findings", nil)
		}
		for i, s := range sums {
			if written[i] {
				r.shed.summarised(s)
			}
		}
		if err != nil {
			r.lost.fail(err)
		}
	}
	for _, r := range d.routes {
		if r.q == nil {
			continue
		}
		for _, rec := range batch {
			if lost, _, shed := r.q.Push(rec, int(rec.rank)); shed {
				r.lose(lost.f.SigMetadata.ID, lost.rank, "the output is not keeping up: shed from its queue", nil)
			}
		}
	}
	for _, r := range d.routes {
		r.lost.flush(now, final)
	}
}

// directStage writes r's queue to its sink until the commit stage closes it.
func (d *Dispatcher) directStage(r *route) {
	var batch []record
	for {
		var open bool
		batch, open = r.q.Take(batch[:0], 64)
		for _, rec := range batch {
			if err := r.sink.Deliver(d.runCtx, rec.f, rec.line); err != nil {
				r.failed.Add(1)
				r.lose(rec.f.SigMetadata.ID, rec.rank, "output failed", err)
				continue
			}
			r.delivered.Add(1)
		}
		if !open {
			return
		}
		if len(batch) == 0 {
			<-r.q.Ready()
		}
		clear(batch)
	}
}

// lose counts a finding r will never get, and logs it at a bounded rate; a spooled sink also summarises it.
func (r *route) lose(rule string, rank finding.Rank, reason string, err error) {
	n := r.dropped.Add(1)
	if r.spool != nil {
		r.shed.add(rule, rank)
	}
	r.lost.note(reason, err, n)
}

// run delivers r's spool in order until Close: an entry is removed once delivered or refused for good, and
// retried with backoff otherwise, so that a later entry never overtakes an earlier one.
func (d *Dispatcher) run(r *route) {
	retry := 0
	for d.runCtx.Err() == nil {
		e, ok, err := r.spool.Peek()
		switch {
		case err != nil:
			d.quarantine(r, e, err)
		case !ok:
			if !d.waitAppend(r) {
				return
			}
		default:
			err := d.deliver(r, e)
			if err == nil {
				retry = 0
				continue
			}
			if d.runCtx.Err() != nil {
				return // Close gave up; the entry stays for the next start
			}
			retry++
			delay := retryDelay(d.backoff, retry, err)
			n, _ := r.spool.Len()
			d.log.Warn("output delivery failed, will retry", "sink", r.sink.Name(), "err", err,
				"retry", retry, "in", delay.Round(time.Millisecond), "spool_entries", n)
			sleep(d.runCtx, delay)
		}
	}
}

// waitAppend waits for a new entry; it returns false when the spool is empty and Close asked to drain, or
// Close gave up.
func (d *Dispatcher) waitAppend(r *route) bool {
	select {
	case <-d.draining:
		return false // the commit stage ended before Close asked to drain, so empty stays empty
	default:
	}
	select {
	case <-r.spool.Appended():
		return true
	case <-d.draining:
		return true // look once more: a commit may have come just before Close
	case <-d.runCtx.Done():
		return false
	}
}

// deliver sends one entry. It returns nil when the entry is done with (delivered, or dropped because the sink
// refused it for good or it was unreadable) and the error when it must be retried.
func (d *Dispatcher) deliver(r *route, e Entry) error {
	f, err := decodeLine(e.Line)
	if err != nil {
		d.quarantine(r, e, err)
		return nil
	}
	err = r.sink.Deliver(d.runCtx, f, e.Line)
	switch {
	case err == nil:
		r.delivered.Add(1)
		r.spool.Remove(e.Seq)
		return nil
	case d.runCtx.Err() != nil:
		return err // Close gave up in the middle: the sink did not fail
	case IsPermanent(err):
		r.failed.Add(1)
		r.lost.note("the output refused it", err, r.dropped.Add(1))
		r.spool.Remove(e.Seq)
		return nil
	default:
		r.failed.Add(1)
		return err
	}
}

// decodeLine gives spooled sinks the finding as well as its line; UseNumber keeps numbers exact.
func decodeLine(line []byte) (finding.Finding, error) {
	var f finding.Finding
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if err := dec.Decode(&f); err != nil {
		return f, fmt.Errorf("decode spooled finding: %w", err)
	}
	return f, nil
}

// quarantine takes an unreadable entry out of the way so that it cannot block the ones behind it.
func (d *Dispatcher) quarantine(r *route, e Entry, cause error) {
	err := r.spool.Quarantine(e.Seq, e.Line)
	r.lost.note(fmt.Sprintf("unreadable spool entry %d dropped (what could be read of it is kept as *.bad in %s)", e.Seq, r.spool.Dir()),
		errors.Join(cause, err), r.dropped.Add(1))
}

// Reopen reopens every sink that writes to a file (log rotation: SIGHUP) and returns how many it reopened.
func (d *Dispatcher) Reopen() (int, error) {
	n := 0
	var errs []error
	for _, r := range d.routes {
		if ro, ok := r.sink.(interface{ Reopen() error }); ok {
			if err := ro.Reopen(); err != nil {
				errs = append(errs, fmt.Errorf("reopen %s: %w", r.sink.Name(), err))
				continue
			}
			n++
		}
	}
	return n, errors.Join(errs...)
}

// Stats is each sink's state, spooled sinks first, in the order of the Options.
func (d *Dispatcher) Stats() []SinkStats {
	out := make([]SinkStats, len(d.routes))
	for i, r := range d.routes {
		out[i] = SinkStats{Name: r.sink.Name(), Delivered: r.delivered.Load(), Failed: r.failed.Load(), Dropped: r.dropped.Load()}
		if r.spool != nil {
			n, size := r.spool.Len()
			out[i].SpoolEntries, out[i].SpoolBytes = int64(n), size
		}
	}
	return out
}

// Close stops accepting findings, lets the stages write what they hold and the spools deliver until ctx ends,
// and then closes the sinks and spools. What is not delivered stays on disk for the next start.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.closeOnce.Do(func() { d.closeErr = d.close(ctx) })
	return d.closeErr
}

func (d *Dispatcher) close(ctx context.Context) error {
	d.closed.Store(true)
	d.in.Close()
	// The commit stage ends once it wrote what was queued (a bounded amount) and the last summaries: the
	// spools are closed after it. A direct sink may hang on a writer nobody reads; it is waited for until ctx.
	d.committed.Wait()
	if !wait(ctx, &d.stages) {
		d.log.Warn("outputs closed before they wrote every finding (an output is stuck)")
	}
	close(d.draining)
	if !wait(ctx, &d.delivery) {
		d.stop() // cancels the deliveries in flight and the backoff waits
		d.delivery.Wait()
	}
	d.stop() // releases the context when draining finished first
	var errs []error
	for _, r := range d.routes {
		r.lost.flush(time.Now(), true)
		if r.spool != nil {
			errs = append(errs, r.spool.Tidy())
			if n, size := r.spool.Len(); n > 0 {
				d.log.Warn("findings left in the spool, delivered at the next start", "sink", r.sink.Name(),
					"entries", n, "bytes", size, "dir", r.spool.Dir())
			}
			errs = append(errs, r.spool.Close())
		}
		errs = append(errs, r.sink.Close())
	}
	return errors.Join(errs...)
}

// wait waits for wg until ctx ends; it reports whether wg was done.
func wait(ctx context.Context, wg *sync.WaitGroup) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// lossLog logs the findings a sink lost at most once per interval, with how many since its last line: a flood
// that an output cannot take must not become a flood of logs, nor of errors kept in memory (only the last
// error is kept, for the next line).
type lossLog struct {
	log   *slog.Logger
	sink  string
	every time.Duration

	mu     sync.Mutex // the stages and the delivery goroutine all lose findings
	last   time.Time  // of the last line; zero before the first
	n      uint64     // lost since the last line
	total  uint64     // lost in all
	reason string
	err    error
}

// note counts one finding lost, total the sink's count so far, and logs at once if a line is due.
func (l *lossLog) note(reason string, err error, total uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	l.total = total
	l.reason, l.err = reason, err
	l.emit(time.Now(), false)
}

// fail notes a write error; what it lost is noted separately.
func (l *lossLog) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.err = err
	l.emit(time.Now(), false)
}

// flush logs what was lost since the last line, if a line is due (or final).
func (l *lossLog) flush(now time.Time, final bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n > 0 || l.err != nil {
		l.emit(now, final)
	}
}

// emit writes a line if one is due; mu is held.
func (l *lossLog) emit(now time.Time, final bool) {
	if !final && !l.last.IsZero() && now.Sub(l.last) < l.every {
		return
	}
	if l.n == 0 {
		l.log.Error("output error", "sink", l.sink, "err", l.err)
	} else {
		l.log.Error("findings lost", "sink", l.sink, "lost", l.n, "lost_total", l.total, "reason", l.reason, "err", l.err)
	}
	l.last, l.n, l.reason, l.err = now, 0, "", nil
}
