package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"escapewatch/internal/event"
	"escapewatch/internal/testutil"
)

// quietCase is something that must not produce a finding from the sensor on its defaults.
type quietCase struct {
	name string
	// argv acts; agent is a real release_agent, scratch a private tmpfs mounted by the test.
	argv func(agent, scratch string) []string
}

var mustNotAlert = []quietCase{
	{"cat release_agent", func(a, _ string) []string {
		return inNamespace("sh", "-c", shellAct+"read -r v < "+a)
	}},
	{"O_RDONLY|O_TRUNC", func(a, _ string) []string { return inNamespace(triggerBin, "open", a, "O_RDONLY|O_TRUNC") }},
	{"stat", func(a, _ string) []string { return inNamespace(triggerBin, "stat", a) }},
	{"access W_OK", func(a, _ string) []string { return inNamespace(triggerBin, "access", a) }},
	{"/tmp/release_agent on tmpfs", func(_, s string) []string {
		return inNamespace("sh", "-c", shellAct+"echo /payload > "+s+"/release_agent")
	}},
	{"release_agent.bak", func(_, s string) []string {
		return inNamespace("sh", "-c", shellAct+"echo /payload > "+s+"/release_agent.bak")
	}},
	{"my_release_agent", func(_, s string) []string {
		return inNamespace("sh", "-c", shellAct+"echo /payload > "+s+"/my_release_agent")
	}},
	{"child cgroup renamed to release_agent", func(a, _ string) []string {
		child := filepath.Join(filepath.Dir(a), "parent")
		return inNamespace(triggerBin, "rename", filepath.Join(child, "a"), filepath.Join(child, "release_agent"))
	}},
	{"host process in the default scope", func(a, _ string) []string {
		return []string{"sh", "-c", shellAct + "echo /payload > " + a}
	}},
}

// prepare makes the files and cgroups the quiet cases act on: a tmpfs with look-alike names, and a child cgroup
// with a grandchild to rename.
func prepareQuiet(t *testing.T) (testutil.Hierarchy, string) {
	h := testutil.MountHierarchy(t)
	scratch := testutil.MountTmpfs(t)
	for _, dir := range []string{"parent", "parent/a"} {
		if err := os.Mkdir(filepath.Join(h.Dir, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return h, scratch
}

// sentinel writes the real release_agent from a new namespace and waits for its finding. Records reach user
// space in the order they were produced, so once the sentinel's finding is in, every finding for anything
// done before it is in too: absence is then a fact, not a timeout.
func sentinel(t *testing.T, s *sensor, h testutil.Hierarchy) {
	t.Helper()
	act := runAct(t, inNamespace(triggerBin, "open", h.Agent(), "O_WRONLY")...)
	s.waitFor(t, "the sentinel write", byPID(act.HostPID))
}

// TestPrivilegedTRC1010MustNotAlert: reads, stat and access, look-alike files, a child cgroup renamed to
// release_agent and a host process (mustNotAlert) give no finding on the defaults.
func TestPrivilegedTRC1010MustNotAlert(t *testing.T) {
	s := startSensor(t)
	h, scratch := prepareQuiet(t)
	acted := map[string]actor{}
	for _, tc := range mustNotAlert {
		acted[tc.name] = runAct(t, tc.argv(h.Agent(), scratch)...)
	}
	sentinel(t, s, h)
	for _, tc := range mustNotAlert {
		if got := s.matching(byPID(acted[tc.name].HostPID)); len(got) > 0 {
			t.Errorf("%s: want no finding, got %d: %s", tc.name, len(got), s.summary())
		}
	}
}

// TestPrivilegedScopeAll: with --scope all a host process's write is a finding of origin host.
func TestPrivilegedScopeAll(t *testing.T) {
	s := startSensor(t, "--scope", "all")
	h := testutil.MountHierarchy(t)
	act := runAct(t, "sh", "-c", shellAct+"echo /payload > "+h.Agent())
	f := s.waitFor(t, "a host write", byPID(act.HostPID))
	if f.Event.Origin != event.OriginHost || f.arg("pathname") != h.Agent() || f.Event.ProcessName != act.Comm ||
		f.Event.ProcessID != act.HostPID {
		t.Errorf("want origin host, pathname %s, comm %s, processId %d; got %s", h.Agent(), act.Comm, act.HostPID, s.summary())
	}
}

// TestPrivilegedAnyFS: --any-fs is Tracee's behaviour: a file named release_agent anywhere, and a child cgroup
// renamed to release_agent, are findings; look-alike names still are not.
func TestPrivilegedAnyFS(t *testing.T) {
	s := startSensor(t, "--any-fs")
	h, scratch := prepareQuiet(t)
	byName := map[string]quietCase{}
	for _, tc := range mustNotAlert {
		byName[tc.name] = tc
	}
	tmpfs := runAct(t, byName["/tmp/release_agent on tmpfs"].argv(h.Agent(), scratch)...)
	f := s.waitFor(t, "release_agent on tmpfs", byPID(tmpfs.HostPID))
	if want := scratch + "/release_agent"; f.arg("pathname") != want || f.Event.Origin != event.OriginNamespaced {
		t.Errorf("pathname %v origin %s, want %s namespaced", f.arg("pathname"), f.Event.Origin, want)
	}

	rename := runAct(t, byName["child cgroup renamed to release_agent"].argv(h.Agent(), scratch)...)
	f = s.waitFor(t, "the child cgroup rename", byPID(rename.HostPID))
	wantNew := filepath.Join(h.Dir, "parent", "release_agent")
	if f.Event.EventName != event.SecurityInodeRename || f.arg("new_path") != wantNew || f.Event.ReturnValue != 0 {
		t.Errorf("want %s to %s returning 0; got %s", event.SecurityInodeRename, wantNew, s.summary())
	}

	var quiet []actor
	for _, name := range []string{"release_agent.bak", "my_release_agent", "O_RDONLY|O_TRUNC"} {
		quiet = append(quiet, runAct(t, byName[name].argv(h.Agent(), scratch)...))
	}
	sentinel(t, s, h)
	for _, a := range quiet {
		if got := s.matching(byPID(a.HostPID)); len(got) > 0 {
			t.Errorf("pid %d: want no finding, got %s", a.HostPID, s.summary())
		}
	}
}

// TestPrivilegedRenameOntoAgent: a rename whose target is the real release_agent never succeeds on cgroupfs,
// but the attempt is TRC-1010's rename half. A control file renamed onto it passes the VFS checks, reaches the
// security hook (where Tracee sees it too) and is refused by cgroupfs; it is reported with the refusal as
// returnValue on the tracepoint backend (0, the hook's verdict, on the others), whether the new name is
// absolute or relative to a directory descriptor.
func TestPrivilegedRenameOntoAgent(t *testing.T) {
	s := startSensor(t)
	h := testutil.MountHierarchy(t)
	old := filepath.Join(h.Dir, "cgroup.clone_children")
	for _, method := range []string{"rename", "rename-rel"} {
		t.Run(method, func(t *testing.T) {
			out, _ := runExpectFailure(t, inNamespace(triggerBin, method, old, h.Agent())...)
			act := parseActor(t, out)
			f := s.waitFor(t, method, byPID(act.HostPID))
			if f.Event.EventName != event.SecurityInodeRename || f.arg("new_path") != h.Agent() || f.arg("old_path") != old {
				t.Errorf("want a rename of %s onto %s; got %s", old, h.Agent(), s.summary())
			}
			if s.backend() == "tracepoint" && f.Event.ReturnValue >= 0 || s.backend() != "tracepoint" && f.Event.ReturnValue != 0 {
				t.Errorf("returnValue %d on the %s backend", f.Event.ReturnValue, s.backend())
			}
		})
	}
}

// TestPrivilegedDrainOnSignal: a finding whose record is in the ring buffer when SIGTERM arrives is still
// written, and the sensor exits 0.
func TestPrivilegedDrainOnSignal(t *testing.T) {
	s := startSensor(t)
	h := testutil.MountHierarchy(t)
	act := runAct(t, inNamespace(triggerBin, "open", h.Agent(), "O_WRONLY")...)
	// The record was committed before the write's open returned, so it is in the buffer now.
	if code := s.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	if got := s.matching(byPID(act.HostPID)); len(got) != 1 {
		t.Fatalf("want the pending finding written before exit, got %d: %s", len(got), s.summary())
	}
	if !strings.Contains(s.stderr.String(), `msg="sensor stopped"`) {
		t.Errorf("no \"sensor stopped\" log line:\n%s", s.stderr.String())
	}
}
