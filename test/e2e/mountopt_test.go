package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"escapewatch/internal/testutil"
)

// TestPrivilegedMountOption: release_agent given as a mount option, by mount(2) and by fsconfig on a context
// that is never mounted, is EW-1002 with the value; no file is ever opened or written.
func TestPrivilegedMountOption(t *testing.T) {
	testutil.RequirePrivileged(t)
	s := startSensor(t)
	name := fmt.Sprintf("ewmnt%s", randomHex(t, 6))
	dir := filepath.Join(t.TempDir(), "cg")
	viaMount := runAct(t, inNamespace("sh", "-c", shellAct+"mkdir -p "+dir+" && mount -t cgroup -o none,name="+name+
		",release_agent=/mount-payload cgroup "+dir+" && umount "+dir)...)
	viaFsconfig := runAct(t, inNamespace(triggerBin, "fsconfig", "-", name+"x", "/fsconfig-payload")...)
	// Reconfiguring a hierarchy without child cgroups: a remount, and fspick+fsconfig.
	h := testutil.MountHierarchy(t)
	viaRemount := runAct(t, inNamespace("sh", "-c", shellAct+"mount -o remount,release_agent=/remount-payload "+h.Dir)...)
	viaFspick := runAct(t, inNamespace(triggerBin, "fspick", h.Dir, h.Name, "/fspick-payload")...)
	for _, c := range []struct {
		what  string
		pid   int
		value string
	}{
		{"mount(2)", viaMount.HostPID, "/mount-payload"},
		{"fsconfig without fsmount", viaFsconfig.HostPID, "/fsconfig-payload"},
		{"remount", viaRemount.HostPID, "/remount-payload"},
		{"fspick and fsconfig", viaFspick.HostPID, "/fspick-payload"},
	} {
		f := s.waitFor(t, c.what, func(f finding) bool {
			// mount(8) may run the syscall in a child of the shell: match the value, then check the origin.
			return f.SigMetadata.ID == "EW-1002" && f.Data["value"] == c.value
		})
		if f.Event.Origin != "namespaced" || f.Data["refused"] != false {
			t.Errorf("%s: origin %s refused %v, want namespaced and accepted (pid %d)", c.what, f.Event.Origin, f.Data["refused"], c.pid)
		}
	}
}

// TestPrivilegedMountOptionRefused: the kernel refuses a second release_agent on the same mount context. Both
// options are reported, the second marked refused: attempts are visible even when they fail.
func TestPrivilegedMountOptionRefused(t *testing.T) {
	s := startSensor(t)
	name := fmt.Sprintf("ewref%s", randomHex(t, 6))
	out, stderr := runExpectFailure(t, inNamespace(triggerBin, "fsconfig", "-", name, "/first-payload", "/second-payload")...)
	if !strings.Contains(stderr, "release_agent=/second-payload") {
		t.Fatalf("want the second release_agent refused, got: %s", stderr)
	}
	act := parseActor(t, out)
	for _, c := range []struct {
		value   string
		refused bool
	}{{"/first-payload", false}, {"/second-payload", true}} {
		f := s.waitFor(t, c.value, func(f finding) bool {
			return f.SigMetadata.ID == "EW-1002" && f.Data["value"] == c.value
		})
		if f.Data["refused"] != c.refused || f.Event.HostProcessID != act.HostPID || (f.Event.ReturnValue < 0) != c.refused {
			t.Errorf("%s: refused %v returnValue %d pid %d; want refused %v, pid %d",
				c.value, f.Data["refused"], f.Event.ReturnValue, f.Event.HostProcessID, c.refused, act.HostPID)
		}
	}
}

// TestPrivilegedMountOptionDataRace: a thread keeps changing mount(2)'s data while the kernel parses it. Every
// mount that succeeded gave its hierarchy the release_agent, and each one is EW-1002 with that value: the
// report comes from what the kernel parsed, never from the data read again afterwards.
func TestPrivilegedMountOptionDataRace(t *testing.T) {
	s := startSensor(t)
	value := "/race-payload-" + randomHex(t, 4) + "-"
	dir := filepath.Join(t.TempDir(), "cg")
	out := runActOutput(t, inNamespace(triggerBin, "mount-race", dir, "ewrace"+randomHex(t, 4)+"_", value, "40")...)
	var mounted []string
	for _, line := range strings.Split(out, "\n")[1:] {
		if strings.HasPrefix(line, value) {
			mounted = append(mounted, line)
		}
	}
	if len(mounted) == 0 {
		t.Fatalf("no mount succeeded out of 40:\n%s", out)
	}
	for _, v := range mounted {
		f := s.waitFor(t, "EW-1002 for "+v, func(f finding) bool { return f.SigMetadata.ID == "EW-1002" && f.Data["value"] == v })
		if f.Data["refused"] != false {
			t.Errorf("%s: refused %v, want the accepted mount", v, f.Data["refused"])
		}
	}
	t.Logf("%d of 40 mounts succeeded, each reported", len(mounted))
}
