// Package testutil holds helpers for privileged tests: the root and tool checks that skip on a laptop but fail
// in CI, and private cgroup v1 hierarchies that never touch the host's own.
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// RequirePrivilegedEnv, set to 1, turns the skip of a privileged test into a failure (CI sets it).
const RequirePrivilegedEnv = "ESCAPEWATCH_REQUIRE_PRIVILEGED"

// RequirePrivileged skips t unless it runs as root, or fails it when RequirePrivilegedEnv=1.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	msg := "needs root: it loads BPF programs and mounts private cgroup v1 hierarchies"
	if os.Getenv(RequirePrivilegedEnv) == "1" {
		t.Fatalf("%s, and %s=1 forbids skipping", msg, RequirePrivilegedEnv)
	}
	t.Skip(msg)
}

// RequireTool returns the path of a program a test needs. Without it the test skips, naming the Debian
// package that has it, or fails when RequirePrivilegedEnv=1 (CI), where a missing package must not hide a test.
func RequireTool(t testing.TB, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("needs %s: apt-get install %s (%v)", name, debianPackage, err)
	if os.Getenv(RequirePrivilegedEnv) == "1" {
		t.Fatalf("%s, and %s=1 forbids skipping", msg, RequirePrivilegedEnv)
	}
	t.Skip(msg)
	return ""
}

var hierarchySeq atomic.Uint64

// Hierarchy is a private named cgroup v1 hierarchy mounted for one test.
type Hierarchy struct {
	Name string // the name= option, unique per test process and call
	Dir  string // where it is mounted
}

// Agent returns the path of the hierarchy's release_agent.
func (h Hierarchy) Agent() string { return filepath.Join(h.Dir, "release_agent") }

// MountHierarchy mounts a new named cgroup v1 hierarchy with no controllers in a temporary directory and
// unmounts it when the test ends, after removing child cgroups (the kernel keeps a hierarchy with children
// alive). Its release_agent belongs to this hierarchy only, never to the host's.
func MountHierarchy(t testing.TB) Hierarchy {
	t.Helper()
	return MountNamedHierarchy(t, fmt.Sprintf("ewtest%d_%d", os.Getpid(), hierarchySeq.Add(1)))
}

// MountNamedHierarchy is MountHierarchy with a chosen name: a container that mounts the same name shares the
// hierarchy, and the test still cleans it up.
func MountNamedHierarchy(t testing.TB, name string) Hierarchy {
	t.Helper()
	return mountHierarchy(t, name, "")
}

// MountHierarchyWithAgent is MountHierarchy with release_agent=agent given as a mount option.
func MountHierarchyWithAgent(t testing.TB, agent string) Hierarchy {
	t.Helper()
	return mountHierarchy(t, fmt.Sprintf("ewtest%d_%d", os.Getpid(), hierarchySeq.Add(1)), ",release_agent="+agent)
}

func mountHierarchy(t testing.TB, name, extraOptions string) Hierarchy {
	t.Helper()
	RequirePrivileged(t)
	h := Hierarchy{Name: name, Dir: t.TempDir()}
	if err := unix.Mount("cgroup", h.Dir, "cgroup", 0, "none,name="+h.Name+extraOptions); err != nil {
		t.Fatalf("mount a private cgroup v1 hierarchy (needs a kernel with cgroup v1): %v", err)
	}
	t.Cleanup(func() {
		removeChildCgroups(t, h.Dir)
		if err := unix.Unmount(h.Dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", h.Dir, err)
		}
	})
	return h
}

// removeChildCgroups removes the cgroup directories below dir, deepest first. Each must be empty of
// processes; the tests only create cgroups whose processes have exited.
func removeChildCgroups(t testing.TB, dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Errorf("list %s: %v", dir, err)
		return
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		child := filepath.Join(dir, e.Name())
		removeChildCgroups(t, child)
		if err := unix.Rmdir(child); err != nil {
			t.Errorf("remove child cgroup %s: %v", child, err)
		}
	}
}

// MountTmpfs mounts a private tmpfs for files that only look like a release_agent, and unmounts it when the
// test ends.
func MountTmpfs(t testing.TB) string {
	t.Helper()
	RequirePrivileged(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// CgroupDirs creates cgroup name in every hierarchy a process's cgroup path may come from (the unified one, the
// v1 controller hierarchies but cpuset, whose new cgroups have no CPUs) and removes them when the test ends.
func CgroupDirs(t testing.TB, name string) []string {
	t.Helper()
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, line := range strings.Split(string(mountinfo), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		fields, super := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(super) < 3 || fields[3] != "/" {
			continue
		}
		v1Controller := super[0] == "cgroup" && !strings.Contains(super[2], "name=") && !strings.Contains(super[2], "cpuset")
		if super[0] != "cgroup2" && !v1Controller {
			continue
		}
		root, dir := fields[4], filepath.Join(fields[4], name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			// Deepest first; a parent another entry still uses is removed by that entry's cleanup.
			for p := dir; p != root; p = filepath.Dir(p) {
				os.Remove(p)
			}
		})
		dirs = append(dirs, dir)
	}
	if len(dirs) == 0 {
		t.Fatal("no cgroup hierarchy to place a process in")
	}
	return dirs
}

// JoinCgroups is a shell prefix that moves the shell into every one of dirs.
func JoinCgroups(dirs []string) string {
	var b strings.Builder
	for _, d := range dirs {
		b.WriteString("echo $$ > " + d + "/cgroup.procs; ")
	}
	return b.String()
}
