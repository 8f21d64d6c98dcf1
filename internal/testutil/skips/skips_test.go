package skips

import (
	"strings"
	"testing"
)

func TestAllows(t *testing.T) {
	l, err := Parse(strings.NewReader(`
# a comment
host  escapewatch/test/matrix  TestKernelMatrixBench   # a benchmark runner
guest escapewatch/test/e2e     TestPrivilegedContainerd/.*  # no containerd in the guest
`), "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		where, pkg, test string
		want             bool
	}{
		{Host, "escapewatch/test/matrix", "TestKernelMatrixBench", true},
		{Guest, "escapewatch/test/matrix", "TestKernelMatrixBench", false},    // another place
		{Host, "escapewatch/test/matrix", "TestKernelMatrixBenchX", false},    // the whole name must match
		{Host, "escapewatch/test/e2e", "TestKernelMatrixBench", false},        // another package
		{Guest, "escapewatch/test/e2e", "TestPrivilegedContainerd/pod", true}, // a subtest
		{Guest, "escapewatch/test/e2e", "TestPrivilegedContainerd", false},
	} {
		if got := l.Allows(c.where, c.pkg, c.test); got != c.want {
			t.Errorf("Allows(%s, %s, %s) = %v, want %v", c.where, c.pkg, c.test, got, c.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{
		"host escapewatch/x TestA",                 // no reason
		"host escapewatch/x TestA #   ",            // an empty reason
		"laptop escapewatch/x TestA # why",         // unknown place
		"host escapewatch/x # why",                 // no test
		"host escapewatch/x Test( # unbalanced re", // a bad regexp
	} {
		if _, err := Parse(strings.NewReader(in), "list"); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}
