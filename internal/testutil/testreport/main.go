// Command testreport reads `go test -json` on stdin and prints what a CI log needs: each package's result, the
// whole output of every failed test, the output of the packages named by -show as it arrives, the tests
// that skipped, and last the tests that passed only when run again ("FLAKY: " lines) and a digest of each
// failure's reason (a CI log is often read from its tail). A skip not in the allow-list (-skips FILE) fails the run, as does any failure: with
// ESCAPEWATCH_REQUIRE_PRIVILEGED=1, a skipped test is a test that did not run.
//
//	go test -json ./... | go run ./internal/testutil/testreport -skips test/allowed-skips.txt
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"escapewatch/internal/testutil/skips"
)

// testEvent is one line of `go test -json` (cmd/test2json).
type testEvent struct {
	Time    time.Time
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

func main() {
	skipsFile := flag.String("skips", "", "the allow-list of tests that may skip (see internal/testutil/skips)")
	show := flag.String("show", "", "comma-separated packages whose whole output is printed as it arrives")
	flag.Parse()
	allowed := skips.List{}
	if *skipsFile != "" {
		var err error
		if allowed, err = skips.Load(*skipsFile); err != nil {
			fmt.Fprintln(os.Stderr, "testreport:", err)
			os.Exit(2)
		}
	}
	var showPackages []string
	if *show != "" {
		showPackages = strings.Split(*show, ",")
	}
	if err := report(os.Stdin, os.Stdout, allowed, showPackages); err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(1)
	}
}

type key struct{ pkg, test string }

func report(in io.Reader, out io.Writer, allowed skips.List, show []string) error {
	outputs := map[key]*strings.Builder{} // buffered until the test ends
	var failed, badSkips, okSkips, digest, flaky []string
	packages := 0
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		line := sc.Bytes()
		var ev testEvent
		if err := json.Unmarshal(line, &ev); err != nil || ev.Action == "" {
			fmt.Fprintf(out, "%s\n", line) // not test2json: the go command's own output (a build error, say)
			continue
		}
		k := key{ev.Package, ev.Test}
		shown := slices.Contains(show, ev.Package)
		switch ev.Action {
		case "build-output": // a compile error, reported before its package's fail
			fmt.Fprint(out, ev.Output)
		case "output":
			if _, note, ok := strings.Cut(ev.Output, "FLAKY: "); ok {
				flaky = append(flaky, strings.TrimSpace(note))
			}
			if shown {
				fmt.Fprint(out, ev.Output) // and kept below too: a skip's reason is read from it
			}
			b := outputs[k]
			if b == nil {
				b = &strings.Builder{}
				outputs[k] = b
			}
			b.WriteString(ev.Output)
		case "fail":
			if !shown && outputs[k] != nil {
				fmt.Fprint(out, outputs[k].String())
			}
			if ev.Test != "" {
				failed = append(failed, ev.Package+" "+ev.Test)
				if reason := lastReason(outputs[k]); reason != "" {
					digest = append(digest, fmt.Sprintf("--- %s %s:\n%s", ev.Package, ev.Test, reason))
				}
			} else {
				packages++
				fmt.Fprintf(out, "FAIL\t%s\t%.1fs\n", ev.Package, ev.Elapsed)
			}
			delete(outputs, k)
		case "pass":
			if ev.Test == "" {
				packages++
				fmt.Fprintf(out, "ok  \t%s\t%.1fs\n", ev.Package, ev.Elapsed)
			}
			delete(outputs, k)
		case "skip":
			if ev.Test == "" {
				delete(outputs, k) // a package without tests
				continue
			}
			reason := lastLine(outputs[k])
			entry := fmt.Sprintf("%s %s: %s", ev.Package, ev.Test, reason)
			if allowed.Allows(skips.Host, ev.Package, ev.Test) {
				okSkips = append(okSkips, entry)
			} else {
				badSkips = append(badSkips, entry)
			}
			delete(outputs, k)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read go test -json: %w", err)
	}
	for _, s := range okSkips {
		fmt.Fprintf(out, "skipped (allowed): %s\n", s)
	}
	if len(flaky) > 0 {
		fmt.Fprintf(out, "flaky: failed once, then passed when run again (the first failure is above):\n  %s\n", strings.Join(flaky, "\n  "))
	}
	if len(digest) > 0 {
		fmt.Fprintf(out, "why each test failed (its last reported error; the whole output is above):\n%s", strings.Join(digest, ""))
	}
	var errs []error
	for _, s := range badSkips {
		errs = append(errs, fmt.Errorf("skipped, and not in the allow-list: %s", s))
	}
	if len(failed) > 0 {
		errs = append(errs, fmt.Errorf("%d tests failed: %s", len(failed), strings.Join(failed, ", ")))
	}
	if packages == 0 {
		errs = append(errs, errors.New("no package reported a result"))
	}
	return errors.Join(errs...)
}

// reasonLine is the first line of a t.Error or t.Fatal message as go test prints it: "    name_test.go:12: text".
var reasonLine = regexp.MustCompile(`^\s+\S+_test\.go:\d+: `)

// maxReasonLines bounds one failure's digest: a message can carry a whole guest's output.
const maxReasonLines = 25

// lastReason is a failed test's last error message (lines from its last "name_test.go:N:" line on, at most
// maxReasonLines), or "" when the test reported none (a panic, a timeout: the whole output above says why).
func lastReason(b *strings.Builder) string {
	if b == nil {
		return ""
	}
	lines := strings.SplitAfter(b.String(), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if reasonLine.MatchString(lines[i]) {
			end := min(len(lines), i+maxReasonLines)
			for j := i + 1; j < end; j++ {
				if strings.HasPrefix(lines[j], "--- ") || strings.HasPrefix(lines[j], "=== ") {
					end = j
				}
			}
			return strings.Join(lines[i:end], "")
		}
	}
	return ""
}

// lastLine is the last line of a test's output that go test did not write itself: the reason t.Skip gave.
func lastLine(b *strings.Builder) string {
	if b != nil {
		lines := strings.Split(b.String(), "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			l := strings.TrimSpace(lines[i])
			if l != "" && !strings.HasPrefix(l, "--- ") && !strings.HasPrefix(l, "=== ") {
				return l
			}
		}
	}
	return "(no reason given)"
}
