package rule

import (
	"escapewatch/internal/event"
	"escapewatch/internal/finding"
)

// EW1003 is "notify_on_release enabled" from a container or namespace: the second half of the release_agent
// escape (the kernel runs the agent only for cgroups with the flag on).
type EW1003 struct{}

// Metadata describes EW-1003.
func (EW1003) Metadata() finding.Metadata {
	return finding.Metadata{
		ID:          "EW-1003",
		Version:     "1",
		Name:        "notify_on_release enabled",
		EventName:   "notify_on_release_enabled",
		Description: "A cgroup v1 notify_on_release was turned on. With a release_agent set, the kernel runs the agent as root on the host when that cgroup empties: the trigger of the release_agent container escape.",
		Properties:  escapeToHost(2),
	}
}

// Selectors: notify_on_release writes, within the engine's scope.
func (EW1003) Selectors() []Selector {
	return []Selector{{EventName: event.NotifyOnReleaseChanged, Origin: event.OriginContainer}}
}

// OnEvent fires when the flag is on after the write (turning it off is not a threat). Data says whether the
// kernel refused the write: then the flag was on already.
func (r EW1003) OnEvent(ev *event.Event) (*finding.Finding, error) {
	a, ok := ev.Arg("enabled")
	if !ok || a.Value == nil {
		return nil, ErrMissingArg
	}
	enabled, ok := a.Value.(bool)
	if !ok {
		return nil, ErrMistypedArg
	}
	if !enabled {
		return nil, nil
	}
	hierarchy, _ := stringArg(ev, "hierarchy")
	return &finding.Finding{SigMetadata: r.Metadata(), Event: *ev,
		Data: map[string]any{"hierarchy": hierarchy, "refused": ev.ReturnValue < 0}}, nil
}
