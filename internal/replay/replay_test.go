package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"

	"escapewatch/internal/event"
	"escapewatch/internal/rule"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func newEngine(t testing.TB) *rule.Engine {
	t.Helper()
	eng, err := rule.NewEngine(rule.Default(), rule.ReplayScope)
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(name, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n got:\n%s\nwant:\n%s", name, got, want)
	}
}

// TestRunGolden replays a Tracee v0.24 stream (container and host events,
// flags as integers and as strings, blank and malformed lines) and locks
// both outputs in golden files.
func TestRunGolden(t *testing.T) {
	in, err := os.Open("testdata/tracee_stream.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	eng := newEngine(t)
	var out, errs bytes.Buffer
	st, err := Run(context.Background(), in, &out, &errs, eng)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "testdata/findings.golden.jsonl", out.Bytes())
	golden(t, "testdata/errors.golden.txt", errs.Bytes())

	if want := (Stats{Lines: 21, Events: 15, Findings: 4, Failed: 4}); st != want {
		t.Errorf("Stats = %+v, want %+v", st, want)
	}
	if got := eng.Stats().Rules["TRC-1010"]; got.Findings != 4 || got.SkippedArgs != 1 {
		t.Errorf("engine TRC-1010 stats = %+v, want 4 findings and 1 skipped", got)
	}
	// Each finding carries its input line's event unchanged.
	for i, line := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
		var f struct{ Event json.RawMessage }
		if err := json.Unmarshal(line, &f); err != nil {
			t.Fatalf("finding %d: %v", i+1, err)
		}
		if !bytes.Contains(mustRead(t, "testdata/tracee_stream.jsonl"), f.Event) {
			t.Errorf("finding %d's event is not an input line byte for byte:\n%s", i+1, f.Event)
		}
	}
}

func mustRead(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRunLineErrors fixes the format of the line errors.
func TestRunLineErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"garbage", "hello\n", "line 1: invalid JSON: invalid character 'h' looking for beginning of value\n"},
		{"truncated", "\n{\"eventName\":\"x\"\n", "line 2: invalid JSON: unexpected EOF\n"},
		{"array", "[]", "line 1: not a JSON object: found array\n"},
		{"mistyped field", `{"processId":"1"}`, "line 1: invalid event: json: cannot unmarshal string into Go struct field Event.processId of type int\n"},
		{"two objects on a line", `{} {}`, "line 1: invalid JSON: trailing data after the object\n"},
		{"blank lines are not errors", "\n \n\t\r\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errs bytes.Buffer
			if _, err := Run(context.Background(), strings.NewReader(tt.in), &out, &errs, newEngine(t)); err != nil {
				t.Fatal(err)
			}
			if errs.String() != tt.want {
				t.Errorf("errs = %q, want %q", errs.String(), tt.want)
			}
		})
	}
}

// containerWrite is a minimal Tracee line for a container writing path.
func containerWrite(t *testing.T, path string) []byte {
	t.Helper()
	ev := event.Event{
		EventName:    event.SecurityFileOpen,
		EventID:      event.SecurityFileOpenID,
		ContainerID:  "c0ffee",
		Container:    event.Container{ID: "c0ffee"},
		ContextFlags: event.ContextFlags{ContainerStarted: true},
		Args: []event.Argument{
			{ArgMeta: event.ArgMeta{Name: "pathname", Type: "const char*"}, Value: path},
			{ArgMeta: event.ArgMeta{Name: "flags", Type: "string"}, Value: "O_WRONLY|O_TRUNC"},
		},
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRunLongLines(t *testing.T) {
	long := containerWrite(t, "/"+strings.Repeat("d", 200<<10)+"/release_agent") // past any 64 KiB limit
	tests := []struct {
		name string
		in   []byte
	}{
		{"long line", append(append([]byte{}, long...), '\n')},
		{"long last line without newline", long},
		{"CRLF line", append(append([]byte{}, long...), '\r', '\n')},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errs bytes.Buffer
			st, err := Run(context.Background(), bytes.NewReader(tt.in), &out, &errs, newEngine(t))
			if err != nil {
				t.Fatal(err)
			}
			if st != (Stats{Lines: 1, Events: 1, Findings: 1}) || errs.Len() != 0 {
				t.Errorf("Stats = %+v, errs %q", st, errs.String())
			}
		})
	}
}

// cancelOnWrite cancels the replay when the first finding is written.
type cancelOnWrite struct {
	bytes.Buffer
	cancel context.CancelFunc
}

func (w *cancelOnWrite) Write(p []byte) (int, error) {
	w.cancel()
	return w.Buffer.Write(p)
}

func TestRunCancel(t *testing.T) {
	line := containerWrite(t, "/tmp/cgrp/release_agent")
	in := bytes.Repeat(append(line, '\n'), 3)

	ctx, cancel := context.WithCancel(context.Background())
	out := &cancelOnWrite{cancel: cancel}
	st, err := Run(ctx, bytes.NewReader(in), out, io.Discard, newEngine(t))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v, want context.Canceled", err)
	}
	if st.Lines != 1 || st.Findings != 1 {
		t.Errorf("Stats = %+v, want to stop after the first line", st)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("device gone") }

func TestRunIOErrors(t *testing.T) {
	finding := append(containerWrite(t, "/tmp/cgrp/release_agent"), '\n')
	tests := []struct {
		name      string
		in        io.Reader
		out, errs io.Writer
		want      string
	}{
		{"out fails", bytes.NewReader(finding), failingWriter{}, io.Discard, "writing finding for line 1: disk full"},
		{"errs fails", strings.NewReader("oops\n"), io.Discard, failingWriter{}, "reporting line 1: disk full"},
		{"in fails", io.MultiReader(bytes.NewReader(finding), failingReader{}), io.Discard, io.Discard, "reading line 2: device gone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Run(context.Background(), tt.in, tt.out, tt.errs, newEngine(t))
			if err == nil || err.Error() != tt.want {
				t.Errorf("error = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestRunLineBound: a line longer than the bound is reported with its number and skipped, and the lines after
// it are replayed; the bound counts the line's bytes without its newline.
func TestRunLineBound(t *testing.T) {
	event := string(containerWrite(t, "/tmp/cgrp/release_agent"))
	max := len(event) // an event line exactly at the bound passes
	over := event + " "
	tests := []struct {
		name      string
		in        string
		wantStats Stats
		wantErrs  string
	}{
		{"at the bound", event + "\n" + event, Stats{Lines: 2, Events: 2, Findings: 2}, ""},
		{"one byte over, then an event", over + "\n" + event + "\n", Stats{Lines: 2, Events: 1, Findings: 1, Failed: 1},
			fmt.Sprintf("line 1: longer than %d bytes (the most one event may take); skipped\n", max)},
		{"over in the middle", event + "\n" + strings.Repeat("x", 5*max) + "\n" + event + "\n",
			Stats{Lines: 3, Events: 2, Findings: 2, Failed: 1}, fmt.Sprintf("line 2: longer than %d bytes", max)},
		{"over at the end without newline", event + "\n" + over, Stats{Lines: 2, Events: 1, Findings: 1, Failed: 1},
			fmt.Sprintf("line 2: longer than %d bytes", max)},
		{"CRLF at the bound is over: the CR counts", event + "\r\n", Stats{Lines: 1, Failed: 1}, "line 1: longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errs bytes.Buffer
			st, err := run(context.Background(), strings.NewReader(tt.in), &out, &errs, newEngine(t), config{maxLine: max})
			if err != nil {
				t.Fatal(err)
			}
			if st != tt.wantStats {
				t.Errorf("Stats = %+v, want %+v", st, tt.wantStats)
			}
			if !strings.HasPrefix(errs.String(), tt.wantErrs) || (tt.wantErrs == "") != (errs.Len() == 0) {
				t.Errorf("errs %q, want %q", errs.String(), tt.wantErrs)
			}
		})
	}
}

// repeatReader yields n bytes of b, never holding more than b.
type repeatReader struct {
	b byte
	n int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	k := min(len(p), r.n)
	for i := range p[:k] {
		p[i] = r.b
	}
	r.n -= k
	return k, nil
}

// TestRunHugeLineMemory: a line of 64 MiB (a hostile file) costs a replay no more than the bound, not the line:
// it is reported, the next line is replayed, and the bytes allocated stay far below the line's size.
func TestRunHugeLineMemory(t *testing.T) {
	const huge = 64 << 20
	event := append(containerWrite(t, "/tmp/cgrp/release_agent"), '\n')
	in := io.MultiReader(bytes.NewReader(event), &repeatReader{b: 'x', n: huge}, strings.NewReader("\n"), bytes.NewReader(event))
	var out, errs bytes.Buffer
	eng := newEngine(t)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	st, err := Run(context.Background(), in, &out, &errs, eng)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Stats{Lines: 3, Events: 2, Findings: 2, Failed: 1}); st != want {
		t.Errorf("Stats = %+v, want %+v", st, want)
	}
	if want := fmt.Sprintf("line 2: longer than %d bytes", MaxLineBytes); !strings.HasPrefix(errs.String(), want) {
		t.Errorf("errs %q, want %q", errs.String(), want)
	}
	// What the replay may allocate: the reader's buffer, a line up to the bound while it doubles (about twice
	// the bound), and the two events' decoding and findings; 8 times the bound leaves room for the runtime.
	// Reading the huge line whole would take at least its 64 MiB.
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d bytes allocated to replay a %d-byte line between two events", alloc, huge)
	if alloc > 8*MaxLineBytes {
		t.Errorf("the replay allocated %d bytes for a %d-byte line, want at most %d", alloc, huge, 8*MaxLineBytes)
	}
}
