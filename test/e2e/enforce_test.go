package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"escapewatch/internal/event"
	"escapewatch/internal/testutil"
)

// agentScript writes an executable release agent that creates marker when the kernel runs it.
func agentScript(t *testing.T, marker string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho escaped > "+marker+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// escapeScript is the whole escape as a shell script, from mounting a hierarchy to emptying a cgroup: mount
// the named hierarchy at dir, enable notify_on_release on a child cgroup, set release_agent, then move a
// short-lived process into the child so that it empties. Every step runs even if an earlier one failed.
func escapeScript(hierarchy, dir, agent string) string {
	return fmt.Sprintf(`mkdir -p %[2]s; mount -t cgroup -o none,name=%[1]s cgroup %[2]s
mkdir -p %[2]s/x
echo 1 > %[2]s/x/notify_on_release
%[4]s echo %[3]s > %[2]s/release_agent
sh -c 'echo $$ > %[2]s/x/cgroup.procs'
`, hierarchy, dir, agent, shellAct)
}

func waitForFile(path string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// TestPrivilegedEnforceStopsEscape runs the full release_agent escape from a new mount+pid namespace under
// --enforce: the write is denied (lsm) or the writer killed (other backends), the agent never runs, and the
// finding says so. The same escape from the host, which --enforce allows, runs its agent: the proof that the
// setup would have worked.
func TestPrivilegedEnforceStopsEscape(t *testing.T) {
	s := startSensor(t, "--enforce")
	h := testutil.MountHierarchy(t)
	blocked := filepath.Join(t.TempDir(), "blocked-escaped")
	allowed := filepath.Join(t.TempDir(), "allowed-escaped")

	// From a namespace, into the same hierarchy mounted again inside it.
	nsDir := filepath.Join(t.TempDir(), "ns-mount")
	cmd := exec.Command("unshare", "--mount", "--pid", "--fork", "sh", "-c",
		escapeScript(h.Name, nsDir, agentScript(t, blocked)))
	out, _ := cmd.CombinedOutput() // killed or refused: it fails either way
	act := parseActor(t, string(out))
	f := s.waitFor(t, "the namespaced escape", byPID(act.HostPID))
	want := event.ActionKilled
	if s.backend() == "lsm" {
		want = event.ActionDenied
	}
	if f.Event.Action != want || f.Event.Origin != event.OriginNamespaced || f.arg("pathname") != nsDir+"/release_agent" {
		t.Errorf("finding: action %q origin %q pathname %v; want %q, namespaced, %s/release_agent",
			f.Event.Action, f.Event.Origin, f.arg("pathname"), want, nsDir)
	}
	if agent, err := os.ReadFile(h.Agent()); err != nil || strings.TrimSpace(string(agent)) != "" {
		t.Errorf("release_agent = %q (%v) after the blocked write, want it empty", agent, err)
	}

	// From the host: allowed, so the agent runs. Its marker is also the sign that the kernel has had time to run
	// the blocked one, had it been set.
	hostOut, err := exec.Command("sh", "-c", escapeScript(h.Name, h.Dir, agentScript(t, allowed))).CombinedOutput()
	if err != nil {
		t.Fatalf("the host's escape failed: %v\n%s", err, hostOut)
	}
	if !waitForFile(allowed, waitLimit) {
		t.Fatalf("the host's release agent never ran (no %s): the test setup is broken", allowed)
	}
	if _, err := os.Stat(blocked); err == nil {
		t.Errorf("the namespaced escape's release agent ran (%s exists) despite --enforce", blocked)
	}
}
