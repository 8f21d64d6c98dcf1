// Package output is where findings go: stdout (JSON lines or a table for terminals), an append-only file, and
// an HTTP(S) webhook.
//
// A finding is never lost because a sink is slow or down. Fast sinks (stdout, file) are written synchronously
// by Dispatcher.Dispatch. A slow sink (the webhook) is fed from its own Spool: Dispatch appends the finding to
// the spool and fsyncs it before returning, and a goroutine per spooled sink delivers the spool's entries in
// order, retrying with exponential backoff, and removes an entry only after its sink took it. Delivery is at
// least once: a crash between a delivery and the removal of its entry sends that finding again at the next
// start, so a receiver may see duplicates but never misses a finding.
//
// # Spool design
//
// A spool is a directory holding one file per finding, named by a monotonic sequence number
// (00000000000000000042.json) and containing the finding's JSON line. An entry is written to a temporary file,
// fsynced, renamed to its final name and the directory fsynced, so an entry is either complete or absent after
// a crash; leftover temporary files are removed when the spool is opened. The order of delivery is the order of
// the sequence numbers, and the next number continues after the highest one found on disk, so a restart
// delivers what the previous run left before anything new. Removing a delivered entry is a plain unlink: if a
// crash undoes it, the entry is delivered again (a duplicate, allowed), never lost. This needs no cursor file
// and no parsing of partial segments; its cost, an fsync of a file and of the directory per finding, is small
// for findings, which are rare. An entry that cannot be read or decoded is renamed to *.bad, counted as dropped
// and logged, so that it cannot block the entries behind it. A lock file (flock) keeps two processes from
// sharing a spool.
//
// The spool is bounded by bytes (the JSON lines, not the file system's blocks) and optionally by entries.
// When it is full the NEW finding is dropped for that sink, counted and logged (rate limited): the oldest
// entries are the ones a receiver that comes back needs first to rebuild the timeline, and dropping at the
// tail keeps delivery strictly in order.
package output

import (
	"context"
	"encoding/json"
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

// jsonLine is the one encoding of a finding every sink shares: json.Marshal plus a newline.
func jsonLine(f finding.Finding) ([]byte, error) {
	b, err := json.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("encode finding %s as JSON: %w", f.SigMetadata.ID, err)
	}
	return append(b, '\n'), nil
}
