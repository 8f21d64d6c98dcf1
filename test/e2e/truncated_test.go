package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"escapewatch/internal/testutil"
)

// Limits of the kernel side's path walk (bpf/path.h): EW_MAX_COMPONENTS steps (one per component and per mount
// point crossed), and EW_PATH_MAX bytes with the NUL.
const (
	pathWalkSteps = 48
	pathMax       = 4096
)

// TestPrivilegedTruncatedPath writes the real release_agent, from a new mount+pid namespace, through paths the
// kernel side cannot walk whole: a bind mount of a private hierarchy at the bottom of a directory chain deeper
// than the walk goes, and at the bottom of one longer than its buffer. Both findings of each write (TRC-1010
// for the open, EW-1001 for the change) must say that their pathname was cut, and give its lower part.
func TestPrivilegedTruncatedPath(t *testing.T) {
	s := startSensor(t)

	t.Run("deeper than the walk goes", func(t *testing.T) {
		h := testutil.MountHierarchy(t)
		deep := filepath.Join(append([]string{t.TempDir()}, slices.Repeat([]string{"d"}, pathWalkSteps+2)...)...)
		if err := os.MkdirAll(deep, 0o755); err != nil {
			t.Fatal(err)
		}
		agent := filepath.Join(deep, "release_agent")
		act := runAct(t, inNamespace("sh", "-c", "mount --bind "+h.Dir+" "+deep+" && "+shellAct+"echo /payload > "+agent)...)
		checkTruncated(t, s, act, agent, agent)
	})

	t.Run("longer than the buffer", func(t *testing.T) {
		h := testutil.MountHierarchy(t)
		base := t.TempDir()
		act := runAct(t, inNamespace(triggerBin, "longpath", h.Dir, base)...)
		// The trigger's chain (longPathDirs names of longPathName bytes), opened relative to its last parent.
		name := strings.Repeat("l", 250)
		agent := base + strings.Repeat("/"+name, 20) + "/release_agent"
		if len(agent) < pathMax {
			t.Fatalf("the path is %d bytes: too short to be cut", len(agent))
		}
		checkTruncated(t, s, act, agent, name+"/release_agent")
	})
}

// checkTruncated waits for the TRC-1010 and EW-1001 findings of act and checks that each names pathname as cut
// and gives a lower part of agent, the whole path; syscallPathname is the path string the process passed.
func checkTruncated(t *testing.T, s *sensor, act actor, agent, syscallPathname string) {
	t.Helper()
	open := s.waitFor(t, "TRC-1010 for the open through the cut path", trc1010By(act.HostPID))
	changed := s.waitFor(t, "EW-1001 for the write through the cut path", changedBy(act.HostPID))
	for _, f := range []finding{open, changed} {
		id := f.SigMetadata.ID
		if !slices.Equal(f.Event.Truncated, []string{"pathname"}) {
			t.Errorf("%s: truncated = %q, want [pathname]", id, f.Event.Truncated)
		}
		p, _ := f.arg("pathname").(string)
		if !strings.HasPrefix(p, "/") || !strings.HasSuffix(agent, p) || len(p) >= len(agent) || len(p) >= pathMax {
			t.Errorf("%s: pathname = %q, want a lower part of %q", id, p, agent)
		}
	}
	if got := open.arg("syscall_pathname"); got != syscallPathname {
		t.Errorf("TRC-1010: syscall_pathname = %v, want the path string the process passed, %s", got, syscallPathname)
	}
}
