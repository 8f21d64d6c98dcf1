package suppress

import (
	"errors"
	"strings"
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

// agentWrite is an EW-1001 finding: a write to the release_agent of hierarchy, by comm, from origin in container ctr.
func agentWrite(comm, origin, ctr, image, hierarchy string) finding.Finding {
	return finding.Finding{
		SigMetadata: finding.Metadata{ID: "EW-1001"},
		Event: event.Event{
			ProcessName: comm, Origin: origin, ContainerID: ctr, Container: event.Container{ID: ctr, ImageName: image},
			Executable: event.File{Path: "/usr/bin/" + comm}, EventName: event.ReleaseAgentChanged,
			Args: []event.Argument{
				{ArgMeta: event.ArgMeta{Name: "pathname", Type: "const char*"}, Value: "/sys/fs/cgroup/systemd/release_agent"},
				{ArgMeta: event.ArgMeta{Name: "hierarchy", Type: "const char*"}, Value: hierarchy},
				{ArgMeta: event.ArgMeta{Name: "value", Type: "const char*"}, Value: "/payload"},
			},
		},
	}
}

func TestAllowlist(t *testing.T) {
	const ctr = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	hostOpen := openFinding(10, "systemd", "/sys/fs/cgroup/systemd/release_agent", 1)
	hostOpen.Event.Origin = event.OriginHost
	// The measured attack: a namespaced binary named like the allowed one, writing through its own hierarchy
	// mounted at the allowed path.
	forged := openFinding(11, "cgagent", "/sys/fs/cgroup/systemd/release_agent", 1)
	ctrWrite := agentWrite("systemd", event.OriginContainer, ctr, "registry.example/lxc-systemd:1", "systemd")
	ctrOtherHierarchy := agentWrite("systemd", event.OriginContainer, ctr, "registry.example/lxc-systemd:1", "ewdemo")
	otherCtrWrite := agentWrite("systemd", event.OriginContainer, "fedcba", "registry.example/other:1", "systemd")
	hostWrite := agentWrite("systemd", event.OriginHost, "", "", "systemd")
	// EW-1004's process is the kernel's helper, on the host, named after the agent the planter chose.
	executed := finding.Finding{SigMetadata: finding.Metadata{ID: "EW-1004"}, Event: event.Event{
		ProcessName: "cgagent", Origin: event.OriginHost, Executable: event.File{Path: "/cgagent"},
		Args: []event.Argument{{ArgMeta: event.ArgMeta{Name: "hierarchy", Type: "const char*"}, Value: "systemd"}},
	}}
	// EW-1005: a container lost records, the last of them about hierarchy systemd (its own choice).
	lost := agentWrite("systemd", event.OriginContainer, ctr, "registry.example/lxc-systemd:1", "systemd")
	lost.SigMetadata.ID = "EW-1005"

	tests := []struct {
		name    string
		allow   Allow
		finding finding.Finding
		want    bool
	}{
		{"host process and file", Allow{Origin: "host", ProcessName: "systemd", Pathname: "/sys/fs/cgroup/systemd/release_agent"}, hostOpen, true},
		{"host entry, namespaced look-alike", Allow{Origin: "host", ProcessName: "cgagent", Pathname: "/sys/fs/cgroup/systemd/release_agent"}, forged, false},
		{"host executable", Allow{Origin: "host", Executable: "/usr/bin/systemd"}, hostOpen, true},
		{"host, one field differs", Allow{Origin: "host", ProcessName: "systemd", Pathname: "/tmp/x/release_agent"}, hostOpen, false},
		{"container and hierarchy", Allow{ContainerID: ctr, Hierarchy: "systemd"}, ctrWrite, true},
		{"container, another hierarchy", Allow{ContainerID: ctr, Hierarchy: "systemd"}, ctrOtherHierarchy, false},
		{"hierarchy, another container", Allow{ContainerID: ctr, Hierarchy: "systemd"}, otherCtrWrite, false},
		{"image and hierarchy", Allow{Image: "registry.example/lxc-systemd:1", Hierarchy: "systemd"}, ctrWrite, true},
		{"image, another image", Allow{Image: "registry.example/lxc-systemd:1"}, otherCtrWrite, false},
		{"container entry, host process", Allow{ContainerID: ctr}, hostWrite, false},
		{"host and hierarchy", Allow{Origin: "host", Hierarchy: "systemd"}, hostWrite, true},
		{"hierarchy entry, open without hierarchy", Allow{Origin: "host", Hierarchy: "systemd"}, hostOpen, false},
		{"rule", Allow{Rule: "EW-1001", ContainerID: ctr}, ctrWrite, true},
		{"other rule", Allow{Rule: "EW-1003", ContainerID: ctr}, ctrWrite, false},
		{"EW-1004 never, by host origin", Allow{Origin: "host", ProcessName: "cgagent"}, executed, false},
		{"EW-1004 never, by hierarchy", Allow{Origin: "host", Hierarchy: "systemd"}, executed, false},
		{"EW-1005 never, by container and hierarchy", Allow{ContainerID: ctr, Hierarchy: "systemd"}, lost, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.allow.Check(); err != nil {
				t.Fatalf("Check(%v): %v", tt.allow, err)
			}
			if got := (Allowlist{tt.allow}).Match(&tt.finding); got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestAllowCheck: entries a container could satisfy alone, or that can never match, are refused, naming the
// field and what to write instead.
func TestAllowCheck(t *testing.T) {
	tests := []struct {
		name      string
		allow     Allow
		field     string   // the EntryError's field
		wantInMsg []string // "" field: the entry itself
	}{
		{"empty", Allow{}, "", []string{"empty entry"}},
		{"measured bypass: name and path only", Allow{ProcessName: "cgagent", Pathname: "/sys/fs/cgroup/systemd/release_agent"}, "",
			[]string{"any container", "origin: host", "containerId: ID or image: NAME"}},
		{"process name only", Allow{ProcessName: "systemd"}, "", []string{"origin: host"}},
		{"executable only", Allow{Executable: "/usr/bin/systemd"}, "", []string{"origin: host"}},
		{"rule and namespaced origin", Allow{Rule: "TRC-1010", Origin: "namespaced"}, "", []string{"leave that origin out of scope"}},
		{"hierarchy alone", Allow{Hierarchy: "systemd"}, "", []string{"origin: host"}},
		{"unknown origin", Allow{Origin: "moon"}, "origin", []string{`unknown origin "moon"`}},
		{"host with a container", Allow{Origin: "host", ContainerID: "abc"}, "origin", []string{"can never match"}},
		{"namespaced with an image", Allow{Origin: "namespaced", Image: "x"}, "origin", []string{"namespaced processes have no container"}},
		{"name longer than the kernel keeps", Allow{Origin: "host", ProcessName: "systemd-cgroups-agent-installer"}, "processName",
			[]string{"31 bytes", "at most 15", `write processName: "systemd-cgroups"`}},
		{"path in a container's namespace", Allow{ContainerID: "abc", Pathname: "/sys/fs/cgroup/systemd/release_agent"}, "pathname",
			[]string{"own mount namespace", "hierarchy: NAME", "e.g. hierarchy: systemd", "only with origin: host"}},
		{"relative path", Allow{Origin: "host", Pathname: "release_agent"}, "pathname", []string{"can never match"}},
		{"relative executable", Allow{Origin: "host", Executable: "systemd"}, "executable", []string{"can never match"}},
		{"hierarchy as a path", Allow{Origin: "host", Hierarchy: "/sys/fs/cgroup/systemd"}, "hierarchy", []string{"not a path"}},
		{"hierarchy too long", Allow{Origin: "host", Hierarchy: strings.Repeat("h", 64)}, "hierarchy", []string{"at most 63"}},
		{"hierarchy on a rule without one", Allow{Origin: "host", Rule: "TRC-1010", Hierarchy: "systemd"}, "hierarchy",
			[]string{"TRC-1010 findings carry no hierarchy"}},
		{"unknown rule", Allow{Origin: "host", Rule: "TRC-101"}, "rule", []string{`unknown rule "TRC-101"`, "EW-1001"}},
		{"EW-1004", Allow{Origin: "host", Rule: "EW-1004"}, "rule", []string{"enforceAllow", "hostReleaseAgents"}},
		{"EW-1005", Allow{ContainerID: "abc", Rule: "EW-1005"}, "rule", []string{"EW-1005 cannot be allowed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.allow.Check()
			var e *EntryError
			if !errors.As(err, &e) {
				t.Fatalf("Check(%v) = %v, want an *EntryError", tt.allow, err)
			}
			if e.Field != tt.field {
				t.Errorf("field %q, want %q (%v)", e.Field, tt.field, err)
			}
			for _, want := range tt.wantInMsg {
				if !strings.Contains(e.Problem, want) {
					t.Errorf("message %q lacks %q", e.Problem, want)
				}
			}
		})
	}
	// A 15-byte name, the longest the kernel keeps, is fine.
	if err := (Allow{Origin: "host", ProcessName: "systemd-cgroups"}).Check(); err != nil {
		t.Errorf("15-byte name: %v", err)
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

// TestAggregatorKeepsSummaries: EW-1005's findings are each a count of their own, never folded.
func TestAggregatorKeepsSummaries(t *testing.T) {
	a := NewAggregator(time.Minute)
	for i := range 3 {
		f := openFinding(1, "sh", "/a/release_agent", i)
		f.SigMetadata.ID = "EW-1005"
		if !a.Offer(f, time.Unix(0, 0)) {
			t.Fatalf("EW-1005 summary %d folded", i)
		}
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

// TestAggregatorBounded: a storm of distinct findings keeps at most the limit of windows; the oldest closes early,
// and its repeats come out with the next Flush, none lost.
func TestAggregatorBounded(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := newAggregator(time.Minute, 3)
	// Process 1's finding is repeated twice, then 5 other processes' findings push its window out.
	for i := range 3 {
		a.Offer(openFinding(1, "sh", "/a/release_agent", i), t0)
	}
	for pid := 2; pid <= 6; pid++ {
		if !a.Offer(openFinding(pid, "sh", "/a/release_agent", 10+pid), t0.Add(time.Second)) {
			t.Fatalf("process %d's first finding must be written at once", pid)
		}
		if len(a.entries) > 3 || a.order.Len() != len(a.entries) {
			t.Fatalf("%d windows held (%d in order), want at most 3", len(a.entries), a.order.Len())
		}
	}
	got := a.Flush(t0.Add(2*time.Second), false)
	if len(got) != 1 || got[0].Event.HostProcessID != 1 || got[0].Aggregate.Count != 2 {
		t.Fatalf("flushed %+v, want process 1's aggregate of 2 repeats", got)
	}
	// Process 1's finding is news again: its window was closed.
	if !a.Offer(openFinding(1, "sh", "/a/release_agent", 20), t0.Add(3*time.Second)) {
		t.Fatal("a finding whose window closed early must be written at once")
	}
	if got := a.Flush(t0.Add(time.Hour), true); len(got) != 0 {
		t.Fatalf("final flush: %d aggregates, want none (no repeats held)", len(got))
	}
	if len(a.entries) != 0 || a.order.Len() != 0 {
		t.Fatalf("after the final flush: %d windows, %d in order", len(a.entries), a.order.Len())
	}
}
