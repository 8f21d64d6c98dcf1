// Package replay runs Tracee's JSON event lines through escapewatch's rules,
// which is how escapewatch is checked against Tracee: the same events must
// give the same findings.
package replay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"escapewatch/internal/event"
	"escapewatch/internal/rule"
)

// Stats counts what a replay read and wrote.
type Stats struct {
	Lines    int // lines read, blank ones included
	Events   int // lines decoded into events
	Findings int // findings written to out
	Failed   int // lines that were not Tracee events
}

// Run reads Tracee JSON lines from in, of any length, and writes each
// finding to out as one JSON line. A line that is not an event is reported
// to errs as "line N: <problem>" and skipped; blank lines are skipped
// silently. Run returns early with ctx's error when ctx is done (checked
// between lines), or with an error when in cannot be read or out or errs
// cannot be written.
func Run(ctx context.Context, in io.Reader, out io.Writer, errs io.Writer, eng *rule.Engine) (Stats, error) {
	var st Stats
	r := bufio.NewReader(in)
	enc := json.NewEncoder(out)
	for {
		if err := ctx.Err(); err != nil {
			return st, fmt.Errorf("replay stopped after line %d: %w", st.Lines, err)
		}
		// ReadBytes grows its buffer as needed, unlike a Scanner's 64 KiB cap.
		line, readErr := r.ReadBytes('\n')
		if len(line) > 0 {
			st.Lines++
			if err := replayLine(line, &st, enc, errs, eng); err != nil {
				return st, err
			}
		}
		if errors.Is(readErr, io.EOF) {
			return st, nil
		}
		if readErr != nil {
			return st, fmt.Errorf("reading line %d: %w", st.Lines+1, readErr)
		}
	}
}

// replayLine handles line number st.Lines.
func replayLine(line []byte, st *Stats, enc *json.Encoder, errs io.Writer, eng *rule.Engine) error {
	n := st.Lines
	if len(bytes.TrimSpace(line)) == 0 {
		return nil
	}
	ev, err := event.Decode(line)
	if err != nil {
		st.Failed++
		if _, werr := fmt.Fprintf(errs, "line %d: %v\n", n, err); werr != nil {
			return fmt.Errorf("reporting line %d: %w", n, werr)
		}
		return nil
	}
	st.Events++
	for _, f := range eng.Process(&ev) {
		if err := enc.Encode(f); err != nil {
			return fmt.Errorf("writing finding for line %d: %w", n, err)
		}
		st.Findings++
	}
	return nil
}
