package finding

import (
	"encoding/json"

	"escapewatch/internal/event"
)

// Rank orders findings by what losing one would cost. Every queue and spool between the kernel and a receiver
// is bounded, so a flood that outruns an output must shed something: what sheds is always of the lowest rank
// there, the oldest of it first, and only a finding of a higher rank may push out one already kept. So a
// container that floods the sensor with findings cannot push out the escape that follows them.
//
// The rule's severity comes first: EW-1004 (the escape ran) is the only rule of severity 4, so it outranks
// every other finding. Within a severity, a finding about a process outside the host's namespaces (a
// container's or a namespace's: where a planting comes from) outranks one about a host process, and a first
// finding outranks an aggregate of repeats (the first already told the receiver what happened).
type Rank int

// MaxRank bounds ranks: severities above 7 count as 7.
const MaxRank Rank = 31

// RankOf is f's rank.
func RankOf(f *Finding) Rank {
	sev, _ := Severity(f.SigMetadata.Properties)
	r := Rank(min(max(sev, 0), 7)) << 2
	if event.OriginOf(&f.Event) != event.OriginHost {
		r |= 2
	}
	if f.Aggregate == nil {
		r |= 1
	}
	return r
}

// Severity is the severity a rank was made from.
func (r Rank) Severity() int { return int(r >> 2) }

// Severity reads Properties["Severity"]: an int from the rules, a json.Number or float64 from a decoded line.
// ok is false when it is missing or not a number.
func Severity(props map[string]any) (sev int64, ok bool) {
	switch v := props["Severity"].(type) {
	case int:
		return int64(v), true
	case int64:
		return v, true
	case float64:
		return int64(v), true
	case json.Number:
		n, err := v.Int64()
		return n, err == nil
	default:
		return 0, false
	}
}
