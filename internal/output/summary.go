package output

import (
	"cmp"
	"os"
	"slices"
	"sync"
	"time"

	"escapewatch/internal/event"
	"escapewatch/internal/finding"
)

// ShedRuleID is the rule ID of the summary a spooled output writes, in its own spool, of the findings it shed:
// the receiver learns what it lost, and can ask the host for it (stdout, the output file).
const ShedRuleID = "EW-0001"

// maxTalliedRules bounds the rules tallied apart; the rest count under "other". The built-in rules are five.
const maxTalliedRules = 64

// shedTally counts, by rule, the findings a spooled sink shed since they were last summarised.
type shedTally struct {
	mu    sync.Mutex // the commit stage and Dispatch both shed
	rules map[string]*shedCount
	last  time.Time // when summaries were last due
}

type shedCount struct {
	n           uint64
	first, last time.Time
	rank        finding.Rank // the highest shed
}

// summary is a summary finding's line and what it counts.
type summary struct {
	rule string
	n    uint64
	at   time.Time // when it was made
	line []byte
}

func (t *shedTally) add(rule string, rank finding.Rank) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rules == nil {
		t.rules = map[string]*shedCount{}
	}
	c, ok := t.rules[rule]
	if !ok && len(t.rules) >= maxTalliedRules {
		rule = "other"
		c, ok = t.rules[rule]
	}
	now := time.Now()
	if !ok {
		c = &shedCount{first: now}
		t.rules[rule] = c
	}
	c.n++
	c.last = now
	c.rank = max(c.rank, rank)
}

// due returns a summary per rule of what was shed, at most once per every (at once when final). Whatever the
// spool takes of them, pass to summarised; the rest stays counted for the next.
func (t *shedTally) due(sink string, now time.Time, every time.Duration, final bool) []summary {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.rules) == 0 || !final && !t.last.IsZero() && now.Sub(t.last) < every {
		return nil
	}
	t.last = now
	var out []summary
	for rule, c := range t.rules {
		line, err := jsonLine(shedFinding(sink, rule, c, now))
		if err != nil {
			continue // a finding of strings and integers always encodes
		}
		out = append(out, summary{rule: rule, n: c.n, at: now, line: line})
	}
	slices.SortFunc(out, func(a, b summary) int { return cmp.Compare(a.rule, b.rule) })
	return out
}

// summarised takes what s counts off the tally: it is in the spool.
func (t *shedTally) summarised(s summary) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.rules[s.rule]
	if c.n -= s.n; c.n == 0 {
		delete(t.rules, s.rule)
	} else {
		c.first = s.at // what is left was shed since the summary was made
	}
}

// hostname is the host's name, for the summaries' events.
var hostname, _ = os.Hostname()

// shedFinding is the summary of c: a finding of rule ShedRuleID, shaped like every other (Tracee's), whose
// Data says which output lost how many findings of which rule, and when. Its severity is the highest of them.
func shedFinding(sink, rule string, c *shedCount, now time.Time) finding.Finding {
	return finding.Finding{
		SigMetadata: finding.Metadata{
			ID:        ShedRuleID,
			Version:   "1",
			Name:      "findings shed",
			EventName: "findings_shed",
			Description: "An output could not keep every finding: its spool was full (its receiver was down or slow), so " +
				"the sensor kept the more important findings and shed these. The host's other outputs (stdout, the " +
				"output file) have them.",
			Properties: map[string]any{"Severity": c.rank.Severity(), "Category": "sensor-health"},
		},
		Event: event.Event{
			Timestamp: int(now.UnixNano()), HostProcessID: os.Getpid(), ProcessID: os.Getpid(), ProcessName: "escapewatch",
			HostName: hostname, EventName: "findings_shed", StackAddresses: []uint64{}, Origin: event.OriginHost,
			Args: []event.Argument{},
		},
		Data: map[string]any{
			"output": sink, "rule": rule, "count": c.n,
			"firstShed": c.first.UnixNano(), "lastShed": c.last.UnixNano(),
		},
	}
}
