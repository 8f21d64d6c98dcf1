// Package rule holds escapewatch's detection rules and the engine that feeds
// them events. A rule is pure Go: it sees an event.Event and returns at most
// one finding, so every rule can be tested without a kernel.
package rule

import (
	"errors"
	"fmt"

	"escapewatch/internal/event"
	"escapewatch/internal/finding"
)

// OriginAny is the Selector origin for rules that want events of every
// origin, whatever the engine's scope.
const OriginAny = "*"

// Selector names an event a rule consumes and the origin it wants, in
// Tracee's terms. Origin is either event.OriginContainer (Tracee's
// selector), which the engine replaces with its configured Scope, or
// OriginAny.
type Selector struct {
	EventName string
	Origin    string
}

// Rule is a detection. OnEvent returns a nil finding when the event is not
// a detection; an error means the event could not be judged (for example an
// argument is missing or has the wrong type: see ErrMissingArg and
// ErrMistypedArg), and the engine counts it instead of reporting anything.
type Rule interface {
	Metadata() finding.Metadata
	Selectors() []Selector
	OnEvent(ev *event.Event) (*finding.Finding, error)
}

// Default returns escapewatch's built-in rules.
func Default() []Rule {
	return []Rule{TRC1010{}, EW1001{}, EW1002{}, EW1003{}, NewEW1004(), EW1005{}}
}

// escapeToHost is the MITRE ATT&CK classification every rule here shares (T1611, Escape to Host), with the
// rule's severity. A new map each time: findings may change their copy (EW-1001 lowers the severity of a
// clearing).
func escapeToHost(severity int) map[string]any {
	return map[string]any{
		"Severity":             severity,
		"Category":             "privilege-escalation",
		"Technique":            "Escape to Host",
		"Kubernetes_Technique": "",
		"id":                   "attack-pattern--4a5b7ade-8bb5-4853-84ed-23f262002665",
		"external_id":          "T1611",
	}
}

// Argument errors; a rule's error wraps one of them when an argument it
// needs is absent (or null) or holds a value of the wrong type.
var (
	ErrMissingArg  = errors.New("missing argument")
	ErrMistypedArg = errors.New("mistyped argument")
)

// stringArg returns a string argument, as Tracee's
// GetTraceeStringArgumentByName does.
func stringArg(ev *event.Event, name string) (string, error) {
	a, ok := ev.Arg(name)
	if !ok || a.Value == nil {
		return "", fmt.Errorf("%w %q", ErrMissingArg, name)
	}
	s, ok := a.Value.(string)
	if !ok {
		return "", fmt.Errorf("%w %q: %T, want string", ErrMistypedArg, name, a.Value)
	}
	return s, nil
}

// openFlagsArg returns an open flags argument in either of Tracee's forms
// (see event.ParseOpenFlags).
func openFlagsArg(ev *event.Event, name string) (int, error) {
	a, ok := ev.Arg(name)
	if !ok || a.Value == nil {
		return 0, fmt.Errorf("%w %q", ErrMissingArg, name)
	}
	flags, err := event.ParseOpenFlags(a.Value)
	if err != nil {
		return 0, fmt.Errorf("%w %q: %w", ErrMistypedArg, name, err)
	}
	return flags, nil
}
