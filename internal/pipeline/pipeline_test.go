package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"escapewatch/internal/enrich"
	"escapewatch/internal/event"
	"escapewatch/internal/metrics"
	"escapewatch/internal/output"
	"escapewatch/internal/rule"
	"escapewatch/internal/suppress"
)

// rig is a Pipeline with the real stages: the default rules, an allowlist, an aggregator, a dispatcher writing
// JSON lines to out, and metrics, on a clock the test moves.
type rig struct {
	p     *Pipeline
	d     *output.Dispatcher
	out   *lockedBuffer
	m     *metrics.Metrics
	clock *clock
}

// clock is the aggregation's clock, which the test moves while the rules stage reads it.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newRig(t *testing.T, allow suppress.Allowlist, window time.Duration, w io.Writer, now func() time.Time) *rig {
	t.Helper()
	scope, err := rule.ParseScope("container,namespaced")
	if err != nil {
		t.Fatal(err)
	}
	eng, err := rule.NewEngine(rule.Default(), scope)
	if err != nil {
		t.Fatal(err)
	}
	std, err := output.NewStdout(w, output.FormatJSON, false)
	if err != nil {
		t.Fatal(err)
	}
	out, err := output.NewDispatcher(output.Options{Direct: []output.Sink{std}})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{d: out, m: metrics.New("test", metrics.Sources{}), clock: &clock{now: time.Unix(1_800_000_000, 0)}}
	r.out, _ = w.(*lockedBuffer)
	flushEvery := time.Hour // the test flushes when it means to
	if now == nil {
		now = r.clock.Now
	} else {
		flushEvery = 10 * time.Millisecond
	}
	r.p = New(Options{Engine: eng, Allow: allow, Window: window, Out: out, Metrics: r.m, Now: now, FlushEvery: flushEvery})
	t.Cleanup(r.finish)
	return r
}

// finish ends the pipeline, then the outputs, which write what they were given.
func (r *rig) finish() {
	r.p.Close()
	r.d.Close(context.Background())
}

// open is a namespaced process pid opening path for writing: TRC-1010 fires.
func open(pid int, path string) *event.Event {
	return &event.Event{
		EventName: event.SecurityFileOpen, HostProcessID: pid, ProcessName: "sh", Timestamp: pid,
		Origin: event.OriginNamespaced, Action: event.ActionAlert, Executable: event.File{Path: "/usr/bin/dash"},
		Args: []event.Argument{
			{ArgMeta: event.ArgMeta{Name: "pathname", Type: "const char*"}, Value: path},
			{ArgMeta: event.ArgMeta{Name: "flags", Type: "int"}, Value: int32(0o1)}, // O_WRONLY
		},
	}
}

const agent = "/tmp/cgrp/release_agent"

// A step acts on the rig: events arrive, the clock moves, aggregates are flushed.
type step func(*rig)

func events(n, pid int) step {
	return func(r *rig) {
		for range n {
			r.p.Event(open(pid, agent))
		}
	}
}

// after moves the clock once the events before it went through the rules.
func after(d time.Duration) step {
	return func(r *rig) {
		r.p.control(control{})
		r.clock.add(d)
	}
}

func flush(final bool) step { return func(r *rig) { r.p.control(control{flush: true, final: final}) } }

// written is one line the outputs got: the process and, for an aggregate, the repeats it stands for.
type written struct{ pid, repeats int }

func TestPipeline(t *testing.T) {
	tests := []struct {
		name        string
		allow       suppress.Allowlist
		window      time.Duration
		steps       []step
		want        []written
		wantMetrics []string // series and values in the exposition format; absent series are 0
	}{
		{
			name: "finding written", window: time.Minute, steps: []step{events(1, 10)},
			want: []written{{10, 0}},
			wantMetrics: []string{`escapewatch_events_total{event="security_file_open"} 1`,
				`escapewatch_findings_total{action="alert",rule="TRC-1010"} 1`},
		},
		{
			name: "matched by an allow entry: counted, not written", window: time.Minute,
			allow: suppress.Allowlist{{ProcessName: "sh", Pathname: agent}}, steps: []step{events(2, 10)},
			wantMetrics: []string{`escapewatch_events_total{event="security_file_open"} 2`,
				`escapewatch_findings_suppressed_total{reason="allow",rule="TRC-1010"} 2`},
		},
		{
			name: "an allow entry for another process", window: time.Minute,
			allow: suppress.Allowlist{{ProcessName: "systemd"}}, steps: []step{events(1, 10)},
			want:        []written{{10, 0}},
			wantMetrics: []string{`escapewatch_findings_total{action="alert",rule="TRC-1010"} 1`},
		},
		{
			name: "repeats folded, written with their count when the window closes", window: time.Minute,
			steps: []step{events(4, 10), flush(false), after(30 * time.Second), flush(false), after(31 * time.Second), flush(false)},
			want:  []written{{10, 0}, {10, 3}},
			wantMetrics: []string{`escapewatch_findings_suppressed_total{reason="aggregated",rule="TRC-1010"} 3`,
				`escapewatch_findings_total{action="alert",rule="TRC-1010"} 2`},
		},
		{
			name: "repeats folded, written with their count at the final flush", window: time.Minute,
			steps: []step{events(3, 10), events(2, 11), flush(true)},
			want:  []written{{10, 0}, {11, 0}, {10, 2}, {11, 1}},
			wantMetrics: []string{`escapewatch_findings_suppressed_total{reason="aggregated",rule="TRC-1010"} 3`,
				`escapewatch_findings_total{action="alert",rule="TRC-1010"} 4`},
		},
		{
			name:   "a repeat after the window is written at once, and the closed aggregate with the next flush",
			window: time.Minute, steps: []step{events(2, 10), after(time.Minute), events(1, 10), flush(false)},
			want: []written{{10, 0}, {10, 0}, {10, 1}},
			wantMetrics: []string{`escapewatch_findings_suppressed_total{reason="aggregated",rule="TRC-1010"} 1`,
				`escapewatch_findings_total{action="alert",rule="TRC-1010"} 3`},
		},
		{
			name: "no window: every repeat written", steps: []step{events(3, 10), flush(true)},
			want:        []written{{10, 0}, {10, 0}, {10, 0}},
			wantMetrics: []string{`escapewatch_findings_total{action="alert",rule="TRC-1010"} 3`},
		},
		{
			name: "not a finding: counted as an event only", window: time.Minute,
			steps:       []step{func(r *rig) { r.p.Event(open(10, "/tmp/cgrp/notify_on_release")) }, flush(true)},
			wantMetrics: []string{`escapewatch_events_total{event="security_file_open"} 1`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, tt.allow, tt.window, &lockedBuffer{}, nil)
			for _, s := range tt.steps {
				s(r)
			}
			r.finish()
			if got := r.out.findings(t); !slices.Equal(got, tt.want) {
				t.Errorf("written %v, want %v", got, tt.want)
			}
			body := scrape(t, r.m)
			for _, m := range tt.wantMetrics {
				if !strings.Contains(body, "\n"+m+"\n") {
					t.Errorf("metrics lack %s", m)
				}
			}
			for _, name := range []string{"escapewatch_findings_total", "escapewatch_findings_suppressed_total"} {
				if strings.Contains(body, "\n"+name+"{") && !mentions(tt.wantMetrics, name+"{") {
					t.Errorf("metrics have %s series, want none:\n%s", name, grep(body, name))
				}
			}
		})
	}
}

// TestWriteErrorCounted: a write that fails is counted for its output, and the next findings are still tried.
func TestWriteErrorCounted(t *testing.T) {
	w := &lockedBuffer{fail: errors.New("disk full")}
	r := newRig(t, nil, time.Minute, w, nil)
	events(1, 10)(r)
	events(1, 11)(r)
	r.finish()
	if s := r.d.Stats()[0]; s.Failed != 2 || s.Dropped != 2 {
		t.Errorf("stdout stats %+v, want 2 failed and dropped", s)
	}
	if body := scrape(t, r.m); !strings.Contains(body, `escapewatch_findings_total{action="alert",rule="TRC-1010"} 2`) {
		t.Errorf("metrics: %s", grep(body, "escapewatch_findings_total"))
	}
}

// TestFlushEvery: the rules stage writes an aggregate once its window closed, on the real clock, by itself.
func TestFlushEvery(t *testing.T) {
	w := &lockedBuffer{}
	r := newRig(t, nil, 50*time.Millisecond, w, time.Now)
	events(3, 10)(r)
	deadline := time.Now().Add(10 * time.Second)
	for got := w.findings(t); len(got) < 2; got = w.findings(t) {
		if time.Now().After(deadline) {
			t.Fatalf("written %v after 10s, want the finding and an aggregate of 2", got)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got, want := w.findings(t), []written{{10, 0}, {10, 2}}; !slices.Equal(got, want) {
		t.Errorf("written %v, want %v", got, want)
	}
}

// stuckWriter blocks every write until released: a stdout that nobody reads.
type stuckWriter struct {
	release chan struct{}
	lockedBuffer
}

func (w *stuckWriter) Write(p []byte) (int, error) {
	<-w.release
	return w.lockedBuffer.Write(p)
}

// escapeExec is the kernel starting a release agent it judged to be the escape: EW-1004 fires.
func escapeExec(pid int) *event.Event {
	return &event.Event{
		EventName: event.UsermodeHelperExec, HostProcessID: pid, ProcessName: "agent", Timestamp: pid, Origin: event.OriginHost,
		Args: []event.Argument{
			{ArgMeta: event.ArgMeta{Name: "pathname", Type: "const char*"}, Value: "/payload"},
			{ArgMeta: event.ArgMeta{Name: "escape", Type: "bool"}, Value: true},
		},
	}
}

// With an output stuck, a flood of events never blocks the sensor's reader (Event returns at once, every time;
// were it to wait, this test would hang), every queue stays within its bound, the losses are counted and
// logged once, and the escape that follows the flood is written once the output moves again.
func TestFloodWithStuckOutput(t *testing.T) {
	const flood = 20000
	w := &stuckWriter{release: make(chan struct{})}
	scope, err := rule.ParseScope("container,namespaced")
	if err != nil {
		t.Fatal(err)
	}
	eng, err := rule.NewEngine(rule.Default(), scope)
	if err != nil {
		t.Fatal(err)
	}
	std, err := output.NewStdout(w, output.FormatJSON, false)
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	d, err := output.NewDispatcher(output.Options{Logger: logger, Direct: []output.Sink{std}, QueueLen: 16, LogEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	p := New(Options{Engine: eng, Out: d, Metrics: metrics.New("test", metrics.Sources{}), Logger: logger,
		EventQueue: 32, RuleQueue: 32, LogEvery: time.Hour})
	for pid := range flood {
		p.Event(open(pid, agent)) // a TRC-1010 each: no two alike, nothing folded
	}
	p.Event(escapeExec(flood))
	for i, st := range p.Stats() {
		if st.Len > 32 || i == 0 && st.Pushed != flood+1 {
			t.Errorf("stage %s: %+v; want at most 32 waiting (and before enrichment, all %d pushed)", st.Stage, st.Stats, flood+1)
		}
	}
	p.Close()
	close(w.release)
	d.Close(context.Background())

	got := w.findings(t)
	if !slices.Contains(got, written{pid: flood}) {
		t.Errorf("the escape (pid %d) was not written; written: %v", flood, got)
	}
	shed := uint64(0)
	for _, st := range p.Stats() {
		shed += st.Shed
	}
	dropped := d.Stats()[0].Dropped
	if total := uint64(len(got)) + shed + dropped; total != flood+1 {
		t.Errorf("%d written + %d events shed + %d findings dropped = %d, want every one of the %d accounted for",
			len(got), shed, dropped, total, flood+1)
	}
	if c := strings.Count(logs.buf.String(), "findings lost"); c < 1 || c > 2 {
		t.Errorf("%d lines about lost findings, want 1 or 2 (the first, the rest at the end)", c)
	}
	if c := strings.Count(logs.buf.String(), "events shed"); shed > 0 && (c < 1 || c > 4) {
		t.Errorf("%d lines about shed events, want 1 or 2 per stage", c)
	}
}

// The enrichment stage adds what the container's runtime says (here a Docker API on a unix socket).
func TestEnrichment(t *testing.T) {
	const id = "4f2a9c1e7b3d5a6f8e9d0c1b2a3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f"
	socket := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/containers/"+id+"/json" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, `{"Name":"/web","Image":"sha256:abc","Config":{"Image":"nginx:1.27","Labels":{}}}`)
	}))
	srv.Listener = l
	srv.Start()
	defer srv.Close()
	runtimes := enrich.NewRuntimes(enrich.RuntimeOptions{DockerSocket: socket, ContainerdSocket: filepath.Join(t.TempDir(), "absent.sock"),
		MaxWait: 10 * time.Second})
	defer runtimes.Close()

	r := newRig(t, nil, 0, &lockedBuffer{}, nil)
	r.p.Close() // replaced by one with the runtimes
	r.p = New(Options{Engine: r.p.eng, Out: r.d, Metrics: r.m, Runtimes: runtimes})
	ev := open(10, agent)
	ev.Origin, ev.ContainerID = event.OriginContainer, id
	ev.Container = event.Container{ID: id, Runtime: enrich.RuntimeDocker}
	r.p.Event(ev)
	r.finish()
	var f struct{ Event event.Event }
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.out.buf.String())), &f); err != nil {
		t.Fatalf("%v: %s", err, r.out.buf.String())
	}
	if c := f.Event.Container; c.Name != "web" || c.ImageName != "nginx:1.27" || c.ImageDigest != "sha256:abc" {
		t.Errorf("container %+v, want web, nginx:1.27, sha256:abc from the runtime", c)
	}
}

// lockedBuffer is a writer the test reads while the pipeline writes; with fail set, every write fails.
type lockedBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	fail error
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return 0, b.fail
	}
	return b.buf.Write(p)
}

// findings decodes the JSON lines written so far.
func (b *lockedBuffer) findings(t *testing.T) []written {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []written
	for _, line := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var f struct {
			Event     struct{ HostProcessID int }
			Aggregate *struct{ Count int }
		}
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		w := written{pid: f.Event.HostProcessID}
		if f.Aggregate != nil {
			w.repeats = f.Aggregate.Count
		}
		out = append(out, w)
	}
	return out
}

// scrape gathers the metrics as Prometheus would, in the text exposition format.
func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body.String())
	}
	return "\n" + rec.Body.String()
}

func mentions(list []string, s string) bool {
	for _, l := range list {
		if strings.HasPrefix(l, s) {
			return true
		}
	}
	return false
}

func grep(body, prefix string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
