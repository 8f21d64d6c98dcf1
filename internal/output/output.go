// Package output is where findings go: stdout (JSON lines or a table for terminals), an append-only file, and
// an HTTP(S) webhook.
//
// No output waits for another, and none holds the sensor back. Dispatcher.Dispatch queues a finding and returns;
// a commit stage writes the findings waiting to each slow sink's Spool in one group commit, then queues them for
// each fast sink (stdout, file), which a goroutine per sink writes; a goroutine per spooled sink (the webhook)
// delivers the spool's entries in order, retrying with exponential backoff, and removes an entry only after its
// sink took it. Delivery is at least once: a crash between a delivery and the removal of its entry sends that
// finding again at the next start, so a receiver may see duplicates. A finding shows on stdout only once it is on
// disk for the slow sinks.
//
// Every queue and spool is bounded, so memory and disk stay bounded whatever a receiver does. When one is full,
// what goes is decided by finding.Rank: the oldest findings of the lowest rank below the newcomer's make room
// for it, or else the newcomer is shed. A flood of noise cannot push out the escape that follows it; a flood of
// equals keeps the oldest, which a receiver needs first to rebuild the timeline. Every finding lost is counted
// (SinkStats.Dropped) and logged at most once per LogEvery per sink, with the count since the last line; a
// spooled sink also gets, in its spool, a summary per rule of what it shed (a finding of rule ShedRuleID).
//
// # Spool design
//
// A spool is a directory of segment files, each holding the JSON lines of consecutive sequence numbers and
// named by the first (00000000000000000042.json). A commit writes its findings to one temporary file, fsyncs
// it, renames it to its final name and fsyncs the directory: the commit is whole or absent after a crash, at
// the cost of two fsyncs however many findings it holds (one per finding before; see BenchmarkSpoolCommit).
// Leftover temporary files are removed when the spool is opened. The order of delivery is the order of the
// sequence numbers, and the next number continues after the highest one on disk, so a restart delivers what
// the previous run left before anything new. A segment file is removed once every line of it is delivered; if
// a crash undoes that, or comes first, its lines are delivered again (duplicates, allowed), never lost. A
// segment that lost lines to shedding is rewritten as the runs of lines it keeps, each a segment of its own,
// so that the disk holds what the spool counts; the runs are durable before the old segment goes, and a crash
// in between leaves the old segment, which the next start keeps (its shed lines come back) while it removes
// the runs. An entry that cannot be read or decoded is kept as <seq>.json.bad, counted as dropped and logged,
// so that it cannot block the entries behind it. A lock file (flock) keeps two processes from sharing a
// spool.
//
// The spool is bounded by bytes (the JSON lines, not the file system's blocks) and optionally by entries,
// with a little room besides for the summaries of what it shed.
package output

import (
	"context"
	"errors"
	"fmt"

	"escapewatch/internal/finding"
)

// Sink receives findings. Deliver gets the finding and its JSON line (json.Marshal(f) + "\n"), which is the
// authoritative encoding: a spooled sink gets f decoded from the spooled line (numbers in maps are json.Number
// there). A Sink need not be safe for concurrent use: the Dispatcher calls each sink from one goroutine at a
// time.
type Sink interface {
	Name() string
	Deliver(ctx context.Context, f finding.Finding, line []byte) error
	Close() error
}

// SinkStats is one sink's delivery state, with the fields of metrics.SinkStats so that one converts to the
// other. Failed counts failed Deliver calls (each is one attempt for a webhook with MaxRetries 0), Dropped the
// findings the sink will never get: its spool was full, the receiver refused them for good (also counted in
// Failed), or a synchronous sink failed to write them.
type SinkStats struct {
	Name                       string
	Delivered, Failed, Dropped uint64
	SpoolEntries, SpoolBytes   int64
}

// permanentError marks a failure that retrying cannot fix, such as an HTTP 400.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as a failure that retrying cannot fix: the Dispatcher drops the finding for that sink
// instead of retrying it.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or an error it wraps, was marked by Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// jsonLine is the one encoding of a finding every sink shares: json.Marshal plus a newline. It calls
// f.MarshalJSON itself, which gives the same bytes: json.Marshal would only compact them once more, which
// costs a third of the encoding.
func jsonLine(f finding.Finding) ([]byte, error) {
	b, err := f.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("encode finding %s as JSON: %w", f.SigMetadata.ID, err)
	}
	return append(b, '\n'), nil
}
