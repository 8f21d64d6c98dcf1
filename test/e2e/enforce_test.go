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
// --enforce: the write is denied (lsm, fentry) or the writer killed (other backends), the agent never runs, and the
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
	f := s.waitFor(t, "the namespaced escape", trc1010By(act.HostPID))
	want := event.ActionKilled
	if s.refuses() {
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

// TestPrivilegedEnforceEarlyDescriptor: under --enforce, a namespaced process that opened release_agent before
// the sensor started, and writes through that descriptor after, is stopped too. The lsm and fentry backends
// refuse the write itself (lsm/file_permission, fmod_ret/security_file_permission), so the value stays; the
// others can only kill the writer once the handler ran, so the value is stored and the finding says killed, and
// when a cgroup is released the agent is killed at its exec: the payload never runs.
func TestPrivilegedEnforceEarlyDescriptor(t *testing.T) {
	h := testutil.MountHierarchy(t)
	marker := filepath.Join(t.TempDir(), "escaped")
	agent := agentScript(t, marker)
	early := startEarlyWriter(t, h.Agent(), agent)
	s := startSensor(t, "--enforce")
	err := early.write()
	f := s.waitFor(t, "the write through an early descriptor", changedBy(early.HostPID))
	stored, _ := os.ReadFile(h.Agent())
	if s.refuses() {
		if err == nil || early.wrote() || f.Event.Action != event.ActionDenied ||
			f.Data["refused"] != true || strings.TrimSpace(string(stored)) != "" {
			t.Errorf("%s: writer %v output %q, finding action %q refused %v, release_agent %q; want the write refused "+
				"with EPERM, action denied, the value unchanged", s.backend(), err, early.out.String(), f.Event.Action, f.Data["refused"], stored)
		}
		return
	}
	if f.Event.Action != event.ActionKilled || f.Data["value"] != agent || early.wrote() {
		t.Errorf("%s: writer %v output %q, finding action %q value %v; want the writer killed after the write, action killed",
			s.backend(), err, early.out.String(), f.Event.Action, f.Data["value"])
	}
	// Another process releases a cgroup: the kernel starts the stored agent, which is killed at its exec.
	script := fmt.Sprintf(`mkdir -p %[1]s/x; echo 1 > %[1]s/x/notify_on_release; sh -c 'echo $$ > %[1]s/x/cgroup.procs'`, h.Dir)
	if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("release: %v\n%s", err, out)
	}
	if e := executedAgent(t, s, agent); e.Event.Action != event.ActionKilled {
		t.Errorf("EW-1004 action %q, want killed", e.Event.Action)
	}
	hostAgentRuns(t, h)
	if _, err := os.Stat(marker); err == nil {
		t.Error("the agent planted through an early descriptor ran despite --enforce")
	}
}

// TestPrivilegedEnforceAllowCgroup: under --enforce, writers in an allowed cgroup (config enforceAllow) or below
// it may set release_agent; a cgroup whose name merely starts with the allowed one is not allowed, nor is a
// cgroup nested so deep that only its lower part, which looks allowed, fits the kernel's walk.
func TestPrivilegedEnforceAllowCgroup(t *testing.T) {
	allowed := "/ewallow" + randomHex(t, 6)
	cfg := filepath.Join(t.TempDir(), "escapewatch.yaml")
	if err := os.WriteFile(cfg, []byte("enforce: true\nenforceAllow:\n  - cgroup: "+allowed+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startSensor(t, "--config", cfg)
	h := testutil.MountHierarchy(t)
	inside := testutil.CgroupDirs(t, allowed[1:])
	below := testutil.CgroupDirs(t, allowed[1:]+"/child")
	lookalike := testutil.CgroupDirs(t, allowed[1:]+"x")
	deep := testutil.CgroupDirs(t, "ewdeep"+randomHex(t, 4)+allowed+"/1/2/3/4/5/6/7/8/9/10/11")
	for _, c := range []struct {
		what    string
		dirs    []string
		allowed bool
	}{
		{"in the allowed cgroup", inside, true}, {"below it", below, true}, {"in a look-alike cgroup", lookalike, false},
		{"in a cgroup whose lower 12 levels look allowed", deep, false},
	} {
		value := "/" + strings.ReplaceAll(c.what, " ", "-")
		argv := inNamespace("sh", "-c", testutil.JoinCgroups(c.dirs)+shellAct+"echo "+value+" > "+h.Agent())
		out, err := exec.Command(argv[0], argv[1:]...).Output()
		act := parseActor(t, string(out))
		if c.allowed {
			f := s.waitFor(t, c.what, changedBy(act.HostPID))
			if err != nil || f.Event.Action != event.ActionAlert || f.Data["value"] != value {
				t.Errorf("%s: writer %v, action %q value %v; want the write allowed and reported", c.what, err, f.Event.Action, f.Data["value"])
			}
			continue
		}
		// Stopped at the open: TRC-1010 says what was done.
		f := s.waitFor(t, c.what, trc1010By(act.HostPID))
		if err == nil || f.Event.Action == event.ActionAlert {
			t.Errorf("%s: writer %v, action %q; want the write stopped", c.what, err, f.Event.Action)
		}
	}
}
