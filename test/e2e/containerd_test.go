package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"escapewatch/internal/event"
	"escapewatch/internal/testutil"
	"escapewatch/internal/testutil/containerd"
)

// TestPrivilegedContainerdEscape runs the escape in a container that a real containerd runs the way its CRI
// plugin runs a Kubernetes pod's (namespace k8s.io, the CRI labels, the pod's cgroup path of the cgroupfs
// driver): the kernel runs the agent on the host, and the finding names the container, its image and its pod
// as containerd's API tells them to the sensor.
func TestPrivilegedContainerdEscape(t *testing.T) {
	if os.Getenv(binDirEnv) != "" {
		t.Skipf("runs in the kernel-matrix guest (%s is set), which has no containerd: "+
			"the containerd enrichment is covered by this test's run on the host", binDirEnv)
	}
	d := containerd.Start(t)
	s := startSensor(t, "--containerd-socket", d.Socket, "--docker-socket", filepath.Join(t.TempDir(), "no-docker.sock"))

	const image = "docker.io/escapewatch/busybox:e2e"
	digest := d.ImportBusybox(t, image)
	id := randomHex(t, 32)
	podUID := fmt.Sprintf("%s-%s-%s-%s-%s",
		randomHex(t, 4), randomHex(t, 2), randomHex(t, 2), randomHex(t, 2), randomHex(t, 6))
	pod := event.Kubernetes{PodName: "escaper-" + id[:8], PodNamespace: "escapewatch-e2e", PodUID: podUID}
	const containerName = "release-agent"
	h := testutil.MountNamedHierarchy(t, "ewctrd"+id[:12])
	marker := filepath.Join(t.TempDir(), "escaped")
	agent := agentScript(t, marker)

	podCgroup := "/kubepods/besteffort/pod" + pod.PodUID
	// Cleanups run last-registered first, so this one runs while containerd still serves (the task must be
	// deleted through its shim) and the pod's cgroups go only once the task, and runc's cgroup in them, are gone.
	t.Cleanup(func() {
		d.Remove(t, containerd.CRINamespace, id)
		removePodCgroups(t, podCgroup)
	})
	out := d.Ctr(t, "--namespace", containerd.CRINamespace, "run",
		"--runtime", "io.containerd.runc.v2",
		"--snapshotter", "native",
		"--privileged", // CAP_SYS_ADMIN to mount the hierarchy, as the escape needs
		"--cgroup", podCgroup+"/"+id,
		// Keep runc's state and the stdio FIFOs in the test's directories rather than under /run/containerd.
		"--runc-root", t.TempDir(),
		"--fifo-dir", t.TempDir(),
		"--label", "io.kubernetes.pod.name="+pod.PodName,
		"--label", "io.kubernetes.pod.namespace="+pod.PodNamespace,
		"--label", "io.kubernetes.pod.uid="+pod.PodUID,
		"--label", "io.kubernetes.container.name="+containerName,
		// No --rm: the sensor looks the container up after the write, when its process may be gone; the record
		// stays until the cleanup, as a Kubernetes node keeps an exited container's.
		image, id, "/bin/sh", "-c", escapeScript(h.Name, "/mnt/cg", agent))

	// One write, so the first finding must carry the API's fields: the sensor waits up to 100 ms for its lookup,
	// and the test's local containerd answered well within that in every run, also with the CPUs and the disk
	// saturated. Were it ever too slow, the container would have to write twice and the test check the second
	// finding (with --aggregate-window 0, or the second would be folded into the first).
	f := s.waitFor(t, "the escape in the containerd container", func(f finding) bool {
		return f.SigMetadata.ID == "TRC-1010" && f.Event.ContainerID == id && f.Event.EventName == event.SecurityFileOpen
	})
	ev := f.Event
	if ev.Origin != event.OriginContainer || ev.Container.ID != id || ev.ProcessName != "sh" ||
		f.arg("pathname") != "/mnt/cg/release_agent" {
		t.Errorf("finding: origin %q container %q comm %q pathname %v; want container %s sh /mnt/cg/release_agent",
			ev.Origin, ev.Container.ID, ev.ProcessName, f.arg("pathname"), id)
	}
	if ev.Container.Name != containerName || ev.Container.ImageName != image || ev.Container.ImageDigest != digest {
		t.Errorf("finding's container: name %q image %q digest %q; want %q %q %q (from containerd's API)",
			ev.Container.Name, ev.Container.ImageName, ev.Container.ImageDigest, containerName, image, digest)
	}
	if ev.Kubernetes != pod {
		t.Errorf("finding's kubernetes = %+v, want %+v (the CRI labels)", ev.Kubernetes, pod)
	}
	if !waitForFile(marker, waitLimit) {
		t.Errorf("the release agent never ran on the host: the escape itself did not work; the container said:\n%s", out)
	}
}

// removePodCgroups removes the pod's cgroup in every hierarchy: runc removes the container's own cgroup when
// the task is deleted, but not the parents it created. The kernel may refuse for a moment (EBUSY) while the
// last exited process of the container's cgroup is released.
func removePodCgroups(t *testing.T, podCgroup string) {
	dirs, err := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", podCgroup))
	if err != nil {
		t.Fatal(err)
	}
	// The glob finds each cgroup v1 hierarchy's (and the hybrid layout's unified one); a pure cgroup v2 host has
	// its one hierarchy at /sys/fs/cgroup itself.
	for _, dir := range append(dirs, filepath.Join("/sys/fs/cgroup", podCgroup)) {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := syscall.Rmdir(dir)
			if err == nil || errors.Is(err, syscall.ENOENT) {
				break
			}
			if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
				t.Errorf("remove the pod's cgroup %s: %v", dir, err)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
