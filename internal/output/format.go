package output

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"golang.org/x/sys/unix"

	"escapewatch/internal/event"
	"escapewatch/internal/finding"
)

// Output formats for stdout.
const (
	FormatJSON  = "json"
	FormatTable = "table"
)

// DefaultFormat is the format for f when --output is not given: a table for a person at a terminal, JSON lines
// for a program reading a pipe or a file.
func DefaultFormat(f *os.File) string {
	if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
		return FormatTable
	}
	return FormatJSON
}

// NewStdout writes findings to w in format (json or table), one write per finding so that a reader sees each
// at once; colour adds ANSI colours to the table.
func NewStdout(w io.Writer, format string, colour bool) (Sink, error) {
	return newStdout(w, format, colour, time.Local)
}

func newStdout(w io.Writer, format string, colour bool, loc *time.Location) (Sink, error) {
	switch format {
	case FormatJSON, FormatTable:
		return &stdout{w: w, table: format == FormatTable, colour: colour, loc: loc}, nil
	default:
		return nil, fmt.Errorf("output format %q: unknown (use %s or %s)", format, FormatJSON, FormatTable)
	}
}

type stdout struct {
	w          io.Writer
	table      bool
	colour     bool
	loc        *time.Location
	headerDone bool
}

func (s *stdout) Name() string { return "stdout" }

func (s *stdout) Deliver(_ context.Context, f finding.Finding, line []byte) error {
	out := line
	if s.table {
		var b strings.Builder
		if !s.headerDone {
			writeHeader(&b, s.colour)
		}
		writeRow(&b, f, s.colour, s.loc)
		out = []byte(b.String())
	}
	if _, err := s.w.Write(out); err != nil {
		return fmt.Errorf("write finding to stdout: %w", err)
	}
	s.headerDone = true
	if fl, ok := s.w.(interface{ Flush() error }); ok {
		if err := fl.Flush(); err != nil {
			return fmt.Errorf("flush stdout: %w", err)
		}
	}
	return nil
}

func (s *stdout) Close() error { return nil }

// ANSI SGR sequences.
const (
	ansiReset   = "\x1b[0m"
	ansiBold    = "\x1b[1m"
	ansiBoldRed = "\x1b[1;31m"
	ansiYellow  = "\x1b[33m"
	ansiMagenta = "\x1b[35m"
	ansiCyan    = "\x1b[36m"
	ansiGreen   = "\x1b[32m"
)

// column is one field of the table: its heading and width (the last column has no width).
type column struct {
	head  string
	width int
}

var columns = []column{
	{"TIME", 25}, // RFC3339 with a numeric zone offset
	{"RULE", 9},
	{"SEV", 3},
	{"ORIGIN", 14}, // container-init
	{"ACTION", 6},
	{"CONTAINER", 12},
	{"PID/COMM", 23}, // 7-digit pid, '/', 15-character comm
	{"PATH", 0},
}

// cell is one field's text and the colour it is written in ("" for none).
type cell struct{ text, colour string }

func writeHeader(b *strings.Builder, colour bool) {
	cells := make([]cell, len(columns))
	for i, c := range columns {
		cells[i] = cell{c.head, ansiBold}
	}
	writeCells(b, cells, colour)
}

func writeRow(b *strings.Builder, f finding.Finding, colour bool, loc *time.Location) {
	ev := &f.Event
	sev, sevText := severity(f.SigMetadata.Properties)
	origin := event.OriginOf(ev)
	path := argPath(ev)
	if f.Aggregate != nil {
		path += fmt.Sprintf(" (+%d repeats)", f.Aggregate.Count)
	}
	writeCells(b, []cell{
		{time.Unix(0, int64(ev.Timestamp)).In(loc).Format(time.RFC3339), ""},
		{printable(f.SigMetadata.ID), ""},
		{sevText, severityColour(sev)},
		{origin, originColour(origin)},
		{orDash(ev.Action), actionColour(ev.Action)},
		{containerID(ev), ""},
		{fmt.Sprintf("%d/%s", pid(ev), printable(ev.ProcessName)), ""},
		{path, ""},
	}, colour)
}

// writeCells pads before colouring, so that escape sequences do not count towards the widths.
func writeCells(b *strings.Builder, cells []cell, colour bool) {
	for i, c := range cells {
		text := c.text
		if w := columns[i].width; w > 0 {
			text = fmt.Sprintf("%-*s", w, text)
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		if colour && c.colour != "" {
			text = c.colour + text + ansiReset
		}
		b.WriteString(text)
	}
	b.WriteByte('\n')
}

// severity is Properties["Severity"] and how the table shows it.
func severity(props map[string]any) (int64, string) {
	n, ok := finding.Severity(props)
	if !ok {
		if v, isNumber := props["Severity"].(json.Number); isNumber {
			return -1, printable(v.String())
		}
		return -1, "-"
	}
	return n, strconv.FormatInt(n, 10)
}

func severityColour(sev int64) string {
	switch {
	case sev >= 3:
		return ansiBoldRed
	case sev == 2:
		return ansiYellow
	default:
		return ""
	}
}

func originColour(origin string) string {
	switch origin {
	case event.OriginContainer, event.OriginContainerInit:
		return ansiMagenta
	case event.OriginNamespaced:
		return ansiCyan
	default:
		return ""
	}
}

// actionColour shows in green that the sensor stopped the operation.
func actionColour(action string) string {
	if action == event.ActionDenied || action == event.ActionKilled {
		return ansiGreen
	}
	return ""
}

func containerID(ev *event.Event) string {
	id := ev.Container.ID
	if id == "" {
		id = ev.ContainerID
	}
	if len(id) > 12 {
		id = id[:12]
	}
	return orDash(printable(id))
}

// pid is the host's pid, which is what an operator can act on; replayed events may only have the other.
func pid(ev *event.Event) int {
	if ev.HostProcessID != 0 {
		return ev.HostProcessID
	}
	return ev.ProcessID
}

// argPath is the file the rule matched: pathname for opens, new_path for renames.
func argPath(ev *event.Event) string {
	for _, name := range []string{"pathname", "new_path"} {
		if a, ok := ev.Arg(name); ok {
			if s, ok := a.Value.(string); ok {
				return printable(s)
			}
		}
	}
	return "-"
}

// printable quotes text that an attacker controls (paths, process names) when it holds anything but graphic
// characters, so that a file name cannot move the cursor, forge a row or change the terminal's state.
func printable(s string) string {
	for _, r := range s {
		if !unicode.IsGraphic(r) || r == unicode.ReplacementChar {
			return strconv.QuoteToGraphic(s)
		}
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
