package rule

import (
	"escapewatch/internal/event"
	"escapewatch/internal/finding"
)

// EW1002 is "release_agent set by mount option": a cgroup v1 hierarchy created or reconfigured with
// release_agent=PATH (mount(2), fsconfig even without fsmount, remount). No file is opened or written, so
// open- and write-based rules never see it.
type EW1002 struct{}

// Metadata describes EW-1002.
func (EW1002) Metadata() finding.Metadata {
	return finding.Metadata{
		ID:          "EW-1002",
		Version:     "1",
		Name:        "release_agent set by mount option",
		EventName:   "release_agent_mount_option",
		Description: "A cgroup v1 hierarchy was mounted or reconfigured with the release_agent option: the kernel runs that path as root on the host when a cgroup of the hierarchy with notify_on_release empties.",
		Properties:  escapeToHost(3),
	}
}

// Selectors: mount options, within the engine's scope.
func (EW1002) Selectors() []Selector {
	return []Selector{{EventName: event.ReleaseAgentMountOption, Origin: event.OriginContainer}}
}

// OnEvent reports every release_agent option; Data says whether the kernel refused it.
func (r EW1002) OnEvent(ev *event.Event) (*finding.Finding, error) {
	value, err := stringArg(ev, "value")
	if err != nil {
		return nil, err
	}
	return &finding.Finding{SigMetadata: r.Metadata(), Event: *ev,
		Data: map[string]any{"value": value, "refused": ev.ReturnValue < 0}}, nil
}
