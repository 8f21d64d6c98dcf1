package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"escapewatch/internal/event"
	"escapewatch/internal/testutil"
)

// planting is one way a process in a container or namespace sets a hierarchy's release_agent.
type planting struct {
	name string
	// fresh: the planting creates the hierarchy itself (a mount option); otherwise the hierarchy exists and is
	// mounted by name in the namespace first.
	fresh bool
	// script is the shell command that plants agent into hierarchy name, mounted (or to be mounted) at dir; tmp
	// is a directory for its files.
	script func(name, dir, agent, tmp string) string
	// how lists the set_how values EW-1004 may give; tracepointHow, when set, is the one the tracepoint backend
	// gives.
	how           []string
	tracepointHow string
}

var plantings = []planting{
	{name: "write", script: func(_, dir, agent, _ string) string { return "echo " + agent + " > " + dir + "/release_agent" },
		how: []string{event.SetWrite}},
	{name: "aio", script: func(_, dir, agent, _ string) string {
		return triggerBin + " aio " + dir + "/release_agent " + agent
	}, how: []string{event.SetWrite}},
	// The 65th iocb of one io_submit: beyond what the tracepoint backend looks at (64), so there the value
	// changes unseen, and EW-1004 says so; the hook backends see the kernel's handler run.
	{name: "aio beyond 64 iocbs", script: func(_, dir, agent, _ string) string {
		return triggerBin + " aio-deep " + dir + "/release_agent " + agent
	}, how: []string{event.SetWrite}, tracepointHow: event.SetUnwatched},
	{name: "mount option", fresh: true, script: func(name, dir, agent, _ string) string {
		return "mount -t cgroup -o none,name=" + name + ",release_agent=" + agent + " cgroup " + dir
	}, how: []string{event.SetMount}},
	{name: "remount", script: func(name, dir, agent, _ string) string {
		return "mount -t cgroup -o remount,none,name=" + name + ",release_agent=" + agent + " cgroup " + dir
	}, how: []string{event.SetRemount}},
	{name: "fspick", script: func(name, dir, agent, _ string) string {
		return triggerBin + " fspick " + dir + " " + name + " " + agent
	}, how: []string{event.SetRemount}},
	// A sibling sharing the descriptor table (CLONE_FILES) writes through the descriptor its sibling opened,
	// even when --enforce killed the opener at the open.
	{name: "clone-files sibling", script: func(_, dir, agent, tmp string) string {
		script := filepath.Join(tmp, "clonefiles.py")
		if err := os.WriteFile(script, []byte(fmt.Sprintf(cloneFilesPy, unix.SYS_CLONE)), 0o644); err != nil {
			panic(err)
		}
		done := filepath.Join(tmp, "sibling-done")
		// The sibling outlives a killed opener: wait until it wrote (or, killed at its write, set the value), so
		// the release comes after.
		return "python3 " + script + " " + dir + "/release_agent " + agent + " " + done +
			"; for i in $(seq 100); do [ -e " + done + " ] && break; grep -q . " + dir + "/release_agent && break; sleep 0.05; done"
	}, how: []string{event.SetWrite}},
}

// cloneFilesPy forks a sibling with CLONE_FILES, then opens PATH for writing; the sibling waits for that
// descriptor to appear in the shared table, writes VALUE through it, and creates DONE when it is finished. The
// verb is clone's syscall number, which differs between architectures (the arguments that differ are all 0).
const cloneFilesPy = `import ctypes, os, sys, time
path, value, done = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
CLONE_FILES, SIGCHLD, SYS_clone = 0x400, 17, %d
pid = libc.syscall(SYS_clone, CLONE_FILES | SIGCHLD, 0, 0, 0, 0)
if pid == 0:
    deadline = time.time() + 2
    while time.time() < deadline:
        for fd in range(3, 64):
            try:
                if os.readlink("/proc/self/fd/%%d" %% fd).endswith("/release_agent"):
                    try:
                        os.write(fd, value)
                    finally:
                        open(done, "w").close()
                    os._exit(0)
            except OSError:
                pass
        time.sleep(0.01)
    open(done, "w").close()
    os._exit(1)
time.sleep(0.05)
try:
    fd = os.open(path, os.O_WRONLY)
finally:
    os.waitpid(pid, 0)
`

// plantAndRelease runs, in a new mount+pid namespace, planting p of agent into hierarchy name, then enables
// notify_on_release on a child cgroup and empties it: the whole escape. The planting runs in a subshell, which
// --enforce may kill; the rest runs regardless. It returns the hierarchy, mounted on the host (and cleaned up
// when the test ends), and the planting subshell's process.
func plantAndRelease(t *testing.T, p planting, agent string) (testutil.Hierarchy, actor) {
	t.Helper()
	var h testutil.Hierarchy
	name := "ewplant" + randomHex(t, 6)
	if !p.fresh {
		h = testutil.MountNamedHierarchy(t, name)
	}
	dir := filepath.Join(t.TempDir(), "ns-mount")
	mountIt := "mount -t cgroup -o none,name=" + name + " cgroup " + dir
	if p.fresh {
		mountIt = "true"
	}
	actorFile := filepath.Join(t.TempDir(), "actor")
	script := fmt.Sprintf(`mkdir -p %[1]s; %[2]s
(%[3]s %[4]s) > %[5]s
mkdir -p %[1]s/x; echo 1 > %[1]s/x/notify_on_release
sh -c 'echo $$ > %[1]s/x/cgroup.procs'
`, dir, mountIt, shellAct, p.script(name, dir, agent, t.TempDir()), actorFile)
	out, _ := exec.Command("unshare", "--mount", "--pid", "--fork", "sh", "-c", script).CombinedOutput()
	actorLine, err := os.ReadFile(actorFile)
	if err != nil {
		t.Fatalf("the planting printed nothing: %v\n%s", err, out)
	}
	act := parseActor(t, string(actorLine))
	if p.fresh {
		// The namespace's child cgroup keeps the hierarchy alive after its mount is gone: mount it here to see it
		// and to clean it up.
		h = testutil.MountNamedHierarchy(t, name)
	}
	return h, act
}

// executedAgent waits for EW-1004 about agent.
func executedAgent(t *testing.T, s *sensor, agent string) finding {
	t.Helper()
	return s.waitFor(t, "EW-1004 for "+agent, func(f finding) bool {
		return f.SigMetadata.ID == "EW-1004" && f.arg("pathname") == agent
	})
}

// TestPrivilegedAgentExecutedHoweverPlanted: however a namespaced process planted the release agent, its
// execution is EW-1004, decided in the kernel from the hierarchy's current value and its record of who set it,
// and the finding says how it was set and by whom.
func TestPrivilegedAgentExecutedHoweverPlanted(t *testing.T) {
	s := startSensor(t)
	for _, p := range plantings {
		t.Run(p.name, func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "escaped")
			agent := agentScript(t, marker)
			_, act := plantAndRelease(t, p, agent)
			f := executedAgent(t, s, agent)
			if !waitForFile(marker, waitLimit) {
				t.Fatal("the agent never ran: the escape did not work")
			}
			setBy, _ := f.Data["setBy"].(map[string]any)
			how := p.how
			if p.tracepointHow != "" && s.backend() == "tracepoint" {
				how = []string{p.tracepointHow}
			}
			if !slices.Contains(how, fmt.Sprint(setBy["how"])) {
				t.Errorf("setBy %v, want how in %v", setBy, how)
			}
			if setBy["how"] != event.SetUnwatched && (setBy["trust"] != event.TrustOutside || setBy["mountNamespace"] == nil) {
				t.Errorf("setBy %v, want trust %s with the setter's namespaces", setBy, event.TrustOutside)
			}
			// The setter is the planting process, or a child it ran (mount, trigger).
			if pid, _ := setBy["hostProcessId"].(float64); setBy["how"] != event.SetUnwatched && int(pid) < act.HostPID {
				t.Errorf("setBy.hostProcessId %v, want the planting subshell %d or a later process", setBy["hostProcessId"], act.HostPID)
			}
			if f.Event.Action != event.ActionAlert || f.Event.Origin != event.OriginHost {
				t.Errorf("EW-1004 action %q origin %q, want alert, host", f.Event.Action, f.Event.Origin)
			}
		})
	}
}

// TestPrivilegedEnforceHoweverPlanted: under --enforce, whatever planted the agent, the payload never runs: the
// planting is refused at its source where the kernel offers a hook that can refuse (the open, the mount option on
// lsm and fentry), and otherwise the agent is killed at its exec, before its first instruction (EW-1004, action
// killed). Afterwards the host's own agent, set and released the same way, runs: the proof that the kernel did
// run release agents for this hierarchy.
func TestPrivilegedEnforceHoweverPlanted(t *testing.T) {
	s := startSensor(t, "--enforce")
	for _, p := range plantings {
		t.Run(p.name, func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "escaped")
			agent := agentScript(t, marker)
			h, _ := plantAndRelease(t, p, agent)
			value, err := os.ReadFile(h.Agent())
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(string(value)) == agent {
				t.Logf("%s: planted; the agent must be killed at its exec", s.backend())
				if f := executedAgent(t, s, agent); f.Event.Action != event.ActionKilled {
					t.Errorf("EW-1004 action %q, want killed", f.Event.Action)
				}
			} else if strings.TrimSpace(string(value)) != "" {
				// Empty: refused at the source, or the planter killed before it could finish (fspick's reconfigure).
				t.Fatalf("release_agent is %q, want %s or empty", value, agent)
			}
			if strings.TrimSpace(string(value)) == "" {
				t.Logf("%s: not planted (refused at the source, or the planter killed first)", s.backend())
			}
			hostAgentRuns(t, h)
			if _, err := os.Stat(marker); err == nil {
				t.Errorf("the planted agent ran despite --enforce")
			}
		})
	}
}

// hostAgentRuns sets a release agent from the host into h, releases a child cgroup, and waits for the agent.
func hostAgentRuns(t *testing.T, h testutil.Hierarchy) {
	t.Helper()
	marker := filepath.Join(t.TempDir(), "host-agent-ran")
	script := fmt.Sprintf(`echo %[2]s > %[1]s/release_agent; mkdir -p %[1]s/hostx; echo 1 > %[1]s/hostx/notify_on_release
sh -c 'echo $$ > %[1]s/hostx/cgroup.procs'`, h.Dir, agentScript(t, marker))
	if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("the host's own agent: %v\n%s", err, out)
	}
	if !waitForFile(marker, waitLimit) {
		t.Fatalf("the host's own release agent never ran: the test setup is broken")
	}
}

// TestPrivilegedAgentPlantedBeforeStart: a value planted while no sensor ran (a restart, say) is in the kernel's
// record as present at start, setter unknown: its agent's exec is EW-1004, says so, and under --enforce is
// killed. A value present at start that the configuration names as the host's (hostReleaseAgents) runs.
func TestPrivilegedAgentPlantedBeforeStart(t *testing.T) {
	planted := testutil.MountHierarchy(t)
	plantedMarker := filepath.Join(t.TempDir(), "escaped")
	plantedAgent := agentScript(t, plantedMarker)
	runAct(t, inNamespace("sh", "-c", shellAct+"echo "+plantedAgent+" > "+planted.Agent())...)
	trusted := testutil.MountHierarchy(t)
	trustedMarker := filepath.Join(t.TempDir(), "trusted-ran")
	trustedAgent := agentScript(t, trustedMarker)
	if err := os.WriteFile(trusted.Agent(), []byte(trustedAgent), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "escapewatch.yaml")
	if err := os.WriteFile(cfg, []byte("enforce: true\nhostReleaseAgents: ["+trustedAgent+"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startSensor(t, "--config", cfg)

	release := func(h testutil.Hierarchy) {
		script := fmt.Sprintf(`mkdir -p %[1]s/x; echo 1 > %[1]s/x/notify_on_release; sh -c 'echo $$ > %[1]s/x/cgroup.procs'`, h.Dir)
		if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
			t.Fatalf("release: %v\n%s", err, out)
		}
	}
	release(planted)
	f := executedAgent(t, s, plantedAgent)
	setBy, _ := f.Data["setBy"].(map[string]any)
	if f.Event.Action != event.ActionKilled || setBy["how"] != event.SetBeforeStart || setBy["trust"] != event.TrustUnknown ||
		f.Data["investigate"] == nil {
		t.Errorf("EW-1004 action %q setBy %v investigate %v; want killed, how %s, trust unknown, a note to investigate",
			f.Event.Action, setBy, f.Data["investigate"], event.SetBeforeStart)
	}

	release(trusted)
	if !waitForFile(trustedMarker, waitLimit) {
		t.Fatal("the agent the configuration trusts never ran")
	}
	if _, err := os.Stat(plantedMarker); err == nil {
		t.Error("the agent planted before the start ran despite --enforce")
	}
	if got := s.matching(func(f finding) bool { return f.SigMetadata.ID == "EW-1004" && f.arg("pathname") == trustedAgent }); len(got) != 0 {
		t.Errorf("EW-1004 for the trusted agent: %v", got[0].Data)
	}
}
