package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"

	"escapewatch/internal/event"
	"escapewatch/internal/testutil"
)

// TestPrivilegedEscapeChain runs the whole escape from a new mount+pid namespace (write the agent, enable
// notify_on_release, empty the cgroup, the kernel runs the agent on the host) and expects the story in order:
// TRC-1010, EW-1001 release_agent changed (with the value), EW-1003 notify_on_release enabled, EW-1004 release
// agent executed, linked back to the write.
func TestPrivilegedEscapeChain(t *testing.T) {
	s := startSensor(t)
	h := testutil.MountHierarchy(t)
	marker := filepath.Join(t.TempDir(), "escaped")
	agent := agentScript(t, marker)
	nsDir := filepath.Join(t.TempDir(), "ns-mount")
	// The order of the classic write-up: the agent first, then the trigger.
	script := fmt.Sprintf(`mkdir -p %[2]s; mount -t cgroup -o none,name=%[1]s cgroup %[2]s
mkdir -p %[2]s/x
%[4]s echo %[3]s > %[2]s/release_agent
echo 1 > %[2]s/x/notify_on_release
sh -c 'echo $$ > %[2]s/x/cgroup.procs'
`, h.Name, nsDir, agent, shellAct)
	out, err := exec.Command("unshare", "--mount", "--pid", "--fork", "sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("the escape script: %v\n%s", err, out)
	}
	act := parseActor(t, string(out))
	executed := s.waitFor(t, "the release agent's execution", func(f finding) bool {
		return f.SigMetadata.ID == "EW-1004" && f.arg("pathname") == agent
	})
	if !waitForFile(marker, waitLimit) {
		t.Fatal("the agent never ran: the escape did not work")
	}
	wb, _ := executed.Data["writtenBy"].(map[string]any)
	if wb["hostProcessId"] != float64(act.HostPID) || wb["origin"] != event.OriginNamespaced || executed.Data["linkedRule"] != "EW-1001" {
		t.Errorf("EW-1004 links to %v, want the write by pid %d (namespaced)", executed.Data, act.HostPID)
	}

	var order []string
	s.mu.Lock()
	for _, f := range s.findings {
		switch {
		case f.Event.HostProcessID == act.HostPID && (f.SigMetadata.ID == "TRC-1010" || f.SigMetadata.ID == "EW-1001"):
			order = append(order, f.SigMetadata.ID)
		case f.SigMetadata.ID == "EW-1003" && f.arg("hierarchy") == h.Name:
			order = append(order, f.SigMetadata.ID)
		case f.SigMetadata.ID == "EW-1004" && f.arg("pathname") == agent:
			order = append(order, f.SigMetadata.ID)
		}
	}
	s.mu.Unlock()
	want := []string{"TRC-1010", "EW-1001", "EW-1003", "EW-1004"}
	if len(order) != len(want) {
		t.Fatalf("findings of this escape, in order: %v, want %v", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("findings of this escape, in order: %v, want %v", order, want)
		}
	}
	changed := s.waitFor(t, "EW-1001", changedBy(act.HostPID))
	if changed.Data["value"] != agent {
		t.Errorf("EW-1001 value %v, want %s", changed.Data["value"], agent)
	}
}
