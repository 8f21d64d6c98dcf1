package enrich

import (
	"testing"

	"escapewatch/internal/event"
)

func TestClassify(t *testing.T) {
	host := Namespaces{Mnt: 4026531841, PID: 4026531836}
	c := &Classifier{host: host, containers: map[string]containerResult{}}
	const id = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80a"
	tests := []struct {
		name   string
		ns     Namespaces
		cgroup string
		want   string
	}{
		{"host", host, "/user.slice/session-1.scope", event.OriginHost},
		{"own mount namespace", Namespaces{Mnt: 1, PID: host.PID}, "/", event.OriginNamespaced},
		{"own pid namespace", Namespaces{Mnt: host.Mnt, PID: 2}, "/", event.OriginNamespaced},
		{"container", Namespaces{Mnt: 1, PID: 2}, "/docker/" + id, event.OriginContainer},
		{"container cgroup wins over host namespaces", host, "/docker/" + id, event.OriginContainer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _ := c.Classify(tt.ns, tt.cgroup); got != tt.want {
				t.Errorf("Classify = %q, want %q", got, tt.want)
			}
		})
	}
}

// The host's namespaces come from the real /proc: init's links must parse, and this test process (in the host
// namespaces unless the test runner is itself namespaced) must agree with its own links.
func TestNewClassifierReadsProc(t *testing.T) {
	c, err := NewClassifier("/proc")
	if err != nil {
		t.Fatal(err)
	}
	if c.Source() == "self" {
		self, err := namespacesOf("/proc", "self")
		if err != nil || self != c.Host() {
			t.Fatalf("fallback to own namespaces: got %+v, own %+v (%v)", c.Host(), self, err)
		}
	}
	if c.Host().Mnt == 0 || c.Host().PID == 0 {
		t.Fatalf("host namespaces not parsed: %+v", c.Host())
	}
	if _, err := NewClassifier(t.TempDir()); err == nil {
		t.Fatal("NewClassifier on an empty directory: want an error")
	}
}
