package rule

import (
	"escapewatch/internal/event"
	"escapewatch/internal/finding"
)

// EW1001 is "release_agent changed": the ground truth that a hierarchy's release_agent was written, whatever
// path, descriptor or process did it (a descriptor opened before the sensor started, a bind mount of the file
// under another name, io_uring, splice...). TRC-1010 sees opens; this sees the write and the value.
type EW1001 struct{}

// Metadata describes EW-1001. Clearing the value (an empty agent) is reported at severity 1 instead of 3.
func (EW1001) Metadata() finding.Metadata {
	return finding.Metadata{
		ID:          "EW-1001",
		Version:     "1",
		Name:        "release_agent changed",
		EventName:   "release_agent_changed",
		Description: "A cgroup v1 hierarchy's release_agent was written. The kernel runs that path as root on the host when a cgroup of the hierarchy with notify_on_release empties: setting it from a container or namespace is the release_agent container escape.",
		Properties:  escapeToHost(3),
	}
}

// Selectors: the sensor's release_agent_changed events, within the engine's scope.
func (EW1001) Selectors() []Selector {
	return []Selector{{EventName: event.ReleaseAgentChanged, Origin: event.OriginContainer}}
}

// OnEvent reports every write. Data says what changed: the hierarchy, the new value, the old one when known,
// and whether the kernel refused the write (returnValue < 0: the value did not change).
func (r EW1001) OnEvent(ev *event.Event) (*finding.Finding, error) {
	value, err := stringArg(ev, "value")
	if err != nil {
		return nil, err
	}
	hierarchy, err := stringArg(ev, "hierarchy")
	if err != nil {
		return nil, err
	}
	data := map[string]any{"hierarchy": hierarchy, "value": value, "refused": ev.ReturnValue < 0}
	if a, ok := ev.Arg("old_value"); ok {
		data["oldValue"] = a.Value
	}
	md := r.Metadata()
	if value == "" {
		md.Properties["Severity"] = 1
	}
	return &finding.Finding{SigMetadata: md, Event: *ev, Data: data}, nil
}
