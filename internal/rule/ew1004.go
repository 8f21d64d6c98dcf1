package rule

import (
	"sync"
	"time"

	"escapewatch/internal/event"
	"escapewatch/internal/finding"
)

// EW1004 is "release agent executed": the kernel started, as root on the host, a program whose path is a
// value recently written to a release_agent by a container or namespaced process. The finding links back to
// that write: the escape chain as one story. It keeps the recent writes, so it is a stateful rule.
type EW1004 struct {
	mu     sync.Mutex
	writes map[string]agentWrite // by value
	// Window is how long a written value is remembered; 0 means DefaultAgentWindow.
	Window time.Duration
	now    func() time.Time
}

// DefaultAgentWindow is how long EW-1004 remembers a release_agent value: the kernel runs the agent when a
// cgroup empties, which may be long after the write.
const DefaultAgentWindow = 24 * time.Hour

// maxRememberedAgents bounds the memory of written values.
const maxRememberedAgents = 1024

type agentWrite struct {
	at    time.Time
	event event.Event
}

// NewEW1004 returns the rule with an empty memory.
func NewEW1004() *EW1004 { return &EW1004{writes: map[string]agentWrite{}, now: time.Now} }

// Metadata describes EW-1004.
func (*EW1004) Metadata() finding.Metadata {
	return finding.Metadata{
		ID:          "EW-1004",
		Version:     "1",
		Name:        "release agent executed",
		EventName:   "release_agent_executed",
		Description: "The kernel ran, as root on the host, a program that a container or namespaced process had written into a cgroup release_agent: the release_agent container escape succeeded.",
		Properties:  escapeToHost(4),
	}
}

// Selectors: every release_agent write (whatever the scope: a host-side exec must be linked to it) and every
// user-mode helper the kernel starts (always on the host).
func (*EW1004) Selectors() []Selector {
	return []Selector{
		{EventName: event.ReleaseAgentChanged, Origin: OriginAny},
		{EventName: event.UsermodeHelperExec, Origin: OriginAny},
	}
}

// OnEvent remembers writes by value and fires on a helper whose path is a remembered value written from a
// container or namespace. Host writes are remembered too (a later container write of the same value
// replaces them) but do not fire: a host's own agent (systemd's) runs all the time.
func (r *EW1004) OnEvent(ev *event.Event) (*finding.Finding, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	window := r.Window
	if window <= 0 {
		window = DefaultAgentWindow
	}
	switch ev.EventName {
	case event.ReleaseAgentChanged:
		value, err := stringArg(ev, "value")
		if err != nil {
			return nil, err
		}
		if ev.ReturnValue < 0 || value == "" {
			return nil, nil
		}
		if len(r.writes) >= maxRememberedAgents {
			r.forget(now, window)
		}
		r.writes[value] = agentWrite{at: now, event: *ev}
	case event.UsermodeHelperExec:
		path, err := stringArg(ev, "pathname")
		if err != nil {
			return nil, err
		}
		w, ok := r.writes[path]
		if !ok || now.Sub(w.at) > window || event.OriginOf(&w.event) == event.OriginHost {
			return nil, nil
		}
		return &finding.Finding{SigMetadata: r.Metadata(), Event: *ev, Data: map[string]any{
			"agent": path,
			"writtenBy": map[string]any{
				"timestamp":     w.event.Timestamp,
				"hostProcessId": w.event.HostProcessID,
				"processName":   w.event.ProcessName,
				"origin":        event.OriginOf(&w.event),
				"containerId":   w.event.ContainerID,
				"podName":       w.event.Kubernetes.PodName,
				"hierarchy":     argString(&w.event, "hierarchy"),
				"pathname":      argString(&w.event, "pathname"),
			},
			"linkedRule": "EW-1001",
		}}, nil
	}
	return nil, nil
}

// forget drops expired values, or all of them if none expired.
func (r *EW1004) forget(now time.Time, window time.Duration) {
	for v, w := range r.writes {
		if now.Sub(w.at) > window {
			delete(r.writes, v)
		}
	}
	if len(r.writes) >= maxRememberedAgents {
		clear(r.writes)
	}
}

func argString(ev *event.Event, name string) string {
	s, _ := stringArg(ev, name)
	return s
}
