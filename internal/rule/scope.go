package rule

import (
	"fmt"
	"strings"

	"escapewatch/internal/event"
)

// Scope is a set of origin classes (see event.OriginOf).
type Scope uint8

// The origin classes as Scope bits.
const (
	ScopeContainer Scope = 1 << iota
	ScopeContainerInit
	ScopeNamespaced
	ScopeHost

	ScopeAll = ScopeContainer | ScopeContainerInit | ScopeNamespaced | ScopeHost
)

// Default scopes. ReplayScope is Tracee's selector Origin "container", so a
// replay of Tracee's events gives Tracee's findings; LiveScope adds the
// processes that escaped into new namespaces without a container runtime.
const (
	ReplayScope = ScopeContainer
	LiveScope   = ScopeContainer | ScopeNamespaced
)

// scopeNames lists the classes in the order String writes them.
var scopeNames = []struct {
	name string
	bit  Scope
}{
	{event.OriginContainer, ScopeContainer},
	{event.OriginContainerInit, ScopeContainerInit},
	{event.OriginNamespaced, ScopeNamespaced},
	{event.OriginHost, ScopeHost},
}

// ParseScope reads a comma-separated list of origin classes, or "all", such
// as "container,namespaced".
func ParseScope(s string) (Scope, error) {
	var scope Scope
	for _, tok := range strings.Split(s, ",") {
		tok = strings.TrimSpace(tok)
		if tok == "all" {
			scope |= ScopeAll
			continue
		}
		bit := scopeBit(tok)
		if bit == 0 {
			return 0, fmt.Errorf("scope %q: unknown origin %q (want container, container-init, namespaced, host or all)", s, tok)
		}
		scope |= bit
	}
	return scope, nil
}

func scopeBit(origin string) Scope {
	for _, n := range scopeNames {
		if n.name == origin {
			return n.bit
		}
	}
	return 0
}

// Contains reports whether the origin class is in the scope.
func (s Scope) Contains(origin string) bool {
	return s&scopeBit(origin) != 0
}

// String writes the scope in ParseScope's syntax.
func (s Scope) String() string {
	var names []string
	for _, n := range scopeNames {
		if s&n.bit != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ",")
}
