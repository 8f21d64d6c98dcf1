package enrich

import (
	"path/filepath"
	"testing"
	"time"

	"escapewatch/internal/testutil/containerd"
)

// TestPrivilegedContainerdLookup asks a real containerd, started for the test with its own root, state and
// socket in a temporary directory, about a container made with ctr from an image built here (no registry is
// reachable). Needs root and the Debian packages containerd and busybox-static.
func TestPrivilegedContainerdLookup(t *testing.T) {
	d := containerd.Start(t)

	const image = "docker.io/escapewatch/busybox:e2e"
	const id = "5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5"
	want := Details{
		Name:         "escaper",
		Image:        image,
		ImageDigest:  d.ImportBusybox(t, image),
		PodName:      "release-agent-test",
		PodNamespace: "escapewatch-e2e",
		PodUID:       "7a3e1c55-2b9d-4f60-8e1a-0c4d6b2f9e13",
	}
	d.Ctr(t, "--namespace", containerd.CRINamespace, "containers", "create", "--snapshotter", "native",
		"--label", labelPodName+"="+want.PodName,
		"--label", labelPodNamespace+"="+want.PodNamespace,
		"--label", labelPodUID+"="+want.PodUID,
		"--label", labelContainerName+"="+want.Name,
		image, id)

	r := NewRuntimes(RuntimeOptions{
		ContainerdSocket: d.Socket,
		DockerSocket:     filepath.Join(t.TempDir(), "no-docker.sock"),
		MaxWait:          10 * time.Second, // a first gRPC connection, on a busy CI machine
	})
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close Runtimes: %v", err)
		}
	})
	for _, rt := range []string{RuntimeContainerd, ""} {
		if got := r.Lookup(t.Context(), Container{ID: id, Runtime: rt}); got != want {
			t.Errorf("Lookup(runtime %q) = %+v, want %+v", rt, got, want)
		}
	}
	if got := r.Lookup(t.Context(), Container{ID: unknownID, Runtime: RuntimeContainerd}); got != (Details{}) {
		t.Errorf("Lookup of an unknown container = %+v, want Details{}", got)
	}
	if s := r.Stats(); s.Errors != 0 {
		t.Errorf("Stats() = %+v, want no errors", s)
	}
}
