// Package suppress keeps expected and repeated findings from paging anyone without losing them: allow-listed
// findings are counted, and repeats of a finding within a window are folded into one finding with a count.
package suppress

import (
	"cmp"
	"slices"
	"time"

	"escapewatch/internal/event"
	"escapewatch/internal/finding"
)

// Allow is one entry of the allowlist (an entry of the configuration's "allow"): every field set must equal the
// finding's; empty fields match anything. A suppressed finding is counted, never silently lost.
type Allow struct {
	Rule        string `yaml:"rule"`
	ProcessName string `yaml:"processName"`
	Executable  string `yaml:"executable"`
	Pathname    string `yaml:"pathname"` // pathname for opens, new_path for renames
	Origin      string `yaml:"origin"`
	ContainerID string `yaml:"containerId"`
}

// Allowlist matches findings that are expected.
type Allowlist []Allow

// Match reports whether f matches an entry: every field the entry sets equals the finding's.
func (l Allowlist) Match(f *finding.Finding) bool {
	for _, a := range l {
		if matches(a.Rule, f.SigMetadata.ID) && matches(a.ProcessName, f.Event.ProcessName) &&
			matches(a.Executable, f.Event.Executable.Path) && matches(a.Pathname, target(&f.Event)) &&
			matches(a.Origin, event.OriginOf(&f.Event)) && matches(a.ContainerID, f.Event.ContainerID) {
			return true
		}
	}
	return false
}

func matches(want, got string) bool { return want == "" || want == got }

// target is the file a finding is about: pathname for opens, new_path for renames.
func target(ev *event.Event) string {
	for _, name := range []string{"pathname", "new_path"} {
		if a, ok := ev.Arg(name); ok {
			if s, ok := a.Value.(string); ok {
				return s
			}
		}
	}
	return ""
}

// key says which findings are the same: rule, process, file, action, the value written (a new value is news
// at once, never held back for a window) and whether the kernel refused it.
type key struct {
	rule, comm, file, action, value string
	pid                             int
	refused                         bool
}

func keyOf(f *finding.Finding) key {
	value, _ := f.Data["value"].(string)
	return key{rule: f.SigMetadata.ID, comm: f.Event.ProcessName, file: target(&f.Event), action: f.Event.Action,
		value: value, pid: f.Event.HostProcessID, refused: f.Event.ReturnValue < 0}
}

type entry struct {
	opened  time.Time // when the first finding was written
	repeats int
	last    finding.Finding
	first   int64
}

// Aggregator folds repeats. The first finding of a kind is written at once; repeats within the window are held
// and come out as one finding with an Aggregate when the window closes. Not safe for concurrent use.
type Aggregator struct {
	window  time.Duration
	entries map[key]*entry
	closed  []finding.Finding // aggregates whose key came back after its window, before a Flush
}

// NewAggregator folds repeats within window; a window of 0 folds nothing.
func NewAggregator(window time.Duration) *Aggregator {
	return &Aggregator{window: window, entries: map[key]*entry{}}
}

// Offer reports whether f is to be written now; false means it was folded into a coming aggregate.
func (a *Aggregator) Offer(f finding.Finding, now time.Time) bool {
	if a.window <= 0 {
		return true
	}
	k := keyOf(&f)
	e, ok := a.entries[k]
	if !ok || now.Sub(e.opened) >= a.window {
		if ok && e.repeats > 0 {
			a.closed = append(a.closed, aggregate(e)) // its window closed before a Flush: keep it for the next
		}
		a.entries[k] = &entry{opened: now, last: f}
		return true
	}
	if e.repeats == 0 {
		e.first = int64(f.Event.Timestamp)
	}
	e.repeats++
	e.last = f
	return false
}

// Flush returns the aggregates whose window has closed by now (all of them when final), oldest first.
func (a *Aggregator) Flush(now time.Time, final bool) []finding.Finding {
	out := a.closed
	a.closed = nil
	for k, e := range a.entries {
		if !final && now.Sub(e.opened) < a.window {
			continue
		}
		if e.repeats > 0 {
			out = append(out, aggregate(e))
		}
		delete(a.entries, k)
	}
	slices.SortFunc(out, func(x, y finding.Finding) int { return cmp.Compare(x.Aggregate.FirstSeen, y.Aggregate.FirstSeen) })
	return out
}

func aggregate(e *entry) finding.Finding {
	f := e.last
	f.Aggregate = &finding.Aggregate{Count: e.repeats, FirstSeen: e.first, LastSeen: int64(f.Event.Timestamp)}
	return f
}
