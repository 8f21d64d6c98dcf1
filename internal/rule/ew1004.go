package rule

import (
	"sync"

	"escapewatch/internal/event"
	"escapewatch/internal/finding"
)

// EW1004 is "release agent executed": the kernel started, as root on the host, a release agent that the host
// did not set. The kernel side decides it at the exec, from the kernel's own state (the current release_agent of
// every hierarchy, and its record of who set each one), however the value was planted and whether or not any
// event about the planting reached user space. This rule turns that verdict (the helper's "escape" argument)
// into the finding, and links it to the planting it saw, when it saw one.
type EW1004 struct {
	mu        sync.Mutex
	plantings map[string]planting // by value: the last accepted write or mount option that set it
}

type planting struct {
	rule  string // the rule that reports such a planting: EW-1001 or EW-1002
	event event.Event
}

// maxRememberedPlantings bounds the memory of plantings. It only serves the link in the finding: the verdict
// never depends on it.
const maxRememberedPlantings = 1024

// NewEW1004 returns the rule with an empty memory.
func NewEW1004() *EW1004 { return &EW1004{plantings: map[string]planting{}} }

// Metadata describes EW-1004.
func (*EW1004) Metadata() finding.Metadata {
	return finding.Metadata{
		ID:          "EW-1004",
		Version:     "1",
		Name:        "release agent executed",
		EventName:   "release_agent_executed",
		Description: "The kernel ran, as root on the host, a cgroup release agent that the host did not set: the release_agent container escape succeeded, or was stopped at the agent's start under enforcement.",
		Properties:  escapeToHost(4),
	}
}

// Selectors: every planting (whatever the scope: the exec must be linked to it) and every user-mode helper the
// kernel starts (always on the host).
func (*EW1004) Selectors() []Selector {
	return []Selector{
		{EventName: event.ReleaseAgentChanged, Origin: OriginAny},
		{EventName: event.ReleaseAgentMountOption, Origin: OriginAny},
		{EventName: event.UsermodeHelperExec, Origin: OriginAny},
	}
}

// OnEvent remembers plantings by value and fires on a helper exec the kernel judged to be the escape.
func (r *EW1004) OnEvent(ev *event.Event) (*finding.Finding, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch ev.EventName {
	case event.ReleaseAgentChanged, event.ReleaseAgentMountOption:
		value, err := stringArg(ev, "value")
		if err != nil {
			return nil, err
		}
		if ev.ReturnValue < 0 || value == "" {
			return nil, nil
		}
		if len(r.plantings) >= maxRememberedPlantings {
			clear(r.plantings)
		}
		rule := "EW-1001"
		if ev.EventName == event.ReleaseAgentMountOption {
			rule = "EW-1002"
		}
		r.plantings[value] = planting{rule: rule, event: *ev}
	case event.UsermodeHelperExec:
		path, err := stringArg(ev, "pathname")
		if err != nil {
			return nil, err
		}
		if escape, ok := argValue(ev, "escape").(bool); !ok || !escape {
			return nil, nil
		}
		return &finding.Finding{SigMetadata: r.Metadata(), Event: *ev, Data: r.data(ev, path)}, nil
	}
	return nil, nil
}

// data says which hierarchy's agent ran, how and by whom its value was set (the kernel's record), and links to
// the planting finding.
func (r *EW1004) data(ev *event.Event, path string) map[string]any {
	how := argString(ev, "set_how")
	if how == "" {
		how = event.SetUnknown // started as a release agent, but no hierarchy holds the value any more
	}
	setBy := map[string]any{"how": how, "trust": argString(ev, "set_trust")}
	if setBy["trust"] == "" {
		setBy["trust"] = event.TrustUnknown
	}
	for key, name := range map[string]string{
		"timestamp": "set_at", "hostProcessId": "set_by_pid", "processName": "set_by_comm",
		"mountNamespace": "set_by_mnt_ns", "pidNamespace": "set_by_pid_ns", "cgroupId": "set_by_cgroup_id",
	} {
		if v := argValue(ev, name); v != nil {
			setBy[key] = v
		}
	}
	data := map[string]any{"agent": path, "hierarchy": argString(ev, "hierarchy"), "setBy": setBy}
	switch how {
	case event.SetUnwatched, event.SetUnknown, event.SetBeforeStart:
		data["investigate"] = "the value was set by a path escapewatch did not see (" + how + "): find how it was planted"
	}
	if p, ok := r.plantings[path]; ok {
		data["linkedRule"] = p.rule
		data["writtenBy"] = map[string]any{
			"timestamp":     p.event.Timestamp,
			"hostProcessId": p.event.HostProcessID,
			"processName":   p.event.ProcessName,
			"origin":        event.OriginOf(&p.event),
			"containerId":   p.event.ContainerID,
			"podName":       p.event.Kubernetes.PodName,
			"hierarchy":     argString(&p.event, "hierarchy"),
			"pathname":      argString(&p.event, "pathname"),
		}
	}
	return data
}

// argValue returns an argument's value, or nil when the event has no such argument.
func argValue(ev *event.Event, name string) any {
	for _, a := range ev.Args {
		if a.Name == name {
			return a.Value
		}
	}
	return nil
}

func argString(ev *event.Event, name string) string {
	s, _ := stringArg(ev, name)
	return s
}
