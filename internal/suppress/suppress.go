// Package suppress keeps expected and repeated findings from paging anyone without losing them: allow-listed
// findings are counted, and repeats of a finding within a window are folded into one finding with a count.
package suppress

import (
	"cmp"
	"container/list"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"escapewatch/internal/event"
	"escapewatch/internal/finding"
	"escapewatch/internal/rule"
)

// Allow is one entry of the allowlist (an entry of the configuration's "allow"): every field set must equal the
// finding's; empty fields match anything. A suppressed finding is counted, never silently lost.
//
// What a process in a container chooses alone (its name, its executable's path, the paths in its own mount
// namespace, which rule its actions trip) must never be enough to match: Check refuses an entry that is not
// anchored to what the container cannot choose, the host (Origin "host") or the container's identity
// (ContainerID, Image), and an entry that can never match.
type Allow struct {
	Rule        string `yaml:"rule"`
	Origin      string `yaml:"origin"`      // container, container-init, namespaced or host, as the sensor classed the process
	ContainerID string `yaml:"containerId"` // the finding's Event.containerId, whole
	Image       string `yaml:"image"`       // the finding's Event.container.image, as the container runtime names it
	// Hierarchy is the cgroup v1 hierarchy's name as the kernel reports it (the name= mount option), on the
	// findings that carry one (EW-1001, EW-1003): the kernel's object, wherever the process mounted it.
	Hierarchy   string `yaml:"hierarchy"`
	ProcessName string `yaml:"processName"`
	Executable  string `yaml:"executable"`
	Pathname    string `yaml:"pathname"` // pathname for opens, new_path for renames; only with origin host
}

// The rules whose findings carry the hierarchy (the event's "hierarchy" argument) of the release_agent or
// notify_on_release written.
var hierarchyRules = map[string]bool{"EW-1001": true, "EW-1003": true}

// neverAllowed are the rules no entry matches, with why and what to do instead. EW-1004's event is the
// kernel's own helper, always a host process, whose name and path are the agent's, which the planter chose;
// and the kernel side reports it only when the host did not set that agent. EW-1005 is the sensor's own
// integrity: the records an origin lost may have hidden anything, and which hierarchy the last one was about
// is for that origin to arrange.
var neverAllowed = map[string]string{
	"EW-1004": "EW-1004 cannot be allowed: the kernel reports it only for an agent the host did not set, and its " +
		"process is the agent itself, named by whoever planted it. To trust a writer, list its cgroup in " +
		"enforceAllow; to trust a value already set when the sensor starts, list it in hostReleaseAgents",
	"EW-1005": "EW-1005 cannot be allowed: lost records may have hidden anything their origin did. A workload " +
		"that legitimately writes release_agent that often is the one to fix",
}

// MaxProcessName is the longest process name the kernel keeps (TASK_COMM_LEN less its NUL): a longer name
// is cut to this many bytes, so an entry with a longer one can never match.
const MaxProcessName = 15

// MaxHierarchyName is the longest hierarchy name the kernel accepts (MAX_CGROUP_ROOT_NAMELEN less its NUL).
const MaxHierarchyName = 63

var origins = []string{event.OriginContainer, event.OriginContainerInit, event.OriginNamespaced, event.OriginHost}

// EntryError is what is wrong with an Allow: Field is its YAML key ("" for the entry as a whole).
type EntryError struct {
	Field, Problem string
}

func (e *EntryError) Error() string {
	if e.Field == "" {
		return e.Problem
	}
	return e.Field + ": " + e.Problem
}

func entryErr(field, format string, args ...any) error {
	return &EntryError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// Check returns an *EntryError when the entry is refused: it matches every finding, it can be matched by a
// container alone, or it can never match.
func (a Allow) Check() error {
	if a == (Allow{}) {
		return entryErr("", "empty entry would allow every finding; set at least one field")
	}
	if a.Origin != "" && !slices.Contains(origins, a.Origin) {
		return entryErr("origin", "unknown origin %q (want %s)", a.Origin, strings.Join(origins, ", "))
	}
	if a.Rule != "" {
		if why, ok := neverAllowed[a.Rule]; ok {
			return entryErr("rule", "%s", why)
		}
		if !slices.Contains(ruleIDs, a.Rule) {
			return entryErr("rule", "unknown rule %q (want one of %s)", a.Rule, strings.Join(ruleIDs, ", "))
		}
	}
	if (a.Origin == event.OriginHost || a.Origin == event.OriginNamespaced) && (a.ContainerID != "" || a.Image != "") {
		return entryErr("origin", "%s processes have no container: an entry with origin %s and a containerId or image "+
			"can never match; keep one or the other", a.Origin, a.Origin)
	}
	if a.Origin != event.OriginHost && a.ContainerID == "" && a.Image == "" {
		return entryErr("", "%s can be matched by any container, which chooses its process names, executables and paths and "+
			"mounts a hierarchy where it likes: add origin: host for a host process, or the container's identity, "+
			"containerId: ID or image: NAME, as its findings show them (Event.containerId, Event.container.image); "+
			"to drop every finding of an origin, leave that origin out of scope instead", a)
	}
	if n := len(a.ProcessName); n > MaxProcessName {
		return entryErr("processName", "%q is %d bytes, and the kernel keeps at most %d of a process name (findings show it cut): "+
			"write processName: %q", a.ProcessName, n, MaxProcessName, a.ProcessName[:MaxProcessName])
	}
	if a.Executable != "" && !strings.HasPrefix(a.Executable, "/") {
		return entryErr("executable", "%q can never match: findings give the executable's absolute path", a.Executable)
	}
	if a.Pathname != "" {
		if a.Origin != event.OriginHost {
			return entryErr("pathname", "%q is a path in the process's own mount namespace, where a container mounts what it "+
				"likes (its own hierarchy at that very path, say): name the kernel's object instead, hierarchy: NAME "+
				"(the hierarchy's name= mount option, as the finding's Data.hierarchy shows it%s); pathname is kept "+
				"only with origin: host", a.Pathname, hierarchyHint(a.Pathname))
		}
		if !strings.HasPrefix(a.Pathname, "/") {
			return entryErr("pathname", "%q can never match: findings give absolute paths", a.Pathname)
		}
	}
	if a.Hierarchy != "" {
		if err := checkHierarchyName(a.Hierarchy); err != nil {
			return err
		}
		if a.Rule != "" && !hierarchyRules[a.Rule] {
			return entryErr("hierarchy", "%s findings carry no hierarchy, so this entry can never match: "+
				"remove hierarchy, or use rule EW-1001 or EW-1003", a.Rule)
		}
	}
	return nil
}

// hierarchyHint guesses, from a path such as /sys/fs/cgroup/systemd/release_agent, the hierarchy it likely names.
func hierarchyHint(p string) string {
	dir, file := path.Split(path.Clean(p))
	name := path.Base(dir)
	if (file != "release_agent" && file != "notify_on_release") || checkHierarchyName(name) != nil {
		return ""
	}
	return fmt.Sprintf("; e.g. hierarchy: %s if that directory holds the hierarchy named %s", name, name)
}

// checkHierarchyName refuses what the kernel refuses as a hierarchy name (cgroup1_parse_param): such an entry
// could never match.
func checkHierarchyName(name string) error {
	if len(name) > MaxHierarchyName {
		return entryErr("hierarchy", "%q is %d bytes; the kernel names hierarchies with at most %d, so it can never match",
			name, len(name), MaxHierarchyName)
	}
	for _, c := range []byte(name) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_') {
			return entryErr("hierarchy", "%q can never match: the kernel names hierarchies with letters, digits, '.', '-' and '_' "+
				"only (the name= mount option, not a path)", name)
		}
	}
	return nil
}

// ruleIDs are the IDs of the built-in rules.
var ruleIDs = func() []string {
	var ids []string
	for _, r := range rule.Default() {
		ids = append(ids, r.Metadata().ID)
	}
	return ids
}()

// String writes the fields the entry sets in YAML's flow style, for messages.
func (a Allow) String() string {
	var parts []string
	for _, f := range []struct{ key, value string }{
		{"rule", a.Rule}, {"origin", a.Origin}, {"containerId", a.ContainerID}, {"image", a.Image},
		{"hierarchy", a.Hierarchy}, {"processName", a.ProcessName}, {"executable", a.Executable}, {"pathname", a.Pathname},
	} {
		if f.value != "" {
			parts = append(parts, f.key+": "+f.value)
		}
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// Allowlist matches findings that are expected. Its entries are expected to have passed Check.
type Allowlist []Allow

// Match reports whether f matches an entry: every field the entry sets equals the finding's. The findings of
// neverAllowed rules never match.
func (l Allowlist) Match(f *finding.Finding) bool {
	if _, ok := neverAllowed[f.SigMetadata.ID]; ok {
		return false
	}
	for _, a := range l {
		if matches(a.Rule, f.SigMetadata.ID) && matches(a.Origin, event.OriginOf(&f.Event)) &&
			matches(a.ContainerID, f.Event.ContainerID) && matches(a.Image, f.Event.Container.ImageName) &&
			matches(a.Hierarchy, stringArg(&f.Event, "hierarchy")) && matches(a.ProcessName, f.Event.ProcessName) &&
			matches(a.Executable, f.Event.Executable.Path) && matches(a.Pathname, target(&f.Event)) {
			return true
		}
	}
	return false
}

func matches(want, got string) bool { return want == "" || want == got }

// stringArg is the event's argument name when it is a string, else "".
func stringArg(ev *event.Event, name string) string {
	if a, ok := ev.Arg(name); ok {
		if s, ok := a.Value.(string); ok {
			return s
		}
	}
	return ""
}

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
	order   *list.Element // in Aggregator.order
}

// summaries are the rules whose findings already summarise many events with their counts (EW-1005: one origin's
// losses in the last second): folding them would keep only the last one's counts.
var summaries = map[string]bool{"EW-1005": true}

// MaxAggregates bounds the findings an Aggregator holds: a storm of distinct findings (a new value each) would
// otherwise keep one per finding for a whole window. Beyond, the oldest window closes early: its aggregate, if
// it folded repeats, comes out with the next Flush (the first finding of each was written at once).
const MaxAggregates = 2048

// Aggregator folds repeats. The first finding of a kind is written at once; repeats within the window are held
// and come out as one finding with an Aggregate when the window closes. Not safe for concurrent use.
type Aggregator struct {
	window  time.Duration
	limit   int
	entries map[key]*entry
	order   *list.List        // of keys, oldest window first
	closed  []finding.Finding // aggregates whose window closed (the key came back after it, or it was the oldest of too many) before a Flush
}

// NewAggregator folds repeats within window; a window of 0 folds nothing. It holds at most MaxAggregates windows.
func NewAggregator(window time.Duration) *Aggregator {
	return newAggregator(window, MaxAggregates)
}

func newAggregator(window time.Duration, limit int) *Aggregator {
	return &Aggregator{window: window, limit: limit, entries: map[key]*entry{}, order: list.New()}
}

// close ends k's window: its aggregate, if any, waits for the next Flush.
func (a *Aggregator) close(k key, e *entry) {
	if e.repeats > 0 {
		a.closed = append(a.closed, aggregate(e))
	}
	a.order.Remove(e.order)
	delete(a.entries, k)
}

// Offer reports whether f is to be written now; false means it was folded into a coming aggregate.
func (a *Aggregator) Offer(f finding.Finding, now time.Time) bool {
	if a.window <= 0 || summaries[f.SigMetadata.ID] {
		return true
	}
	k := keyOf(&f)
	e, ok := a.entries[k]
	if !ok || now.Sub(e.opened) >= a.window {
		if ok {
			a.close(k, e) // its window closed before a Flush
		}
		for len(a.entries) >= a.limit {
			oldest := a.order.Front().Value.(key)
			a.close(oldest, a.entries[oldest])
		}
		a.entries[k] = &entry{opened: now, last: f, order: a.order.PushBack(k)}
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
	for el := a.order.Front(); el != nil; {
		k := el.Value.(key)
		e := a.entries[k]
		if !final && now.Sub(e.opened) < a.window {
			break // the windows behind opened later
		}
		el = el.Next()
		a.close(k, e)
	}
	out := a.closed
	a.closed = nil
	slices.SortFunc(out, func(x, y finding.Finding) int { return cmp.Compare(x.Aggregate.FirstSeen, y.Aggregate.FirstSeen) })
	return out
}

func aggregate(e *entry) finding.Finding {
	f := e.last
	f.Aggregate = &finding.Aggregate{Count: e.repeats, FirstSeen: e.first, LastSeen: int64(f.Event.Timestamp)}
	return f
}
