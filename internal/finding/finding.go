// Package finding is what a rule reports: Tracee's detect.Finding shape,
// {"SigMetadata":{...},"Event":{...},"Data":...}, with the triggering event
// in Tracee's trace.Event JSON.
package finding

import (
	"encoding/json"

	"escapewatch/internal/event"
)

// Metadata describes the rule that produced a finding. It has Tracee's
// detect.SignatureMetadata keys (no JSON tags, so the keys are the field
// names) less Tags, which escapewatch's rules do not publish. Properties is
// a map as in Tracee, so its keys are written sorted; severity values must
// be Go integers to be written as JSON integers.
type Metadata struct {
	ID          string
	Version     string
	Name        string
	EventName   string
	Description string
	Properties  map[string]any
}

// Finding is one detection: which rule, on which event, with what data.
type Finding struct {
	SigMetadata Metadata
	Event       event.Event
	Data        map[string]any
	// Aggregate is escapewatch's extension, set only on a finding that stands for repeats: identical findings
	// (same rule, process, file, value, verdict, action) that followed an earlier one within the aggregation window.
	Aggregate *Aggregate `json:",omitempty"`
}

// Aggregate counts the repeats a finding stands for. Event is the last of them.
type Aggregate struct {
	Count     int   // repeats folded into this finding, not counting the first one written when it happened
	FirstSeen int64 // Event.Timestamp of the first repeat, ns since the epoch
	LastSeen  int64 // Event.Timestamp of the last repeat
}

// MarshalJSON writes an empty Data as null, as Tracee does for rules that
// return no data, so that nil and empty maps are indistinguishable.
func (f Finding) MarshalJSON() ([]byte, error) {
	type plain Finding // no MarshalJSON method, so no recursion
	if len(f.Data) == 0 {
		f.Data = nil
	}
	return json.Marshal(plain(f))
}
