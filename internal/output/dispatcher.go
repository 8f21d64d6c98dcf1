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
)

// DefaultLogEvery is the least time between two logs of dropped findings for one sink.
const DefaultLogEvery = 10 * time.Second

// Options configure a Dispatcher.
type Options struct {
	Logger *slog.Logger // nil discards the logs
	// Direct sinks are written synchronously, in order, before Dispatch returns: the fast ones (stdout, file).
	Direct []Sink
	// Spooled sinks are fed from their own Spool by their own goroutine: the slow ones (webhook).
	Spooled []Spooled
	// Backoff spaces a spooled sink's retries; zero fields take the defaults (250ms doubling up to 30s).
	Backoff Backoff
	// LogEvery rate-limits the logs of dropped findings, per sink; 0 means DefaultLogEvery.
	LogEvery time.Duration
}

// Spooled pairs a slow sink with its spool. The Dispatcher owns both once it is built, and closes them.
type Spooled struct {
	Sink  Sink
	Spool *Spool
}

// Dispatcher takes each finding to every sink. See the package comment for the guarantees.
type Dispatcher struct {
	log     *slog.Logger
	routes  []*route
	backoff Backoff

	mu       sync.Mutex // serialises Dispatch, so direct sinks see one finding at a time, and orders it with Close
	closed   bool
	draining chan struct{} // closed by Close: deliver what is left, then stop

	runCtx context.Context // cancelled when Close gives up draining
	stop   context.CancelFunc
	wg     sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// route is a sink with its counters; spool is nil for a direct sink.
type route struct {
	sink                       Sink
	spool                      *Spool
	delivered, failed, dropped atomic.Uint64
	dropLog                    limiter
}

// NewDispatcher starts a delivery goroutine per spooled sink. Entries a previous run left in a spool are
// delivered before new ones.
func NewDispatcher(opts Options) (*Dispatcher, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	every := opts.LogEvery
	if every <= 0 {
		every = DefaultLogEvery
	}
	routes, err := buildRoutes(opts, every)
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	d := &Dispatcher{log: log, routes: routes, backoff: opts.Backoff, draining: make(chan struct{}), runCtx: ctx, stop: stop}
	for _, r := range routes {
		if r.spool == nil {
			continue
		}
		if n, size := r.spool.Len(); n > 0 {
			log.Info("delivering findings left in the spool by a previous run", "sink", r.sink.Name(), "entries", n, "bytes", size)
		}
		d.wg.Go(func() { d.run(r) })
	}
	return d, nil
}

// buildRoutes checks that every sink can be told apart in the stats and that every spooled one has a spool.
func buildRoutes(opts Options, every time.Duration) ([]*route, error) {
	var routes []*route
	seen := map[string]bool{}
	add := func(s Sink, sp *Spool) error {
		if seen[s.Name()] {
			return fmt.Errorf("two outputs named %q: their stats would mix (configure each output once)", s.Name())
		}
		seen[s.Name()] = true
		routes = append(routes, &route{sink: s, spool: sp, dropLog: limiter{every: every}})
		return nil
	}
	// Spools first: once a finding shows anywhere (stdout), it is already on disk for the slow sinks, so a
	// crash right after can lose nothing a reader has seen.
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

// Dispatch writes f to the direct sinks and appends it, fsynced, to each spooled sink's spool. A sink that
// cannot take it is counted, logged and reported in the joined error; the other sinks still get it.
func (d *Dispatcher) Dispatch(ctx context.Context, f finding.Finding) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("finding %s not written: the outputs are closed", f.SigMetadata.ID)
	}
	line, err := jsonLine(f)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range d.routes {
		if err := d.accept(ctx, r, f, line); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (d *Dispatcher) accept(ctx context.Context, r *route, f finding.Finding, line []byte) error {
	if r.spool != nil {
		if err := r.spool.Append(line); err != nil {
			r.dropped.Add(1)
			d.logDrop(r, "finding dropped: not spooled", err)
			return fmt.Errorf("output %s: %w", r.sink.Name(), err)
		}
		return nil
	}
	if err := r.sink.Deliver(ctx, f, line); err != nil {
		r.failed.Add(1)
		r.dropped.Add(1)
		d.logDrop(r, "finding dropped: output failed", err)
		return fmt.Errorf("output %s: %w", r.sink.Name(), err)
	}
	r.delivered.Add(1)
	return nil
}

// run delivers r's spool in order until Close: an entry is removed once delivered or refused for good, and
// retried with backoff otherwise, so that a later entry never overtakes an earlier one.
func (d *Dispatcher) run(r *route) {
	retry := 0
	for d.runCtx.Err() == nil {
		e, ok, err := r.spool.Peek()
		switch {
		case err != nil:
			d.quarantine(r, e.Seq, err)
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
		return false // Close stopped appends before it asked to drain, so empty stays empty
	default:
	}
	select {
	case <-r.spool.Appended():
		return true
	case <-d.draining:
		return true // look once more: an append may have come just before Close
	case <-d.runCtx.Done():
		return false
	}
}

// deliver sends one entry. It returns nil when the entry is done with (delivered, or dropped because the sink
// refused it for good or it was unreadable) and the error when it must be retried.
func (d *Dispatcher) deliver(r *route, e Entry) error {
	f, err := decodeLine(e.Line)
	if err != nil {
		d.quarantine(r, e.Seq, err)
		return nil
	}
	err = r.sink.Deliver(d.runCtx, f, e.Line)
	switch {
	case err == nil:
		r.delivered.Add(1)
		d.remove(r, e.Seq)
		return nil
	case d.runCtx.Err() != nil:
		return err // Close gave up in the middle: the sink did not fail
	case IsPermanent(err):
		r.failed.Add(1)
		r.dropped.Add(1)
		d.logDrop(r, "finding dropped: the output refused it", err)
		d.remove(r, e.Seq)
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

func (d *Dispatcher) remove(r *route, seq uint64) {
	if err := r.spool.Remove(seq); err != nil {
		// The entry is out of the index, so delivery goes on; the file left behind is sent again next start.
		d.log.Error("output spool", "sink", r.sink.Name(), "err", err)
	}
}

// quarantine takes an unreadable entry out of the way so that it cannot block the ones behind it.
func (d *Dispatcher) quarantine(r *route, seq uint64, cause error) {
	r.dropped.Add(1)
	err := r.spool.Quarantine(seq)
	d.log.Error("unreadable spool entry dropped, kept as *.bad for inspection", "sink", r.sink.Name(),
		"dir", r.spool.Dir(), "seq", seq, "err", errors.Join(cause, err))
}

// logDrop logs a dropped finding at most once per LogEvery per sink, with the number not logged since.
func (d *Dispatcher) logDrop(r *route, msg string, err error) {
	if unlogged, ok := r.dropLog.allow(); ok {
		d.log.Error(msg, "sink", r.sink.Name(), "err", err, "dropped_total", r.dropped.Load(), "unlogged", unlogged)
	}
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

// Stats is each sink's state, direct sinks first, in the order of the Options.
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

// Close stops accepting findings, delivers what the spools hold until ctx ends, and then closes the sinks and
// spools. What is not delivered stays on disk for the next start.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.closeOnce.Do(func() { d.closeErr = d.close(ctx) })
	return d.closeErr
}

func (d *Dispatcher) close(ctx context.Context) error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	close(d.draining)
	done := make(chan struct{})
	go func() {
		d.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		d.stop() // cancels the deliveries in flight and the backoff waits
		<-done
	}
	d.stop() // releases the context when draining finished first
	var errs []error
	for _, r := range d.routes {
		if r.spool != nil {
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

// limiter lets one event through per interval and counts the others.
type limiter struct {
	every    time.Duration
	mu       sync.Mutex // Dispatch and a delivery goroutine both drop findings
	last     time.Time  // zero until the first log
	unlogged uint64
}

func (l *limiter) allow() (unlogged uint64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.unlogged++
		return 0, false
	}
	unlogged, l.unlogged = l.unlogged, 0
	l.last = now
	return unlogged, true
}
