package rule

import (
	"errors"
	"fmt"
	"sync/atomic"

	"escapewatch/internal/event"
	"escapewatch/internal/finding"
)

// Engine routes events to the rules that select them and counts what
// happens. Process and Stats are safe for concurrent use as long as the
// rules' OnEvent are (the built-in rules keep no state).
type Engine struct {
	scope  Scope
	rules  []*ruleState
	routes map[string][]route // by event name
	events atomic.Uint64
}

type ruleState struct {
	rule     Rule
	id       string
	findings atomic.Uint64
	skipped  atomic.Uint64
	errors   atomic.Uint64
}

type route struct {
	rule      *ruleState
	anyOrigin bool // the rule selected OriginAny: the scope does not apply
}

// NewEngine builds an engine for the rules. An event reaches a rule when
// its name matches one of the rule's selectors and, unless that selector
// is OriginAny, event.OriginOf(event) is in scope: the scope stands in for
// Tracee's Origin "container", so it can widen a Tracee rule to processes
// that left the host's namespaces without a container.
func NewEngine(rules []Rule, scope Scope) (*Engine, error) {
	if scope&ScopeAll == 0 {
		return nil, errors.New("new engine: empty scope")
	}
	e := &Engine{scope: scope, routes: make(map[string][]route)}
	ids := make(map[string]bool)
	for _, r := range rules {
		id := r.Metadata().ID
		if id == "" || ids[id] {
			return nil, fmt.Errorf("new engine: rule ID %q is empty or not unique", id)
		}
		ids[id] = true
		st := &ruleState{rule: r, id: id}
		e.rules = append(e.rules, st)
		for _, sel := range r.Selectors() {
			if err := e.addRoute(st, sel); err != nil {
				return nil, fmt.Errorf("new engine: rule %s: %w", id, err)
			}
		}
	}
	return e, nil
}

func (e *Engine) addRoute(st *ruleState, sel Selector) error {
	if sel.EventName == "" {
		return errors.New("selector without an event name")
	}
	if sel.Origin != OriginAny && sel.Origin != event.OriginContainer {
		return fmt.Errorf("selector origin %q: want %q or %q", sel.Origin, event.OriginContainer, OriginAny)
	}
	anyOrigin := sel.Origin == OriginAny
	routes := e.routes[sel.EventName]
	for i := range routes {
		if routes[i].rule == st { // one delivery per event, the widest selector wins
			routes[i].anyOrigin = routes[i].anyOrigin || anyOrigin
			return nil
		}
	}
	e.routes[sel.EventName] = append(routes, route{rule: st, anyOrigin: anyOrigin})
	return nil
}

// Process runs the event through the rules that select it and returns their
// findings. A rule's error is counted, never reported as a finding.
func (e *Engine) Process(ev *event.Event) []finding.Finding {
	e.events.Add(1)
	routes := e.routes[ev.EventName]
	if len(routes) == 0 {
		return nil
	}
	var out []finding.Finding
	origin := event.OriginOf(ev)
	for _, rt := range routes {
		if !rt.anyOrigin && !e.scope.Contains(origin) {
			continue
		}
		f, err := rt.rule.rule.OnEvent(ev)
		switch {
		case errors.Is(err, ErrMissingArg) || errors.Is(err, ErrMistypedArg):
			rt.rule.skipped.Add(1)
		case err != nil:
			rt.rule.errors.Add(1)
		case f != nil:
			rt.rule.findings.Add(1)
			out = append(out, *f)
		}
	}
	return out
}

// SkipUnrouted reports whether no rule selects events named eventName; when none does, it counts the event as
// Process would have (Process does nothing else with such an event). A caller that can read an event's name
// without decoding it, as a replay can, so skips decoding the events no rule reads and keeps Stats exact.
func (e *Engine) SkipUnrouted(eventName []byte) bool {
	if len(e.routes[string(eventName)]) > 0 { // the conversion in a map index does not allocate
		return false
	}
	e.events.Add(1)
	return true
}

// Stats is a snapshot of an engine's counters.
type Stats struct {
	Events uint64               // events given to Process
	Rules  map[string]RuleStats // by rule ID
}

// RuleStats counts one rule's outcomes.
type RuleStats struct {
	Findings    uint64
	SkippedArgs uint64 // events skipped for a missing or mistyped argument
	Errors      uint64 // other rule errors
}

// Stats returns a snapshot of the counters.
func (e *Engine) Stats() Stats {
	s := Stats{Events: e.events.Load(), Rules: make(map[string]RuleStats, len(e.rules))}
	for _, st := range e.rules {
		s.Rules[st.id] = RuleStats{
			Findings:    st.findings.Load(),
			SkippedArgs: st.skipped.Load(),
			Errors:      st.errors.Load(),
		}
	}
	return s
}
