package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"escapewatch/internal/event"
	"escapewatch/internal/testutil"
)

// runcContainer is a busybox container run by the real runc.
type runcContainer struct {
	id, bundle, state, cgroupsPath string
}

// newRuncContainer writes a bundle whose rootfs is busybox-static and whose process runs script, with Docker's
// default capabilities plus CAP_SYS_ADMIN (the escape's precondition) and the given cgroupsPath.
func newRuncContainer(t *testing.T, cgroupsPath, script string) *runcContainer {
	t.Helper()
	testutil.RequireTool(t, "runc", "runc")
	testutil.RequireTool(t, "/bin/busybox", "busybox-static")
	c := &runcContainer{id: filepath.Base(cgroupsPath), bundle: t.TempDir(), state: t.TempDir(), cgroupsPath: cgroupsPath}
	rootfs := filepath.Join(c.bundle, "rootfs")
	for _, dir := range []string{"bin", "proc", "sys", "dev", "tmp", "mnt"} {
		if err := os.MkdirAll(filepath.Join(rootfs, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), busybox, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"sh", "mount", "mkdir", "echo", "cat", "sleep"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("runc", "spec", "--bundle", c.bundle).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v\n%s", err, out)
	}
	var spec map[string]any
	raw, err := os.ReadFile(filepath.Join(c.bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	caps := []string{ // Docker's defaults, plus CAP_SYS_ADMIN
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
		"CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
		"CAP_AUDIT_WRITE", "CAP_SYS_ADMIN",
	}
	process := spec["process"].(map[string]any)
	process["terminal"] = false
	process["args"] = []string{"/bin/sh", "-c", script}
	process["capabilities"] = map[string]any{"bounding": caps, "effective": caps, "permitted": caps}
	spec["root"] = map[string]any{"path": "rootfs", "readonly": false}
	spec["linux"].(map[string]any)["cgroupsPath"] = cgroupsPath
	if raw, err = json.Marshal(spec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.bundle, "config.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return c
}

// run runs the container to completion and removes it, even when it fails.
func (c *runcContainer) run(t *testing.T) string {
	t.Helper()
	t.Cleanup(func() {
		exec.Command("runc", "--root", c.state, "delete", "--force", c.id).Run()
		// runc leaves the parent cgroups it created; the pod's is this test's own.
		if strings.Contains(c.cgroupsPath, "/pod") {
			parents, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", filepath.Dir(c.cgroupsPath)))
			unified := filepath.Join("/sys/fs/cgroup", filepath.Dir(c.cgroupsPath))
			for _, dir := range append(parents, unified) {
				os.Remove(dir)
			}
		}
	})
	args := []string{"--root", c.state, "run", "--bundle", c.bundle, c.id}
	if rootIsRamfs(t) {
		args = append(args[:2], "run", "--no-pivot", "--bundle", c.bundle, c.id) // pivot_root refuses an initramfs root
	}
	out, err := exec.Command("runc", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("runc run %s: %v\n%s", c.id, err, out)
	}
	return string(out)
}

// rootIsRamfs: inside the kernel-matrix VMs the root is the initramfs, which pivot_root cannot leave.
func rootIsRamfs(t *testing.T) bool {
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[1] == "/" {
			return f[2] == "rootfs" || f[2] == "ramfs"
		}
	}
	return false
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestPrivilegedRuncEscape runs the classic escape inside real runc containers, with cgroup paths shaped like
// Docker's and like a Kubernetes pod's: the kernel runs the agent on the host, and the finding names the
// container (origin container, its ID, and the pod's UID from the path). The same write from the host is not
// a finding on the defaults.
func TestPrivilegedRuncEscape(t *testing.T) {
	s := startSensor(t)
	podUID := fmt.Sprintf("%s-%s-%s-%s-%s", randomHex(t, 4), randomHex(t, 2), randomHex(t, 2), randomHex(t, 2), randomHex(t, 6))
	for _, tc := range []struct{ name, parent, podUID, runtime string }{
		{"docker", "/docker", "", "docker"},
		{"kubernetes pod", "/kubepods/besteffort/pod" + podUID, podUID, ""}, // the cgroupfs layout does not name the runtime
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := randomHex(t, 32)
			h := testutil.MountNamedHierarchy(t, "ewrunc"+id[:12])
			marker := filepath.Join(t.TempDir(), "escaped")
			agent := agentScript(t, marker)

			// The host's own write first: not a finding in the default scope.
			host := runAct(t, "sh", "-c", shellAct+"echo /host-tool > "+h.Agent())

			c := newRuncContainer(t, tc.parent+"/"+id, escapeScript(h.Name, "/mnt/cg", agent))
			c.run(t)
			f := s.waitFor(t, "the escape in the container", func(f finding) bool {
				return f.Event.ContainerID == id && f.Event.EventName == event.SecurityFileOpen
			})
			ev := f.Event
			if ev.Origin != event.OriginContainer || ev.Container.ID != id || !ev.ContextFlags.ContainerStarted ||
				ev.ProcessName != "sh" || f.arg("pathname") != "/mnt/cg/release_agent" || ev.Kubernetes.PodUID != tc.podUID ||
				ev.Container.Runtime != tc.runtime {
				t.Errorf("finding: origin %q container %q (%q) started %v comm %q pathname %v podUID %q; want container %s (%q) sh /mnt/cg/release_agent %q",
					ev.Origin, ev.Container.ID, ev.Container.Runtime, ev.ContextFlags.ContainerStarted, ev.ProcessName,
					f.arg("pathname"), ev.Kubernetes.PodUID, id, tc.runtime, tc.podUID)
			}
			if !waitForFile(marker, waitLimit) {
				t.Errorf("the release agent never ran on the host: the escape itself did not work")
			}
			if got := s.matching(anyBy(host.HostPID)); len(got) > 0 {
				t.Errorf("the host's write is a finding on the defaults: %s", s.summary())
			}
			if data, _ := os.ReadFile(h.Agent()); !strings.Contains(string(data), agent) {
				t.Errorf("release_agent = %q, want the container's %s", data, agent)
			}
		})
	}
}
