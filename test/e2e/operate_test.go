package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"escapewatch/internal/testutil"
)

// metricsURL is where the sensor serves /metrics, from its log.
func (s *sensor) metricsURL() string {
	m := regexp.MustCompile(`msg="metrics and health endpoints" addr=(\S+)`).FindStringSubmatch(s.stderr.String())
	if m == nil {
		s.t.Fatalf("no metrics address in the sensor's log:\n%s", s.stderr.String())
	}
	return "http://" + m[1]
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestPrivilegedMetricsAndHealth scrapes the running sensor: ready, backend, and the finding just made.
func TestPrivilegedMetricsAndHealth(t *testing.T) {
	s := startSensor(t)
	base := s.metricsURL()
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := httpGet(t, base+path); code != http.StatusOK {
			t.Errorf("%s = %d %q, want 200", path, code, body)
		}
	}
	h := testutil.MountHierarchy(t)
	act := runAct(t, inNamespace(triggerBin, "open", h.Agent(), "O_WRONLY")...)
	s.waitFor(t, "the open", trc1010By(act.HostPID))
	s.waitFor(t, "the write", changedBy(act.HostPID))
	// A finding reaches stdout a moment before its delivery is counted: scrape until the counts settle.
	want := []string{
		`escapewatch_backend_info{backend="` + s.backend() + `"} 1`,
		`escapewatch_ready 1`,
		`escapewatch_findings_total{action="alert",rule="TRC-1010"} 1`,
		`escapewatch_events_total{event="security_file_open"}`,
		`escapewatch_kernel_records_dropped_total 0`,
		`escapewatch_findings_total{action="alert",rule="EW-1001"} 1`,
		`escapewatch_sink_delivered_total{sink="stdout"} 2`,
	}
	var body string
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(50 * time.Millisecond) {
		_, body = httpGet(t, base+"/metrics")
		if missing := missingLines(body, want); len(missing) == 0 || time.Now().After(deadline) {
			for _, m := range missing {
				t.Errorf("/metrics lacks %s", m)
			}
			return
		}
	}
}

func missingLines(body string, want []string) []string {
	var missing []string
	for _, w := range want {
		if !strings.Contains(body, w) {
			missing = append(missing, w)
		}
	}
	return missing
}

// TestPrivilegedSelftest: selftest passes in-process and against a running sensor, and fails (exit 1, with the
// reason) when the sensor it is told to check is not running.
func TestPrivilegedSelftest(t *testing.T) {
	testutil.RequirePrivileged(t)
	out, err := exec.Command(sensorBin, "selftest", "--backend", backend()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "selftest: PASS") {
		t.Fatalf("in-process selftest: %v\n%s", err, out)
	}
	s := startSensor(t)
	base := s.metricsURL()
	out, err = exec.Command(sensorBin, "selftest", "--running", base).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "selftest: PASS") {
		t.Fatalf("selftest against the running sensor: %v\n%s", err, out)
	}
	s.stop(syscall.SIGTERM)
	cmd := exec.Command(sensorBin, "selftest", "--running", base, "--timeout", "2s")
	out, err = cmd.CombinedOutput()
	if err == nil || cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "selftest: FAIL") {
		t.Fatalf("selftest against a stopped sensor: want exit 1 and FAIL, got %v\n%s", err, out)
	}
}

// receiver is a webhook endpoint that can be down (refusing with 503) and records what it accepted.
type receiver struct {
	mu   sync.Mutex
	down bool
	got  []map[string]any
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	var f map[string]any
	if err := json.NewDecoder(req.Body).Decode(&f); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.got = append(r.got, f)
}

func (r *receiver) setDown(down bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down = down
}

// pids returns the hostProcessIds of the findings received.
func (r *receiver) pids() map[int]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[int]int{}
	for _, f := range r.got {
		ev, _ := f["Event"].(map[string]any)
		pid, _ := ev["hostProcessId"].(float64)
		out[int(pid)]++
	}
	return out
}

func (r *receiver) waitFor(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit * 2)
	for time.Now().Before(deadline) {
		got := r.pids()
		missing := 0
		for _, p := range pids {
			if got[p] == 0 {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("webhook received findings of pids %v, want all of %v", r.pids(), pids)
}

// TestPrivilegedWebhookOutage: a webhook that is down for a while loses nothing, and neither does a sensor
// killed with SIGKILL while the webhook is down: the next start delivers its spool.
func TestPrivilegedWebhookOutage(t *testing.T) {
	rcv := &receiver{down: true}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	spool := t.TempDir()
	h := testutil.MountHierarchy(t)
	write := func() int { return runAct(t, inNamespace(triggerBin, "open", h.Agent(), "O_WRONLY")...).HostPID }

	s := startSensor(t, "--webhook-url", srv.URL, "--spool-dir", spool)
	var pids []int
	for range 3 {
		pid := write()
		s.waitFor(t, "a write while the webhook is down", trc1010By(pid))
		pids = append(pids, pid)
	}
	rcv.setDown(false)
	rcv.waitFor(t, pids)

	// Down again; the sensor dies without any chance to flush.
	rcv.setDown(true)
	pid := write()
	s.waitFor(t, "a write before the crash", trc1010By(pid))
	s.cmd.Process.Kill()
	<-s.exited
	rcv.setDown(false)
	startSensor(t, "--webhook-url", srv.URL, "--spool-dir", spool)
	rcv.waitFor(t, append(pids, pid))
}

// TestPrivilegedAggregation: repeats of one finding within the window come out as one finding with a count.
func TestPrivilegedAggregation(t *testing.T) {
	s := startSensor(t, "--aggregate-window", "1s")
	h := testutil.MountHierarchy(t)
	act := runAct(t, inNamespace("sh", "-c", shellAct+"for i in 1 2 3 4 5; do echo /payload > "+h.Agent()+"; done")...)
	s.waitFor(t, "the aggregate", func(f finding) bool { return f.Event.HostProcessID == act.HostPID && f.aggregate > 0 })
	got := s.matching(trc1010By(act.HostPID))
	if len(got) != 2 || got[0].aggregate != 0 || got[1].aggregate != 4 {
		t.Errorf("want the first finding, then one aggregate of 4 repeats; got %s", s.summary())
	}
}

// TestPrivilegedOutputFileRotation: a log rotator renames the output file and sends SIGHUP; findings before go
// to the renamed file, findings after to a new file at the configured path, and the sensor keeps running.
func TestPrivilegedOutputFileRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "findings.jsonl")
	s := startSensor(t, "--output-file", path)
	h := testutil.MountHierarchy(t)
	before := runAct(t, inNamespace("sh", "-c", shellAct+"echo /before-rotation > "+h.Agent())...)
	s.waitFor(t, "the finding before rotation", trc1010By(before.HostPID))
	s.waitFor(t, "the change before rotation", changedBy(before.HostPID))
	// Both are on stdout; the file sink comes right after it.
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(20 * time.Millisecond) {
		if b, _ := os.ReadFile(path); strings.Count(string(b), "\n") >= 2 || time.Now().After(deadline) {
			break
		}
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	s.cmd.Process.Signal(syscall.SIGHUP)
	waitForLog(t, s, "SIGHUP: output files reopened")
	after := runAct(t, inNamespace("sh", "-c", shellAct+"echo /after-rotation > "+h.Agent())...)
	s.waitFor(t, "the finding after rotation", trc1010By(after.HostPID))
	for _, c := range []struct {
		file       string
		has, lacks string
	}{{path + ".1", "/before-rotation", "/after-rotation"}, {path, "/after-rotation", "/before-rotation"}} {
		deadline := time.Now().Add(waitLimit)
		for {
			values := writtenValues(t, c.file)
			if values[c.has] {
				if values[c.lacks] {
					t.Errorf("%s holds the change to %s too", c.file, c.lacks)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s lacks the change to %s (has %v)", c.file, c.has, values)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// writtenValues are the release_agent values of the EW-1001 findings in a JSON-lines file.
func writtenValues(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, _ := os.ReadFile(path)
	values := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var f struct{ Data map[string]any }
		if json.Unmarshal([]byte(line), &f) == nil {
			if v, ok := f.Data["value"].(string); ok {
				values[v] = true
			}
		}
	}
	return values
}

func waitForLog(t *testing.T, s *sensor, msg string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !strings.Contains(s.stderr.String(), msg) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the sensor's log:\n%s", msg, s.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
