package metrics

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestEndpoints serves on a real loopback port and scrapes it like Prometheus and kubelet would.
func TestEndpoints(t *testing.T) {
	dropped := uint64(0)
	m := New("v-test", Sources{
		KernelEmitted:     func() uint64 { return 7 },
		KernelDropped:     func() uint64 { return dropped },
		KernelKillsFailed: func() uint64 { return 2 },
		KernelOverBudget:  func() uint64 { return 9 },
		KernelRepeated:    func() uint64 { return 11 },
		KernelMissed:      func() uint64 { return 13 },
		KernelUntracked:   func() uint64 { return 14 },
		Stages:            func() []StageStats { return []StageStats{{Name: "rules", Queued: 3, Shed: 4}} },
		Sinks: func() []SinkStats {
			return []SinkStats{{Name: "webhook", Delivered: 3, Failed: 2, Dropped: 1, SpoolEntries: 4, SpoolBytes: 4096}}
		},
	})
	addr, stop, err := m.Serve("127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	base := "http://" + addr

	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d before ready, want 200", code)
	}
	if code, _ := get(t, base+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d before ready, want 503", code)
	}
	m.Ready("tracepoint")
	m.Event("security_file_open")
	m.Finding("TRC-1010", "alert")
	m.Suppressed("TRC-1010", "allow")
	dropped = 5
	if code, _ := get(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d when ready, want 200", code)
	}
	_, body := get(t, base+"/metrics")
	for _, want := range []string{
		`escapewatch_build_info{goversion="go`, `version="v-test"} 1`,
		`escapewatch_backend_info{backend="tracepoint"} 1`,
		`escapewatch_events_total{event="security_file_open"} 1`,
		`escapewatch_findings_total{action="alert",rule="TRC-1010"} 1`,
		`escapewatch_findings_suppressed_total{reason="allow",rule="TRC-1010"} 1`,
		`escapewatch_kernel_kills_failed_total 2`,
		`escapewatch_kernel_records_over_budget_total 9`,
		`escapewatch_kernel_records_repeated_total 11`,
		`escapewatch_kernel_programs_missed_total 13`,
		`escapewatch_kernel_io_uring_untracked_total 14`,
		`escapewatch_pipeline_queued{stage="rules"} 3`,
		`escapewatch_pipeline_shed_total{stage="rules"} 4`,
		`escapewatch_kernel_records_total 7`,
		`escapewatch_kernel_records_dropped_total 5`,
		`escapewatch_sink_delivered_total{sink="webhook"} 3`,
		`escapewatch_sink_failures_total{sink="webhook"} 2`,
		`escapewatch_sink_dropped_total{sink="webhook"} 1`,
		`escapewatch_spool_entries{sink="webhook"} 4`,
		`escapewatch_ready 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestServeTakenPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	m := New("v", Sources{})
	if _, _, err := m.Serve(ln.Addr().String(), slog.New(slog.DiscardHandler)); err == nil ||
		!strings.Contains(err.Error(), "--metrics-addr") {
		t.Fatalf("error %v, want one naming --metrics-addr", err)
	}
}

// serveLimited serves m on a loopback port with lim and stops it when the test ends.
func serveLimited(t *testing.T, lim Limits) string {
	t.Helper()
	addr, stop, err := New("v", Sources{}).ServeLimited("127.0.0.1:0", lim, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop() })
	return addr
}

// rawConn is a client connection that speaks HTTP/1.1 by hand, so the test controls when it reads and writes.
type rawConn struct {
	net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{Conn: c, r: bufio.NewReader(c)}
}

// get sends a keep-alive GET /healthz and waits at most wait for its answer.
func (c *rawConn) get(wait time.Duration) error {
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
		return err
	}
	return c.answer(wait)
}

func (c *rawConn) answer(wait time.Duration) error {
	c.SetReadDeadline(time.Now().Add(wait))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// closedWithin waits for the server to close c; it returns how long that took, or fails after wait.
func (c *rawConn) closedWithin(t *testing.T, wait time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(wait))
	if _, err := c.r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("read on a connection the server should have closed within %v: %v, want EOF", wait, err)
	}
	return time.Since(start)
}

// TestIdleConnectionsClosed: a keep-alive connection left idle, and one that never sends a request, are closed
// by the server after their timeout, so a client cannot hold connections (and the sensor's memory) for ever.
func TestIdleConnectionsClosed(t *testing.T) {
	const idle, header = 400 * time.Millisecond, 300 * time.Millisecond
	addr := serveLimited(t, Limits{ReadHeaderTimeout: header, ReadTimeout: time.Minute, WriteTimeout: time.Minute,
		IdleTimeout: idle, MaxConns: 8})

	keepAlive := dialRaw(t, addr)
	if err := keepAlive.get(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	silent := dialRaw(t, addr)
	for _, tc := range []struct {
		name    string
		c       *rawConn
		timeout time.Duration
	}{
		{"idle keep-alive connection", keepAlive, idle},
		{"connection without a request", silent, header},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Closed after the timeout (less the moments spent before this check began), and not much later.
			if took := tc.c.closedWithin(t, 10*tc.timeout); took > 5*tc.timeout {
				t.Errorf("closed after %v, want about %v", took, tc.timeout)
			}
		})
	}
}

// TestConnectionLimit: beyond MaxConns, a connection is not served until a served one closes.
func TestConnectionLimit(t *testing.T) {
	const maxConns = 3
	addr := serveLimited(t, Limits{ReadHeaderTimeout: time.Minute, ReadTimeout: time.Minute, WriteTimeout: time.Minute,
		IdleTimeout: time.Minute, MaxConns: maxConns})
	held := make([]*rawConn, maxConns)
	for i := range held {
		held[i] = dialRaw(t, addr)
		if err := held[i].get(5 * time.Second); err != nil {
			t.Fatalf("connection %d of %d: %v", i+1, maxConns, err)
		}
	}
	extra := dialRaw(t, addr)
	if _, err := io.WriteString(extra, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	var ne net.Error
	if err := extra.answer(500 * time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("connection %d while %d are held: %v, want no answer (a read timeout)", maxConns+1, maxConns, err)
	}
	// The held connections are still served: the limit never stops those already in.
	if err := held[0].get(5 * time.Second); err != nil {
		t.Fatalf("held connection: %v", err)
	}
	// One closes: its slot goes to the waiting connection, whose request is then answered.
	held[1].Close()
	if err := extra.answer(5 * time.Second); err != nil {
		t.Fatalf("waiting connection after a slot freed: %v, want its answer", err)
	}
}

func TestServeLimitedRefusesZeroLimits(t *testing.T) {
	lim := DefaultLimits
	lim.MaxConns = 0
	if _, _, err := New("v", Sources{}).ServeLimited("127.0.0.1:0", lim, slog.New(slog.DiscardHandler)); err == nil ||
		!strings.Contains(err.Error(), "DefaultLimits") {
		t.Fatalf("error %v, want one naming DefaultLimits", err)
	}
}
