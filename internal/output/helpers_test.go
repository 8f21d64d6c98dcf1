package output

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"escapewatch/internal/event"
	"escapewatch/internal/finding"
)

// fast keeps retries quick in tests; the production defaults are 250ms..30s.
var fast = Backoff{Min: 5 * time.Millisecond, Max: 40 * time.Millisecond}

// numbered is a TRC-1010 finding carrying n in its Data, so that a receiver can tell findings apart.
func numbered(n int) finding.Finding {
	f := sampleFinding()
	f.Event.Timestamp += n
	f.Data = map[string]any{"n": n}
	return f
}

func sampleFinding() finding.Finding {
	return finding.Finding{
		SigMetadata: finding.Metadata{
			ID: "TRC-1010", Version: "1", Name: "Cgroups release agent file modification",
			EventName: "cgroup_release_agent", Description: "The signature monitors the modification of the Cgroup release agent file.",
			Properties: map[string]any{"Severity": 3, "Category": "privilege-escalation", "external_id": "T1611"},
		},
		Event: event.Event{
			Timestamp: 1795854467893365926, ProcessID: 1, HostProcessID: 12435, ProcessName: "sh",
			Executable: event.File{Path: "/usr/bin/dash"}, HostName: "vm",
			ContainerID: "4f2a9c1e7b3d5a6f8e9d0c1b2a3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f",
			Container:   event.Container{ID: "4f2a9c1e7b3d5a6f8e9d0c1b2a3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f", Name: "lab"},
			EventID:     event.SecurityFileOpenID, EventName: event.SecurityFileOpen, ArgsNum: 2, Syscall: "openat",
			ContextFlags: event.ContextFlags{ContainerStarted: true},
			Args: []event.Argument{
				{ArgMeta: event.ArgMeta{Name: "pathname", Type: "const char*"}, Value: "/sys/fs/cgroup/rdma/release_agent"},
				{ArgMeta: event.ArgMeta{Name: "flags", Type: "int"}, Value: int32(33345)},
			},
			Origin: event.OriginContainer, Action: event.ActionAlert,
		},
	}
}

// receiver is a webhook endpoint that records the findings it accepted, in order.
type receiver struct {
	mu       sync.Mutex
	requests int
	accepted []int
	bodies_  [][]byte
	header   http.Header // of the last request
	// status answers request number req (from 1) carrying finding n; nil answers 200.
	status func(req, n int) int
	delay  time.Duration
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct{ Data struct{ N int } }
	raw, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(raw, &body); err != nil {
		http.Error(w, "bad JSON: "+err.Error(), http.StatusBadRequest)
		return
	}
	time.Sleep(rc.delay)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.requests++
	rc.header = r.Header.Clone()
	code := http.StatusOK
	if rc.status != nil {
		code = rc.status(rc.requests, body.Data.N)
	}
	if code/100 == 2 {
		rc.accepted = append(rc.accepted, body.Data.N)
		rc.bodies_ = append(rc.bodies_, raw)
	}
	w.WriteHeader(code)
}

func (rc *receiver) got() []int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.accepted)
}

// bodies are the findings accepted, as received.
func (rc *receiver) bodies() [][]byte {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.bodies_)
}

func (rc *receiver) requestCount() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.requests
}

// quiet keeps the server's TLS handshake errors, which some tests cause on purpose, out of the test output.
func quiet(srv *httptest.Server) *httptest.Server {
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	return srv
}

func startTLS(t *testing.T, h http.Handler) (*httptest.Server, *x509.CertPool) {
	t.Helper()
	srv := quiet(httptest.NewUnstartedServer(h))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return srv, pool
}

// startHTTP serves h over plain HTTP and returns its URL.
func startHTTP(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// freeAddr is an address nothing listens on (until a test listens there), so connections are refused.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// serveOn starts h on addr, which a webhook has been failing to reach.
func serveOn(t *testing.T, addr string, h http.Handler) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// logBuffer collects a logger's output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newLogger() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, nil)), b
}

// webhookDispatcher builds a Dispatcher with one webhook spooled in dir.
func webhookDispatcher(t *testing.T, dir string, wo WebhookOptions, so SpoolOptions, logger *slog.Logger) *Dispatcher {
	t.Helper()
	wh, err := NewWebhook(wo)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := OpenSpool(dir, so)
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDispatcher(Options{Logger: logger, Spooled: []Spooled{{Sink: wh, Spool: sp}}, Backoff: fast})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// dispatchN dispatches findings from..to-1 and waits until every spool took them (or shed them).
func dispatchN(t *testing.T, d *Dispatcher, from, to int) {
	t.Helper()
	before := taken(d)
	for n := from; n < to; n++ {
		if err := d.Dispatch(numbered(n)); err != nil {
			t.Fatalf("dispatch %d: %v", n, err)
		}
	}
	waitFor(t, "the findings spooled", func() bool { return taken(d) >= before+to-from })
}

// taken counts the findings the dispatcher's first spooled sink holds, delivered or lost: the findings its
// commit stage took (plus what a previous run left).
func taken(d *Dispatcher) int {
	for _, r := range d.routes {
		if r.spool != nil {
			n, _ := r.spool.Len()
			return n + int(r.delivered.Load()+r.dropped.Load())
		}
	}
	return 0
}

func stats(d *Dispatcher, name string) SinkStats {
	for _, s := range d.Stats() {
		if s.Name == name {
			return s
		}
	}
	return SinkStats{}
}

// spoolFiles lists the entry files in dir.
func spoolFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+entrySuffix))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// allOf asserts that got holds every n in [0, want), in order of first arrival; duplicates are allowed.
func allOf(t *testing.T, got []int, want int) {
	t.Helper()
	var firsts []int
	seen := map[int]bool{}
	for _, n := range got {
		if !seen[n] {
			seen[n] = true
			firsts = append(firsts, n)
		}
	}
	for n := range want {
		if n >= len(firsts) || firsts[n] != n {
			t.Fatalf("received %v; want every finding 0..%d in order (duplicates allowed)", got, want-1)
		}
	}
	if len(firsts) != want {
		t.Fatalf("received %v; want only findings 0..%d", got, want-1)
	}
}

func closeNow(t *testing.T, d *Dispatcher, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
}

func contains(t *testing.T, s, sub string) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Fatalf("%q does not contain %q", s, sub)
	}
}

func mustExist(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}
