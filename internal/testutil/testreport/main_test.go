package main

import (
	"strings"
	"testing"

	"escapewatch/internal/testutil/skips"
)

// A go test -json stream: one package passes with an allowed skip, one fails, one skips a test it may not.
const stream = `{"Action":"run","Package":"p/ok","Test":"TestA"}
{"Action":"output","Package":"p/ok","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"output","Package":"p/ok","Test":"TestA","Output":"    a_test.go:9: a benchmark runner\n"}
{"Action":"output","Package":"p/ok","Test":"TestA","Output":"--- SKIP: TestA (0.00s)\n"}
{"Action":"skip","Package":"p/ok","Test":"TestA"}
{"Action":"output","Package":"p/ok","Output":"    m_test.go:1: FLAKY: k/b: TestX failed, then passed in a second guest. The first failure:\n"}
{"Action":"pass","Package":"p/ok","Elapsed":0.5}
{"Action":"output","Package":"p/bad","Test":"TestB","Output":"    b_test.go:3: the reason it failed\n"}
{"Action":"fail","Package":"p/bad","Test":"TestB"}
{"Action":"output","Package":"p/bad","Test":"TestC","Output":"    c_test.go:3: needs qemu-system-x86_64\n"}
{"Action":"skip","Package":"p/bad","Test":"TestC"}
{"Action":"fail","Package":"p/bad","Elapsed":1.5}
# p/broken [p/broken.test]
{"ImportPath":"p/gone [p/gone.test]","Action":"build-output","Output":"./x_test.go:3:28: undefined: thing\n"}
{"ImportPath":"p/gone [p/gone.test]","Action":"build-fail"}
{"Action":"output","Package":"p/gone","Output":"FAIL\tp/gone [build failed]\n"}
{"Action":"fail","Package":"p/gone","Elapsed":0.001,"FailedBuild":"p/gone [p/gone.test]"}
`

func TestReport(t *testing.T) {
	allowed, err := skips.Parse(strings.NewReader("host p/ok TestA # a benchmark runner\n"), "list")
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	err = report(strings.NewReader(stream), &out, allowed, nil)
	for _, want := range []string{
		"ok  \tp/ok\t0.5s",
		"FAIL\tp/bad\t1.5s",
		"b_test.go:3: the reason it failed", // a failed test's output
		"# p/broken [p/broken.test]",        // the go command's own lines pass through
		"skipped (allowed): p/ok TestA: a_test.go:9: a benchmark runner",
		"flaky: failed once, then passed when run again (the first failure is above):\n  k/b: TestX failed, then passed in a second guest. The first failure:\n",
		"why each test failed (its last reported error; the whole output is above):\n--- p/bad TestB:\n    b_test.go:3: the reason it failed\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if err == nil {
		t.Fatal("no error for a failed test and a skip not allowed")
	}
	for _, want := range []string{"1 tests failed: p/bad TestB", "skipped, and not in the allow-list: p/bad TestC: c_test.go:3: needs qemu-system-x86_64"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestReportShowsPackageOutput(t *testing.T) {
	var out strings.Builder
	err := report(strings.NewReader(stream), &out, skips.List{}, []string{"p/ok"})
	if !strings.Contains(out.String(), "=== RUN   TestA") {
		t.Errorf("the shown package's output is missing:\n%s", out.String())
	}
	if err == nil || !strings.Contains(err.Error(), "p/ok TestA: a_test.go:9: a benchmark runner") {
		t.Errorf("error %v: want the skip of p/ok TestA refused by an empty allow-list", err)
	}
}

func TestLastReason(t *testing.T) {
	for _, tc := range []struct{ name, output, want string }{
		{"none", "=== RUN   TestA\npanic: boom\n", ""},
		{"the last of two", "    a_test.go:1: first\n    a_test.go:2: second\n        more\n--- FAIL: TestA\n",
			"    a_test.go:2: second\n        more\n"},
		{"bounded", "    a_test.go:1: long\n" + strings.Repeat("        line\n", 100),
			"    a_test.go:1: long\n" + strings.Repeat("        line\n", maxReasonLines-1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			b.WriteString(tc.output)
			if got := lastReason(&b); got != tc.want {
				t.Errorf("lastReason = %q, want %q", got, tc.want)
			}
		})
	}
}
