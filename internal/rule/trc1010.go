package rule

import (
	"path"

	"escapewatch/internal/event"
	"escapewatch/internal/finding"
)

// TRC1010 is Tracee's signature TRC-1010, "Cgroups release agent file
// modification" (signatures/golang/cgroup_release_agent_modification.go),
// rule for rule: it matches a file name, not the cgroup file itself. The
// live sensor's kernel filter is what keeps /tmp/release_agent out.
type TRC1010 struct{}

// trc1010Description is the Description published in TRC-1010's
// documentation (shared/seeds), which the spec makes authoritative over
// Tracee's source, whose text is a different sentence. The spec's own copy
// stops at "container escaping." while calling itself "the seed's text"; it
// is a truncated transcription, so the seed's full sentence is used.
const trc1010Description = "The signature monitors the modification of the Cgroup release agent file. " +
	"Unauthorized changes to this file may be indicative of an adversary trying to leverage Cgroup " +
	"features for privilege escalation or container escaping techniques."

const releaseAgent = "release_agent"

// Metadata returns TRC-1010's published metadata.
func (TRC1010) Metadata() finding.Metadata {
	return finding.Metadata{
		ID:          "TRC-1010",
		Version:     "1",
		Name:        "Cgroups release agent file modification",
		EventName:   "cgroup_release_agent",
		Description: trc1010Description,
		Properties:  escapeToHost(3),
	}
}

// Selectors returns Tracee's selectors: both events, from containers.
func (TRC1010) Selectors() []Selector {
	return []Selector{
		{EventName: event.SecurityFileOpen, Origin: event.OriginContainer},
		{EventName: event.SecurityInodeRename, Origin: event.OriginContainer},
	}
}

// OnEvent fires on an open for writing (O_WRONLY or O_RDWR access mode) of
// a file whose path.Base is "release_agent", and on a rename whose new path
// has that base name. As in Tracee, flags are checked before pathname, so
// a read-only open needs no pathname, and path.Base ignores trailing
// slashes.
func (r TRC1010) OnEvent(ev *event.Event) (*finding.Finding, error) {
	var p string
	switch ev.EventName {
	case event.SecurityFileOpen:
		flags, err := openFlagsArg(ev, "flags")
		if err != nil {
			return nil, err
		}
		if mode := flags & event.OpenAccMode; mode != event.OpenWrOnly && mode != event.OpenRdWr {
			return nil, nil
		}
		if p, err = stringArg(ev, "pathname"); err != nil {
			return nil, err
		}
	case event.SecurityInodeRename:
		var err error
		if p, err = stringArg(ev, "new_path"); err != nil {
			return nil, err
		}
	default:
		return nil, nil
	}
	if path.Base(p) != releaseAgent {
		return nil, nil
	}
	return &finding.Finding{SigMetadata: r.Metadata(), Event: *ev}, nil
}
