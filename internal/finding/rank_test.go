package finding

import (
	"encoding/json"
	"testing"

	"escapewatch/internal/event"
)

func TestRank(t *testing.T) {
	rank := func(sev any, origin string, aggregate bool) Rank {
		f := Finding{SigMetadata: Metadata{Properties: map[string]any{"Severity": sev}}, Event: event.Event{Origin: origin}}
		if aggregate {
			f.Aggregate = &Aggregate{Count: 2}
		}
		return RankOf(&f)
	}
	// From the most important down: each outranks the next, unless marked as its equal.
	order := []struct {
		name  string
		rank  Rank
		equal bool // ranks with the one before
	}{
		{"the escape ran (EW-1004, severity 4, on the host)", rank(4, event.OriginHost, false), false},
		{"repeats of the escape", rank(4, event.OriginHost, true), false},
		{"a planting from a container", rank(3, event.OriginContainer, false), false},
		{"a planting from a namespace, decoded from a spool", rank(json.Number("3"), event.OriginNamespaced, false), true},
		{"repeats of a planting from a container", rank(3, event.OriginContainer, true), false},
		{"a planting by a host process", rank(3, event.OriginHost, false), false},
		{"repeats of a planting by a host process", rank(float64(3), event.OriginHost, true), false},
		{"notify_on_release enabled in a container", rank(2, event.OriginContainer, false), false},
		{"a cleared release_agent", rank(1, event.OriginContainer, false), false},
		{"no severity", rank(nil, event.OriginHost, true), false},
	}
	for i := 1; i < len(order); i++ {
		hi, lo := order[i-1], order[i]
		if lo.equal && hi.rank != lo.rank || !lo.equal && hi.rank <= lo.rank {
			t.Errorf("%q (%d) against %q (%d): want equal=%v, else the first higher", hi.name, hi.rank, lo.name, lo.rank, lo.equal)
		}
	}
	if got := rank(4, event.OriginHost, false).Severity(); got != 4 {
		t.Errorf("Severity() = %d, want 4", got)
	}
	if got := rank(1000, event.OriginContainer, false); got > MaxRank {
		t.Errorf("rank %d above MaxRank %d", got, MaxRank)
	}
}
