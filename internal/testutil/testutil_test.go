package testutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestPrivilegedMountHierarchy(t *testing.T) {
	var h Hierarchy
	t.Run("mount", func(t *testing.T) {
		h = MountHierarchy(t)
		var fs unix.Statfs_t
		if err := unix.Statfs(h.Dir, &fs); err != nil {
			t.Fatal(err)
		}
		if fs.Type != unix.CGROUP_SUPER_MAGIC {
			t.Fatalf("filesystem magic %#x, want cgroup v1 %#x", fs.Type, unix.CGROUP_SUPER_MAGIC)
		}
		if _, err := os.Stat(h.Agent()); err != nil {
			t.Fatalf("no release_agent at the root: %v", err)
		}
		if err := os.Mkdir(filepath.Join(h.Dir, "child"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(h.Dir, "child", "grandchild"), 0o755); err != nil {
			t.Fatal(err)
		}
	})
	// After the subtest's cleanup, the hierarchy is gone from the mount table, children and all.
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), "name="+h.Name) {
		t.Fatalf("hierarchy %s still mounted after cleanup", h.Name)
	}
}
