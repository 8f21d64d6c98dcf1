package metrics

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
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
