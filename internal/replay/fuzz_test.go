package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"testing"

	"escapewatch/internal/event"
)

// replayed is what a replay wrote and counted.
type replayed struct {
	out, errs string
	stats     Stats
	engine    any // rule.Stats
	err       string
}

func replayWith(t testing.TB, in []byte, cfg config) replayed {
	t.Helper()
	eng := newEngine(t)
	var out, errs bytes.Buffer
	st, err := run(context.Background(), bytes.NewReader(in), &out, &errs, eng, cfg)
	r := replayed{out: out.String(), errs: errs.String(), stats: st, engine: eng.Stats()}
	if err != nil {
		r.err = err.Error()
	}
	return r
}

// checkFastPath fails t unless every line of in that scanEvent is certain of decodes, to the name it found,
// and a replay of in writes and counts what a replay decoding every line does. It returns how many lines
// scanEvent was certain of.
func checkFastPath(t testing.TB, in []byte) int {
	t.Helper()
	certain := 0
	for line := range bytes.Lines(in) {
		name, ok := scanEvent(line)
		if !ok {
			continue
		}
		certain++
		if !json.Valid(line) {
			t.Fatalf("scanEvent is certain of a line that is not JSON: %q", line)
		}
		ev, err := event.Decode(line)
		if err != nil {
			t.Fatalf("scanEvent is certain of a line Decode rejects: %q: %v", line, err)
		}
		if ev.EventName != string(name) {
			t.Fatalf("scanEvent found the name %q, Decode %q, in %q", name, ev.EventName, line)
		}
	}
	const limit = 1 << 16
	fast := replayWith(t, in, config{maxLine: limit})
	slow := replayWith(t, in, config{maxLine: limit, decodeAll: true})
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("replay of %q\nwith the fast path: %+v\ndecoding every line: %+v", in, fast, slow)
	}
	return certain
}

// TestFastPathAgrees: on the golden stream and on the benchmark's Tracee output, the fast path changes nothing
// a replay writes or counts, and it is certain of every well-formed line, so it does skip what it may.
func TestFastPathAgrees(t *testing.T) {
	golden := mustRead(t, "testdata/tracee_stream.jsonl")
	checkFastPath(t, golden)

	stream := traceeStream(t, 1<<20)
	lines := bytes.Count(stream, []byte("\n"))
	if certain := checkFastPath(t, stream); certain != lines {
		t.Errorf("scanEvent is certain of %d of %d Tracee lines, want all", certain, lines)
	}
}

// FuzzFastPath: whatever the input, the fast path skips only lines Decode accepts, with the name Decode
// finds, and a replay writes the same findings and line errors, and counts the same, as one that decodes
// every line. The input is in with insert put in at byte at: a few bytes mutated anywhere in a Tracee line
// (a space, a quote, a digit) find more than the mutations of a whole line do, which mostly break it.
func FuzzFastPath(f *testing.F) {
	add := func(in []byte) { f.Add(in, uint16(0), []byte(nil)) }
	for _, name := range []string{"testdata/tracee_stream.jsonl", "../event/testdata/tracee_v0.24.jsonl"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		for line := range bytes.Lines(data) {
			add(line)
		}
	}
	for line := range bytes.Lines(traceeStream(f, 64<<10)) {
		add(line)
	}
	// Escapes everywhere, for the fuzzer to turn into bad ones.
	add([]byte(`{"eventName":"openat","processName":"a\"b\\c\/d\b\f\n\r\t\u00e9","args":[{"name":"p","value":"\ud83d\ude00"}],"x\u0041":1}`))
	for _, c := range scanCases {
		if len(c.line) < 1000 { // not the deep nests: the fuzzer would spend its time copying them
			add([]byte(c.line))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte, at uint16, insert []byte) {
		i := int(at) % (len(in) + 1)
		checkFastPath(t, slices.Concat(in[:i], insert, in[i:]))
	})
}
