// Package skips reads the allow-list of tests that may skip when privileged tests are required
// (test/allowed-skips.txt): in CI a skipped test did not run, so every skip must be expected and explained.
package skips

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// Where a test runs.
const (
	Host  = "host"  // the test command on the machine itself
	Guest = "guest" // inside a kernel-matrix VM
)

// entry allows tests of one package, whose full names (with subtests) match test, to skip in one place.
type entry struct {
	where, pkg string
	test       *regexp.Regexp
}

// List is a parsed allow-list.
type List []entry

// Load reads an allow-list. Each line is "WHERE PACKAGE TEST-REGEXP # reason": WHERE is host or guest, the
// regexp is matched against the whole test name, and the reason is required; # starts a comment line too.
func Load(path string) (List, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f, path)
}

// Parse reads an allow-list from r; name is used in errors.
func Parse(r io.Reader, name string) (List, error) {
	sc := bufio.NewScanner(r)
	var l List
	for n := 1; sc.Scan(); n++ {
		text, reason, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 3 || strings.TrimSpace(reason) == "" {
			return nil, fmt.Errorf("%s:%d: want WHERE PACKAGE TEST-REGEXP # reason", name, n)
		}
		if fields[0] != Host && fields[0] != Guest {
			return nil, fmt.Errorf("%s:%d: where %q: want %s or %s", name, n, fields[0], Host, Guest)
		}
		re, err := regexp.Compile("^(?:" + fields[2] + ")$")
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		l = append(l, entry{where: fields[0], pkg: fields[1], test: re})
	}
	return l, sc.Err()
}

// Allows reports whether test of package pkg may skip where it runs.
func (l List) Allows(where, pkg, test string) bool {
	for _, e := range l {
		if e.where == where && e.pkg == pkg && e.test.MatchString(test) {
			return true
		}
	}
	return false
}
