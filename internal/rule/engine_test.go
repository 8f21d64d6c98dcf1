package rule

import (
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"

	"escapewatch/internal/event"
	"escapewatch/internal/finding"
)

// withOrigin sets the origin fields as Tracee does (context flags and
// container ID); Tracee has no namespaced class, so that one is set as the
// live sensor does.
func withOrigin(ev event.Event, origin string) event.Event {
	switch origin {
	case event.OriginContainer:
		ev.ContainerID, ev.Container.ID = "c0ffee", "c0ffee"
		ev.ContextFlags.ContainerStarted = true
	case event.OriginContainerInit:
		ev.ContainerID, ev.Container.ID = "c0ffee", "c0ffee"
	case event.OriginNamespaced:
		ev.Origin = origin
	}
	return ev
}

// fromSensor sets the origin as the live sensor does, over whatever the
// Tracee fields say.
func fromSensor(ev event.Event, origin string) event.Event {
	ev = withOrigin(ev, event.OriginContainer)
	ev.Origin = origin
	return ev
}

func TestEngineScope(t *testing.T) {
	write := openEvent("/tmp/cgrp/release_agent", int32(oWrOnly))
	tests := []struct {
		name   string
		scope  Scope
		origin string
		sensor bool // origin set by the live sensor rather than Tracee's fields
		want   int
	}{
		{"container in replay scope", ReplayScope, event.OriginContainer, false, 1},
		{"host filtered by replay scope", ReplayScope, event.OriginHost, false, 0},
		{"container-init filtered, as by Tracee", ReplayScope, event.OriginContainerInit, false, 0},
		{"namespaced filtered by replay scope", ReplayScope, event.OriginNamespaced, false, 0},
		{"namespaced accepted by live scope", LiveScope, event.OriginNamespaced, false, 1},
		{"container accepted by live scope", LiveScope, event.OriginContainer, false, 1},
		{"host filtered by live scope", LiveScope, event.OriginHost, false, 0},
		{"sensor's host overrides container fields", LiveScope, event.OriginHost, true, 0},
		{"sensor's namespaced accepted", LiveScope, event.OriginNamespaced, true, 1},
		{"host accepted by all", ScopeAll, event.OriginHost, false, 1},
		{"container-init accepted when asked", ScopeContainerInit, event.OriginContainerInit, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng, err := NewEngine(Default(), tt.scope)
			if err != nil {
				t.Fatal(err)
			}
			ev := withOrigin(write, tt.origin)
			if tt.sensor {
				ev = fromSensor(write, tt.origin)
			}
			if got := eng.Process(&ev); len(got) != tt.want {
				t.Errorf("%d findings, want %d", len(got), tt.want)
			}
		})
	}
}

// fakeRule returns what it is told, to drive the engine's counters.
type fakeRule struct {
	id     string
	sels   []Selector
	err    error
	called int
}

func (r *fakeRule) Metadata() finding.Metadata { return finding.Metadata{ID: r.id} }
func (r *fakeRule) Selectors() []Selector      { return r.sels }
func (r *fakeRule) OnEvent(ev *event.Event) (*finding.Finding, error) {
	r.called++
	if r.err != nil {
		return &finding.Finding{}, r.err // a finding with an error must be dropped
	}
	return &finding.Finding{SigMetadata: r.Metadata(), Event: *ev}, nil
}

func TestEngineCounters(t *testing.T) {
	broken := &fakeRule{id: "FAKE-ERR", sels: []Selector{{EventName: "e", Origin: OriginAny}}, err: errors.New("boom")}
	eng, err := NewEngine([]Rule{TRC1010{}, broken}, ReplayScope)
	if err != nil {
		t.Fatal(err)
	}
	events := []event.Event{
		withOrigin(openEvent("/tmp/cgrp/release_agent", int32(oWrOnly)), event.OriginContainer), // finding
		withOrigin(renameEvent("/tmp/cgrp/release_agent"), event.OriginContainer),               // finding
		withOrigin(openEvent("/etc/passwd", int32(oRdOnly)), event.OriginContainer),             // nothing
		withOrigin(openEvent("/tmp/cgrp/release_agent", "O_BOGUS"), event.OriginContainer),      // mistyped
		withOrigin(renameEvent(nil), event.OriginContainer),                                     // missing
		withOrigin(openEvent("/tmp/cgrp/release_agent", int32(oWrOnly)), event.OriginHost),      // out of scope
		{EventName: "e"}, // error from the fake rule
		{EventName: "unselected"},
	}
	total := 0
	for i := range events {
		total += len(eng.Process(&events[i]))
	}
	want := Stats{Events: 8, Rules: map[string]RuleStats{
		"TRC-1010": {Findings: 2, SkippedArgs: 2},
		"FAKE-ERR": {Errors: 1},
	}}
	if got := eng.Stats(); !reflect.DeepEqual(got, want) {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	if total != 2 {
		t.Errorf("%d findings returned, want 2", total)
	}
}

func TestEngineRouting(t *testing.T) {
	// Two selectors for one event: delivered once, and OriginAny wins.
	r := &fakeRule{id: "FAKE", sels: []Selector{
		{EventName: "e", Origin: event.OriginContainer},
		{EventName: "e", Origin: OriginAny},
	}}
	eng, err := NewEngine([]Rule{r}, ReplayScope)
	if err != nil {
		t.Fatal(err)
	}
	host := event.Event{EventName: "e"}
	if got := eng.Process(&host); len(got) != 1 || r.called != 1 {
		t.Errorf("%d findings after %d calls, want 1 after 1", len(got), r.called)
	}
}

// TestSkipUnrouted: an event no rule selects is counted as Process counts it; one a rule selects, whatever its
// origin, is left to Process.
func TestSkipUnrouted(t *testing.T) {
	eng, err := NewEngine(Default(), ReplayScope)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		want bool
	}{
		{event.SecurityFileOpen, false},
		{event.SecurityInodeRename, false},
		{event.ReleaseAgentChanged, false}, // selected with OriginAny
		{"openat", true},
		{"", true},
		{"Security_File_Open", true}, // routing is by the exact name, as in Process
	}
	skipped := 0
	for _, tt := range tests {
		if got := eng.SkipUnrouted([]byte(tt.name)); got != tt.want {
			t.Errorf("SkipUnrouted(%q) = %v, want %v", tt.name, got, tt.want)
		}
		if tt.want {
			skipped++
		}
	}
	if got := eng.Stats(); got.Events != uint64(skipped) {
		t.Errorf("Stats().Events = %d, want the %d skipped events", got.Events, skipped)
	}
	if n := testing.AllocsPerRun(100, func() { eng.SkipUnrouted([]byte("openat")) }); n != 0 {
		t.Errorf("SkipUnrouted allocates %v times, want 0", n)
	}
}

func TestNewEngineErrors(t *testing.T) {
	tests := []struct {
		name  string
		rules []Rule
		scope Scope
		want  string
	}{
		{"empty scope", Default(), 0, "empty scope"},
		{"duplicate ID", []Rule{TRC1010{}, TRC1010{}}, ReplayScope, `rule ID "TRC-1010" is empty or not unique`},
		{"empty ID", []Rule{&fakeRule{}}, ReplayScope, `rule ID "" is empty or not unique`},
		{"no event name", []Rule{&fakeRule{id: "F", sels: []Selector{{Origin: OriginAny}}}}, ReplayScope, "selector without an event name"},
		{"bad origin", []Rule{&fakeRule{id: "F", sels: []Selector{{EventName: "e", Origin: "host"}}}}, ReplayScope, `selector origin "host"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewEngine(tt.rules, tt.scope); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewEngine error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestEngineConcurrent(t *testing.T) {
	eng, err := NewEngine(Default(), ReplayScope)
	if err != nil {
		t.Fatal(err)
	}
	const workers, perWorker = 4, 250
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perWorker {
				ev := withOrigin(openEvent("/tmp/cgrp/release_agent", int32(oWrOnly)), event.OriginContainer)
				eng.Process(&ev)
				_ = eng.Stats()
			}
		}()
	}
	wg.Wait()
	s := eng.Stats()
	if s.Events != workers*perWorker || s.Rules["TRC-1010"].Findings != workers*perWorker {
		t.Errorf("Stats = %+v, want %d events and findings", s, workers*perWorker)
	}
}

func TestParseScope(t *testing.T) {
	tests := []struct {
		in      string
		want    Scope
		wantErr string
	}{
		{"container", ScopeContainer, ""},
		{"container,namespaced", LiveScope, ""},
		{" namespaced , container ", LiveScope, ""},
		{"host", ScopeHost, ""},
		{"container-init", ScopeContainerInit, ""},
		{"all", ScopeAll, ""},
		{"container,all", ScopeAll, ""},
		{"container,container", ScopeContainer, ""},
		{"containers", 0, `unknown origin "containers"`},
		{"container,,host", 0, `unknown origin ""`},
		{"", 0, `unknown origin ""`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseScope(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseScope(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseScope(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if back, err := ParseScope(got.String()); err != nil || back != got {
				t.Errorf("String() %q does not parse back: %v, %v", got.String(), back, err)
			}
		})
	}
}
