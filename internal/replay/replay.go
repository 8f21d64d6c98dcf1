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
	"slices"

	"escapewatch/internal/event"
	"escapewatch/internal/rule"
)

// MaxLineBytes bounds one line, its newline not counted: a Tracee event is a few KiB (its paths are at most 4 KiB
// each), so 1 MiB is far beyond any real one, and a replay of a hostile file holds at most this much of a line.
const MaxLineBytes = 1 << 20

// Stats counts what a replay read and wrote.
type Stats struct {
	Lines    int // lines read, blank ones included
	Events   int // lines that are events (decoded, or certain to decode: see Run)
	Findings int // findings written to out
	Failed   int // lines that were not Tracee events, too long ones included
}

// Run reads Tracee JSON lines from in and writes each finding to out as one
// JSON line. A line that is not an event, or is longer than MaxLineBytes, is
// reported to errs as "line N: <problem>" and skipped; blank lines are
// skipped silently. Run returns early with ctx's error when ctx is done
// (checked between lines), or with an error when in cannot be read or out or
// errs cannot be written.
//
// A line that is certainly an event Decode accepts, and whose name no rule selects, is counted without being
// decoded (see scanEvent): decoding is most of a replay's cost, and Tracee's events are mostly of that sort.
func Run(ctx context.Context, in io.Reader, out io.Writer, errs io.Writer, eng *rule.Engine) (Stats, error) {
	return run(ctx, in, out, errs, eng, config{maxLine: MaxLineBytes})
}

// config is what tests change in a replay.
type config struct {
	maxLine   int  // the line bound: MaxLineBytes
	decodeAll bool // decode every line, as before scanEvent: the reference the fast path must agree with
}

// run is Run with its config.
func run(ctx context.Context, in io.Reader, out io.Writer, errs io.Writer, eng *rule.Engine, cfg config) (Stats, error) {
	var st Stats
	r := bufio.NewReaderSize(in, 64<<10)
	enc := json.NewEncoder(out)
	var buf []byte
	for {
		if err := ctx.Err(); err != nil {
			return st, fmt.Errorf("replay stopped after line %d: %w", st.Lines, err)
		}
		line, tooLong, readErr := readLine(r, buf[:0], cfg.maxLine)
		buf = line
		if len(line) > 0 || tooLong {
			st.Lines++
			if tooLong {
				st.Failed++
				if _, err := fmt.Fprintf(errs, "line %d: longer than %d bytes (the most one event may take); skipped\n", st.Lines, cfg.maxLine); err != nil {
					return st, fmt.Errorf("reporting line %d: %w", st.Lines, err)
				}
			} else if err := replayLine(line, &st, enc, errs, eng, !cfg.decodeAll); err != nil {
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

// readLine appends the next line of r to buf, its newline included, and returns it. A line longer than limit
// bytes (its newline not counted) is read to its end but not kept: tooLong is set and line is empty, so memory
// stays within r's buffer and about twice limit whatever the input.
func readLine(r *bufio.Reader, buf []byte, limit int) (line []byte, tooLong bool, err error) {
	for {
		chunk, err := r.ReadSlice('\n')
		if !tooLong {
			n := len(buf) + len(chunk)
			if bytes.HasSuffix(chunk, []byte("\n")) {
				n--
			}
			if n > limit {
				tooLong, buf = true, buf[:0]
			} else {
				// Double the buffer when it is short: append's gentler growth for large slices would allocate
				// about five times the line on the way to the bound.
				if cap(buf)-len(buf) < len(chunk) {
					buf = slices.Grow(buf, max(len(chunk), cap(buf)))
				}
				buf = append(buf, chunk...)
			}
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return buf, tooLong, err
		}
	}
}

// replayLine handles line number st.Lines; fast lets it skip the lines no rule reads without decoding them.
func replayLine(line []byte, st *Stats, enc *json.Encoder, errs io.Writer, eng *rule.Engine, fast bool) error {
	n := st.Lines
	if len(bytes.TrimSpace(line)) == 0 {
		return nil
	}
	if fast {
		// Decode would accept the line, and Process would do nothing with the event but count it.
		if name, ok := scanEvent(line); ok && eng.SkipUnrouted(name) {
			st.Events++
			return nil
		}
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
