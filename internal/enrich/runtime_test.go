package enrich

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Recorded containers: testdata/runtime holds the runtimes' answers about them.
const (
	nginxID      = "3f4e8b1c9d2a7e6f5b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a" // docker run --name web nginx:1.27
	criDockerdID = "8c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d" // a pod's container via cri-dockerd
	kubeProxyID  = "e7a1c3f5b9d2e4a6c8b0d1f3e5a7c9b2d4f6e8a0c1b3d5f7e9a2c4b6d8f0e1a3" // CRI container in k8s.io
	sandboxID    = "4d2b6f8a0c1e3d5b7f9a2c4e6d8b0f1a3c5e7d9b2f4a6c8e0d1b3f5a7c9e2d4b" // its pause sandbox, image removed
	redisID      = "redis-test"                                                       // ctr run in the default namespace
	unknownID    = "0000000000000000000000000000000000000000000000000000000000000000"
)

var (
	nginxDetails = Details{
		Name:        "web",
		Image:       "nginx:1.27",
		ImageDigest: "sha256:9bea9f2796e236cb18c2b3ad561ff29f655d1001f9ec7247a0bc5e08d25652a1",
	}
	criDockerdDetails = Details{
		Name:         "k8s_web_web-7d9c5b6f4-x2kqp_shop_5e0d6c3a-8f1b-4c2d-9e7a-1b2c3d4e5f60_0",
		Image:        "registry.example.com/shop/web@sha256:1f3e5d7c9b2a4f6e8d0c1b3a5f7e9d2c4b6a8f0e1d3c5b7a9f2e4d6c8b0a1f3e",
		ImageDigest:  "sha256:4c5d7e1a0b6f2c3d8e9a1b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e",
		PodName:      "web-7d9c5b6f4-x2kqp",
		PodNamespace: "shop",
		PodUID:       "5e0d6c3a-8f1b-4c2d-9e7a-1b2c3d4e5f60",
	}
	kubeProxyDetails = Details{
		Name:         "kube-proxy",
		Image:        "registry.k8s.io/kube-proxy:v1.31.2",
		ImageDigest:  "sha256:62128d752eb4a9162074697aba46adea4abb8aab2a53c992f20881365b61a4fe",
		PodName:      "kube-proxy-8xk2v",
		PodNamespace: "kube-system",
		PodUID:       "0c9d8e7f-6a5b-4c3d-8e2f-1a0b9c8d7e6f",
	}
)

// gate holds answers back while open; nil never holds.
type gate chan struct{}

// pass waits until g closes; false when ctx ends first.
func (g gate) pass(ctx context.Context) bool {
	if g == nil {
		return true
	}
	select {
	case <-g:
		return true
	case <-ctx.Done():
		return false
	}
}

// fakeDocker serves recorded inspect answers the way the Docker daemon's API does.
type fakeDocker struct {
	files    map[string]string // container ID -> file in testdata/runtime
	status   int               // when not 0, every answer is this status with an error message
	gate     gate
	requests atomic.Int64
}

func newFakeDocker() *fakeDocker {
	return &fakeDocker{files: map[string]string{
		nginxID:      "docker-inspect-nginx.json",
		criDockerdID: "docker-inspect-k8s.json",
	}}
}

func (f *fakeDocker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containers/{id}/json", f.inspect)
	mux.ServeHTTP(w, r)
}

func (f *fakeDocker) inspect(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	if !f.gate.pass(r.Context()) {
		return
	}
	id := r.PathValue("id")
	file, ok := f.files[id]
	switch {
	case f.status != 0:
		writeDockerError(w, f.status, "Something went wrong on purpose")
	case !ok:
		writeDockerError(w, http.StatusNotFound, "No such container: "+id)
	default:
		body, err := os.ReadFile(filepath.Join("testdata", "runtime", file))
		if err != nil {
			writeDockerError(w, http.StatusInternalServerError, err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}
}

func writeDockerError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

// serveDocker serves f on a unix socket until the test ends and returns the socket's path.
func serveDocker(t *testing.T, f *fakeDocker) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatalf("listen on %s: %v", socket, err)
	}
	srv := httptest.NewUnstartedServer(f)
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return socket
}

// missingSocket returns a socket path that nothing listens on.
func missingSocket(t *testing.T) string {
	return filepath.Join(t.TempDir(), "absent.sock")
}

// staleSocket returns a socket file whose listener is gone: dialing it is refused.
func staleSocket(t *testing.T) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		t.Fatalf("listen on %s: %v", socket, err)
	}
	l.SetUnlinkOnClose(false)
	if err := l.Close(); err != nil {
		t.Fatalf("close %s: %v", socket, err)
	}
	return socket
}

// logRecorder is a slog handler that keeps the records, to count what was logged.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r)
	return nil
}

func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) count(level slog.Level) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.records {
		if r.Level == level {
			n++
		}
	}
	return n
}

// dialCounter counts the dials of each socket.
type dialCounter struct {
	mu    sync.Mutex
	dials map[string]int
}

func (d *dialCounter) dial(ctx context.Context, path string) (net.Conn, error) {
	d.mu.Lock()
	if d.dials == nil {
		d.dials = map[string]int{}
	}
	d.dials[path]++
	d.mu.Unlock()
	return dialUnix(ctx, path)
}

func (d *dialCounter) count(path string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dials[path]
}

// testRuntimes returns Runtimes closed when the test ends, logging to a recorder. Sockets not set in opts are
// missing ones, so that no test reaches the host's runtimes.
func testRuntimes(t *testing.T, opts RuntimeOptions, dial dialFunc) (*Runtimes, *logRecorder) {
	t.Helper()
	if opts.DockerSocket == "" {
		opts.DockerSocket = missingSocket(t)
	}
	if opts.ContainerdSocket == "" {
		opts.ContainerdSocket = missingSocket(t)
	}
	if opts.MaxWait == 0 {
		opts.MaxWait = 5 * time.Second // answers from a local fake: long enough to never be the limit
	}
	logs := &logRecorder{}
	opts.Logger = slog.New(logs)
	if dial == nil {
		dial = dialUnix
	}
	r := newRuntimes(opts, dial)
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close Runtimes: %v", err)
		}
	})
	return r, logs
}

// waitIdle waits until no lookup runs in the background.
func waitIdle(t *testing.T, r *Runtimes) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.Stats().InFlight != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("lookups still in flight after 5s: %+v", r.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRuntimesDocker(t *testing.T) {
	socket := serveDocker(t, newFakeDocker())
	tests := []struct {
		name    string
		c       Container
		want    Details
		wantErr uint64
	}{
		{"plain container", Container{ID: nginxID, Runtime: RuntimeDocker}, nginxDetails, 0},
		{"cri-dockerd container with pod labels", Container{ID: criDockerdID, Runtime: RuntimeDocker}, criDockerdDetails, 0},
		{"runtime unknown from the cgroup path", Container{ID: criDockerdID}, criDockerdDetails, 0},
		{"not found", Container{ID: unknownID, Runtime: RuntimeDocker}, Details{}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, logs := testRuntimes(t, RuntimeOptions{DockerSocket: socket}, nil)
			if got := r.Lookup(t.Context(), tt.c); got != tt.want {
				t.Errorf("Lookup(%+v) = %+v, want %+v", tt.c, got, tt.want)
			}
			if s := r.Stats(); s.Errors != tt.wantErr || s.Misses != 1 {
				t.Errorf("Stats() = %+v, want 1 miss and %d errors", s, tt.wantErr)
			}
			if n := logs.count(slog.LevelWarn); n != 0 {
				t.Errorf("%d warnings logged, want none", n)
			}
		})
	}
}

func TestRuntimesSkipsOtherRuntimes(t *testing.T) {
	dials := &dialCounter{}
	r, _ := testRuntimes(t, RuntimeOptions{}, dials.dial)
	for _, runtime := range []string{RuntimeCRIO, RuntimePodman, RuntimeLXC} {
		if got := r.Lookup(t.Context(), Container{ID: nginxID, Runtime: runtime}); got != (Details{}) {
			t.Errorf("Lookup for runtime %s = %+v, want Details{}", runtime, got)
		}
	}
	if s := r.Stats(); s != (RuntimeStats{}) {
		t.Errorf("Stats() = %+v, want nothing counted", s)
	}
	if n := dials.count(r.opts.DockerSocket) + dials.count(r.opts.ContainerdSocket); n != 0 {
		t.Errorf("%d dials, want none", n)
	}
}

// A missing runtime costs one dial per backoff, not one per event, and is no error.
func TestRuntimesSocketMissing(t *testing.T) {
	sockets := map[string]func(*testing.T) string{"missing": missingSocket, "refused": staleSocket}
	runtimes := []struct {
		name, runtime string
		apis          int // how many APIs a lookup asks
	}{{"docker", RuntimeDocker, 1}, {"containerd", RuntimeContainerd, 1}, {"unknown", "", 2}}
	for socketName, socket := range sockets {
		for _, rt := range runtimes {
			runtime, apis := rt.runtime, rt.apis
			t.Run(socketName+"/"+rt.name, func(t *testing.T) {
				dials := &dialCounter{}
				opts := RuntimeOptions{DockerSocket: socket(t), ContainerdSocket: socket(t)}
				r, logs := testRuntimes(t, opts, dials.dial)
				for i := range 20 {
					// A new ID each time: no cache hit hides a dial.
					c := Container{ID: fmt.Sprintf("%064x", i), Runtime: runtime}
					start := time.Now()
					if got := r.Lookup(t.Context(), c); got != (Details{}) {
						t.Fatalf("Lookup(%+v) = %+v, want Details{}", c, got)
					}
					if elapsed := time.Since(start); elapsed > time.Second {
						t.Errorf("Lookup %d took %v: an absent runtime should answer at once", i, elapsed)
					}
				}
				if n := dials.count(opts.DockerSocket) + dials.count(opts.ContainerdSocket); n != apis {
					t.Errorf("%d dials for 20 lookups, want %d (one per runtime asked)", n, apis)
				}
				if s := r.Stats(); s.Errors != 0 || s.Misses != 20 {
					t.Errorf("Stats() = %+v, want 20 misses and no errors", s)
				}
				if n := logs.count(slog.LevelWarn); n != 0 {
					t.Errorf("%d warnings, want none", n)
				}
				if n := logs.count(slog.LevelDebug); n != apis {
					t.Errorf("%d debug messages, want %d (one per runtime asked)", n, apis)
				}
			})
		}
	}
}

// A runtime slower than MaxWait costs the event its details, not its time; the answer serves the next event.
func TestRuntimesSlowAPI(t *testing.T) {
	tests := []struct {
		name  string
		serve func(t *testing.T, g gate) RuntimeOptions
		c     Container
		want  Details
	}{
		{"docker", func(t *testing.T, g gate) RuntimeOptions {
			f := newFakeDocker()
			f.gate = g
			return RuntimeOptions{DockerSocket: serveDocker(t, f)}
		}, Container{ID: nginxID, Runtime: RuntimeDocker}, nginxDetails},
		{"containerd", func(t *testing.T, g gate) RuntimeOptions {
			f := newFakeContainerd(t)
			f.gate = g
			return RuntimeOptions{ContainerdSocket: serveContainerd(t, f)}
		}, Container{ID: kubeProxyID, Runtime: RuntimeContainerd}, kubeProxyDetails},
	}
	const maxWait = 50 * time.Millisecond
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := make(gate)
			opts := tt.serve(t, g)
			opts.MaxWait = maxWait
			r, _ := testRuntimes(t, opts, nil)

			// The API answers only once the gate is closed, below: a Lookup that returns here did not wait for
			// the answer, whatever the machine's speed. It must have waited MaxWait for it first.
			start := time.Now()
			if got := r.Lookup(t.Context(), tt.c); got != (Details{}) {
				t.Errorf("Lookup while the API is held = %+v, want Details{}", got)
			}
			if elapsed := time.Since(start); elapsed < maxWait {
				t.Errorf("Lookup gave up after %v, before MaxWait %v", elapsed, maxWait)
			}
			if s := r.Stats(); s.InFlight != 1 {
				t.Errorf("Stats() = %+v, want the lookup in flight", s)
			}

			close(g)
			waitIdle(t, r)
			if got := r.Lookup(t.Context(), tt.c); got != tt.want {
				t.Errorf("Lookup after the answer = %+v, want %+v", got, tt.want)
			}
			if s := r.Stats(); s.Hits != 1 || s.Misses != 1 || s.Errors != 0 {
				t.Errorf("Stats() = %+v, want 1 hit, 1 miss, no errors", s)
			}
		})
	}
}

func TestRuntimesLookupEndsWithContext(t *testing.T) {
	f := newFakeDocker()
	f.gate = make(gate) // never opened: the API never answers
	const maxWait = time.Minute
	r, _ := testRuntimes(t, RuntimeOptions{DockerSocket: serveDocker(t, f), MaxWait: maxWait}, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	if got := r.Lookup(ctx, Container{ID: nginxID, Runtime: RuntimeDocker}); got != (Details{}) {
		t.Errorf("Lookup = %+v, want Details{}", got)
	}
	// Only two things end this Lookup: the context, or MaxWait, which cannot have passed before it.
	if elapsed := time.Since(start); elapsed >= maxWait {
		t.Errorf("Lookup returned after %v: it waited for MaxWait, not for its context", elapsed)
	}
}

func TestRuntimesCacheTTL(t *testing.T) {
	const ttl = 100 * time.Millisecond
	tests := []struct {
		name string
		id   string
		want Details
	}{
		{"found", nginxID, nginxDetails},
		{"not found", unknownID, Details{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeDocker()
			r, _ := testRuntimes(t, RuntimeOptions{DockerSocket: serveDocker(t, f), CacheTTL: ttl}, nil)
			c := Container{ID: tt.id, Runtime: RuntimeDocker}
			for range 3 {
				if got := r.Lookup(t.Context(), c); got != tt.want {
					t.Fatalf("Lookup = %+v, want %+v", got, tt.want)
				}
			}
			if n := f.requests.Load(); n != 1 {
				t.Errorf("%d requests for 3 lookups within the TTL, want 1", n)
			}
			time.Sleep(ttl + 20*time.Millisecond)
			if got := r.Lookup(t.Context(), c); got != tt.want {
				t.Errorf("Lookup after the TTL = %+v, want %+v", got, tt.want)
			}
			if n := f.requests.Load(); n != 2 {
				t.Errorf("%d requests after the TTL, want 2", n)
			}
			if s := r.Stats(); s.Hits != 2 || s.Misses != 2 {
				t.Errorf("Stats() = %+v, want 2 hits and 2 misses", s)
			}
		})
	}
}

// Errors other than absence are counted each time but warned about once a minute.
func TestRuntimesErrorsCountedWarnedOnce(t *testing.T) {
	f := newFakeDocker()
	f.status = http.StatusInternalServerError
	r, logs := testRuntimes(t, RuntimeOptions{DockerSocket: serveDocker(t, f)}, nil)
	for _, id := range []string{nginxID, criDockerdID, unknownID} {
		if got := r.Lookup(t.Context(), Container{ID: id, Runtime: RuntimeDocker}); got != (Details{}) {
			t.Errorf("Lookup(%s) = %+v, want Details{}", id, got)
		}
	}
	if s := r.Stats(); s.Errors != 3 {
		t.Errorf("Stats() = %+v, want 3 errors", s)
	}
	if n := logs.count(slog.LevelWarn); n != 1 {
		t.Errorf("%d warnings for 3 errors within a minute, want 1", n)
	}
}

func TestRuntimesCloseEndsLookups(t *testing.T) {
	f := newFakeDocker()
	f.gate = make(gate)
	r, logs := testRuntimes(t, RuntimeOptions{DockerSocket: serveDocker(t, f), MaxWait: time.Millisecond}, nil)
	r.Lookup(t.Context(), Container{ID: nginxID, Runtime: RuntimeDocker})

	done := make(chan error, 1)
	go func() { done <- r.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close still waits for a held lookup after 5s")
	}
	if got := r.Lookup(t.Context(), Container{ID: criDockerdID, Runtime: RuntimeDocker}); got != (Details{}) {
		t.Errorf("Lookup after Close = %+v, want Details{}", got)
	}
	if s := r.Stats(); s.Errors != 0 || s.InFlight != 0 {
		t.Errorf("Stats() = %+v, want no errors and nothing in flight", s)
	}
	if n := logs.count(slog.LevelWarn); n != 0 {
		t.Errorf("%d warnings, want none: closing is no failure", n)
	}
}
