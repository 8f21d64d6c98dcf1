package rule

import (
	"escapewatch/internal/event"
	"escapewatch/internal/finding"
)

// EW1005 is "records lost or repeated": the kernel side did not send some records of one origin (over its budget,
// or the ring full). It is never silent: the finding says how many were lost and how many only repeated the
// origin's last record sent, from which cgroup or container, and, when they were about a hierarchy, its
// release_agent now and who set it (the kernel's state, which losses never touch). It fires whatever the scope: a
// loss is the sensor's own integrity, not a process's behaviour.
type EW1005 struct{}

// Metadata describes EW-1005.
func (EW1005) Metadata() finding.Metadata {
	return finding.Metadata{
		ID:          "EW-1005",
		Version:     "1",
		Name:        "records lost or repeated",
		EventName:   "records_lost",
		Description: "Records of one origin (a cgroup: a container, a namespace or the host) did not reach escapewatch: it sent more than its budget, or the ring buffer was full. Repeated ones said what the origin's last record delivered said; lost ones said something else. A storm of release_agent activity may be hiding an escape: the release_agent of the hierarchy concerned, and who set it, are those of the kernel now.",
		Properties:  escapeToHost(2),
	}
}

// Selectors: losses of every origin.
func (EW1005) Selectors() []Selector {
	return []Selector{{EventName: event.RecordsLost, Origin: OriginAny}}
}

// OnEvent reports the losses. Severity is 1 when nothing was lost (repeats only), and rises to 3 when they were
// about a hierarchy whose release_agent a process outside the host set.
func (r EW1005) OnEvent(ev *event.Event) (*finding.Finding, error) {
	lost, ok := argValue(ev, "lost").(uint64)
	if !ok {
		return nil, ErrMistypedArg
	}
	repeated, ok := argValue(ev, "repeated").(uint64)
	if !ok {
		return nil, ErrMistypedArg
	}
	data := map[string]any{"lost": lost, "repeated": repeated, "lastLost": argString(ev, "last_lost"), "cgroup": argString(ev, "cgroup")}
	meta := r.Metadata()
	if lost == 0 {
		meta.Properties = escapeToHost(1)
	}
	if h := argString(ev, "hierarchy"); h != "" {
		data["hierarchy"] = h
		data["releaseAgent"] = argString(ev, "release_agent")
		data["setBy"] = map[string]any{
			"how": argString(ev, "set_how"), "trust": argString(ev, "set_trust"),
			"hostProcessId": argValue(ev, "set_by_pid"), "processName": argString(ev, "set_by_comm"),
		}
		if argString(ev, "set_trust") == event.TrustOutside && argString(ev, "release_agent") != "" {
			meta.Properties = escapeToHost(3)
		}
	}
	return &finding.Finding{SigMetadata: meta, Event: *ev, Data: data}, nil
}
