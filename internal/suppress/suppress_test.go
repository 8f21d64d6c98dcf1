package suppress

import (
	"testing"
	"time"

	"escapewatch/internal/event"
	"escapewatch/internal/finding"
)

func openFinding(pid int, comm, path string, ts int) finding.Finding {
	return finding.Finding{
		SigMetadata: finding.Metadata{ID: "TRC-1010"},
		Event: event.Event{
			HostProcessID: pid, ProcessName: comm, Timestamp: ts, Origin: event.OriginNamespaced, Action: event.ActionAlert,
			Executable: event.File{Path: "/usr/bin/" + comm},
			Args:       []event.Argument{{ArgMeta: event.ArgMeta{Name: "pathname", Type: "const char*"}, Value: path}},
		},
	}
}

func TestAllowlist(t *testing.T) {
	f := openFinding(10, "systemd", "/sys/fs/cgroup/systemd/release_agent", 1)
	tests := []struct {
		name  string
		allow Allow
		want  bool
	}{
		{"process and file", Allow{ProcessName: "systemd", Pathname: "/sys/fs/cgroup/systemd/release_agent"}, true},
		{"executable", Allow{Executable: "/usr/bin/systemd"}, true},
		{"rule and origin", Allow{Rule: "TRC-1010", Origin: "namespaced"}, true},
		{"one field differs", Allow{ProcessName: "systemd", Pathname: "/tmp/x/release_agent"}, false},
		{"other origin", Allow{Origin: "host"}, false},
		{"other container", Allow{ContainerID: "abc"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := (Allowlist{tt.allow}).Match(&f); got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAggregator(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := NewAggregator(time.Minute)
	step := func(d time.Duration) time.Time { return t0.Add(d) }

	if !a.Offer(openFinding(1, "sh", "/a/release_agent", 1), step(0)) {
		t.Fatal("the first finding must be written at once")
	}
	for i := 2; i <= 4; i++ {
		if a.Offer(openFinding(1, "sh", "/a/release_agent", i), step(time.Duration(i)*time.Second)) {
			t.Fatalf("repeat %d must be folded", i)
		}
	}
	if !a.Offer(openFinding(2, "sh", "/a/release_agent", 5), step(5*time.Second)) {
		t.Fatal("another process is another finding")
	}
	if !a.Offer(openFinding(1, "sh", "/b/release_agent", 6), step(6*time.Second)) {
		t.Fatal("another file is another finding")
	}
	changed := openFinding(1, "sh", "/a/release_agent", 6)
	changed.Data = map[string]any{"value": "/other"}
	if !a.Offer(changed, step(6*time.Second)) {
		t.Fatal("another value is another finding")
	}
	refused := openFinding(1, "sh", "/a/release_agent", 6)
	refused.Event.ReturnValue = -1
	if !a.Offer(refused, step(6*time.Second)) {
		t.Fatal("a refused attempt is another finding")
	}
	if got := a.Flush(step(30*time.Second), false); len(got) != 0 {
		t.Fatalf("window still open: got %d aggregates", len(got))
	}
	got := a.Flush(step(61*time.Second), false)
	if len(got) != 1 || got[0].Aggregate == nil || got[0].Aggregate.Count != 3 || got[0].Aggregate.FirstSeen != 2 ||
		got[0].Aggregate.LastSeen != 4 || got[0].Event.HostProcessID != 1 {
		t.Fatalf("aggregate: %+v", got)
	}
	// After the window, the same finding is new again.
	if !a.Offer(openFinding(1, "sh", "/a/release_agent", 7), step(62*time.Second)) {
		t.Fatal("a finding after the window must be written at once")
	}
	// A key that comes back after its window, before any Flush, keeps its aggregate.
	a.Offer(openFinding(1, "sh", "/a/release_agent", 8), step(63*time.Second))
	if !a.Offer(openFinding(1, "sh", "/a/release_agent", 9), step(130*time.Second)) {
		t.Fatal("a finding after the window must be written at once")
	}
	if got := a.Flush(step(131*time.Second), false); len(got) != 1 || got[0].Aggregate.Count != 1 {
		t.Fatalf("the earlier window's aggregate was lost: %+v", got)
	}
	// Shutdown flushes open windows too.
	a.Offer(openFinding(1, "sh", "/a/release_agent", 10), step(132*time.Second))
	if got := a.Flush(step(133*time.Second), true); len(got) != 1 || got[0].Aggregate.Count != 1 {
		t.Fatalf("final flush: %+v", got)
	}
}

func TestAggregatorOff(t *testing.T) {
	a := NewAggregator(0)
	for i := range 3 {
		if !a.Offer(openFinding(1, "sh", "/a/release_agent", i), time.Unix(0, 0)) {
			t.Fatal("window 0 folds nothing")
		}
	}
}
