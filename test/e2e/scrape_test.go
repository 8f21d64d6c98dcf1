package e2e

import (
	"bufio"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"escapewatch/internal/testutil"
)

// scrape is what one successful scrape of /metrics said.
type scrape struct {
	at      time.Time
	records float64 // escapewatch_kernel_records_total
	ready   bool    // escapewatch_ready 1
}

// TestPrivilegedMetricsThroughShutdown scrapes /metrics without pause from the sensor's start (the endpoint
// comes up before the BPF programs load), through a finding, to the end of its SIGINT shutdown. The sensor
// must show no data race (under go test -race it is built with the race detector, and the harness fails a
// test whose sensor reported one), must exit 0, and its kernel record counter must never go backwards between
// one scraper's successful scrapes: a scrape that reads the kernel's counters after the sensor closed them
// must not report 0.
func TestPrivilegedMetricsThroughShutdown(t *testing.T) {
	h := testutil.MountHierarchy(t)
	s := launchSensor(t)
	base := waitMetricsURL(t, s)

	const scrapers = 4
	results := make([][]scrape, scrapers)
	stop := make(chan struct{})
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		highest float64
	)
	for i := range scrapers {
		wg.Go(func() {
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				sc, ok := scrapeOnce(client, base+"/metrics")
				if !ok {
					time.Sleep(time.Millisecond) // not up yet, or gone: keep trying until told to stop
					continue
				}
				results[i] = append(results[i], sc)
				mu.Lock()
				highest = max(highest, sc.records)
				mu.Unlock()
			}
		})
	}
	stopScrapers := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer stopScrapers()

	s.waitReady(t)
	act := runAct(t, inNamespace("sh", "-c", shellAct+"echo /payload > "+h.Agent())...)
	s.waitFor(t, "the write", changedBy(act.HostPID))
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := highest
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("escapewatch_kernel_records_total still 0 %s after a finding", waitLimit)
		}
	}
	interrupted := time.Now()
	if code := s.stop(syscall.SIGINT); code != 0 {
		t.Errorf("sensor exited with %d on SIGINT", code)
	}
	stopScrapers()

	var total, beforeReady, afterInterrupt int
	for i, r := range results {
		total += len(r)
		for j, sc := range r {
			if !sc.ready {
				beforeReady++
			}
			if sc.at.After(interrupted) {
				afterInterrupt++
			}
			if j > 0 && sc.records < r[j-1].records {
				t.Errorf("scraper %d: escapewatch_kernel_records_total went from %v to %v (%s after the SIGINT)",
					i, r[j-1].records, sc.records, sc.at.Sub(interrupted))
			}
		}
	}
	t.Logf("%d scrapes: %d before the sensor was ready, %d after the SIGINT", total, beforeReady, afterInterrupt)
	if beforeReady == 0 {
		t.Errorf("no scrape before the sensor was ready: the test did not cover the start")
	}
}

// waitMetricsURL waits for the sensor to log its metrics address, which it does before loading its programs.
func waitMetricsURL(t *testing.T, s *sensor) string {
	t.Helper()
	re := regexp.MustCompile(`msg="metrics and health endpoints" addr=(\S+)`)
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(time.Millisecond) {
		if m := re.FindStringSubmatch(s.stderr.String()); m != nil {
			return "http://" + m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no metrics address in the sensor's log after %s:\n%s", waitLimit, s.stderr.String())
		}
	}
}

// scrapeOnce reads the record counter and readiness from one scrape; false when the scrape failed.
func scrapeOnce(client *http.Client, url string) (scrape, bool) {
	sc := scrape{}
	resp, err := client.Get(url)
	if err != nil {
		return sc, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return sc, false
	}
	var haveRecords, haveReady bool
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		name, value, ok := strings.Cut(lines.Text(), " ")
		if !ok {
			continue
		}
		switch name {
		case "escapewatch_kernel_records_total":
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				return sc, false
			}
			sc.records, haveRecords = v, true
		case "escapewatch_ready":
			sc.ready, haveReady = value == "1", true
		}
	}
	if lines.Err() != nil || !haveRecords || !haveReady {
		return sc, false // cut short by the shutdown
	}
	sc.at = time.Now()
	return sc, true
}
