package enrich

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"escapewatch/internal/testutil"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestPrivilegedContainerdLookup asks a real containerd, started for the test with its own root, state and
// socket in a temporary directory, about a container made with ctr from an image built here (no registry is
// reachable). Needs root and the Debian packages containerd and busybox-static.
func TestPrivilegedContainerdLookup(t *testing.T) {
	testutil.RequirePrivileged(t)
	containerd, ctr, busybox := requireTool(t, "containerd"), requireTool(t, "ctr"), requireTool(t, "busybox")
	dir := t.TempDir()
	socket := startContainerd(t, containerd, dir)

	const image = "docker.io/escapewatch/busybox:e2e"
	const id = "5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5"
	archive, manifest := writeImageArchive(t, dir, image, busybox)
	want := Details{
		Name:         "escaper",
		Image:        image,
		ImageDigest:  manifest,
		PodName:      "release-agent-test",
		PodNamespace: "escapewatch-e2e",
		PodUID:       "7a3e1c55-2b9d-4f60-8e1a-0c4d6b2f9e13",
	}
	runCtr(t, ctr, socket, "images", "import", "--snapshotter", "native", archive)
	runCtr(t, ctr, socket, "containers", "create", "--snapshotter", "native",
		"--label", labelPodName+"="+want.PodName,
		"--label", labelPodNamespace+"="+want.PodNamespace,
		"--label", labelPodUID+"="+want.PodUID,
		"--label", labelContainerName+"="+want.Name,
		image, id)

	r := NewRuntimes(RuntimeOptions{
		ContainerdSocket: socket,
		DockerSocket:     filepath.Join(dir, "no-docker.sock"),
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

// requireTool returns the path of a program the test needs, skipping without it unless privileged tests are
// required (CI), where a missing package must fail rather than hide the test.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("needs %s (Debian: apt-get install containerd busybox-static): %v", name, err)
	if os.Getenv(testutil.RequirePrivilegedEnv) == "1" {
		t.Fatalf("%s, and %s=1 forbids skipping", msg, testutil.RequirePrivilegedEnv)
	}
	t.Skip(msg)
	return ""
}

// containerdConfig keeps everything containerd writes in the test's directory. The CRI plugin is off: it would
// want CNI and a sandbox image; the snapshotters that need special filesystems or setup are off too, and the
// test uses "native", which only copies files.
const containerdConfig = `version = 2
root = %[1]q
state = %[2]q
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = %[3]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q
`

// startContainerd runs containerd until the test ends and returns its socket once it accepts connections.
func startContainerd(t *testing.T, bin, dir string) string {
	t.Helper()
	socket := filepath.Join(dir, "containerd.sock")
	config := filepath.Join(dir, "containerd.toml")
	body := fmt.Sprintf(containerdConfig, filepath.Join(dir, "root"), filepath.Join(dir, "state"), socket, filepath.Join(dir, "opt"))
	if err := os.WriteFile(config, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "containerd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", config)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		stopContainerd(t, cmd, exited)
		_ = logFile.Close()
		if t.Failed() {
			showLog(t, logPath)
		}
	})
	waitForSocket(t, socket, exited)
	return socket
}

func stopContainerd(t *testing.T, cmd *exec.Cmd, exited <-chan error) {
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("stop containerd: %v", err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Errorf("containerd still runs 10s after SIGTERM; killing it")
		_ = cmd.Process.Kill()
		<-exited
	}
}

func showLog(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Logf("read containerd's log: %v", err)
		return
	}
	t.Logf("containerd's log:\n%s", data)
}

func waitForSocket(t *testing.T, socket string, exited <-chan error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.Dial("unix", socket)
		if err == nil {
			_ = conn.Close()
			return
		}
		select {
		case err := <-exited:
			t.Fatalf("containerd exited before serving %s: %v", socket, err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd does not serve %s after 20s: %v", socket, err)
		}
	}
}

// runCtr runs ctr against the test's containerd in the namespace the CRI plugin uses.
func runCtr(t *testing.T, ctr, socket string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	args = append([]string{"--address", socket, "--namespace", "k8s.io"}, args...)
	out, err := exec.CommandContext(ctx, ctr, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// writeImageArchive writes an OCI image layout archive holding one image, named name, whose only layer has
// busybox as /bin/busybox and /bin/sh. It returns the archive's path and the manifest's digest, which
// containerd keeps as the image's target.
func writeImageArchive(t *testing.T, dir, name, busybox string) (path, manifestDigest string) {
	t.Helper()
	bin, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	l := &ociLayout{blobs: map[digest.Digest][]byte{}}
	layer := l.add(ocispec.MediaTypeImageLayer, busyboxLayer(t, bin))
	config := l.addJSON(t, ocispec.MediaTypeImageConfig, ocispec.Image{
		Platform: ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		Config:   ocispec.ImageConfig{Entrypoint: []string{"/bin/sh"}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layer.Digest}},
	})
	manifest := l.addJSON(t, ocispec.MediaTypeImageManifest, ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    config,
		Layers:    []ocispec.Descriptor{layer},
	})
	manifest.Platform = &ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"}
	// containerd names an imported image after this annotation.
	manifest.Annotations = map[string]string{"io.containerd.image.name": name}
	index, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{manifest},
	})
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "image.tar")
	l.write(t, path, index)
	return path, manifest.Digest.String()
}

// ociLayout collects the blobs of an OCI image layout.
type ociLayout struct {
	blobs map[digest.Digest][]byte
}

func (l *ociLayout) add(mediaType string, data []byte) ocispec.Descriptor {
	d := digest.FromBytes(data)
	l.blobs[d] = data
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

func (l *ociLayout) addJSON(t *testing.T, mediaType string, v any) ocispec.Descriptor {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return l.add(mediaType, data)
}

// write writes the layout as a tar archive, the form `ctr images import` reads.
func (l *ociLayout) write(t *testing.T, path string, index []byte) {
	t.Helper()
	files := []tarEntry{
		{name: ocispec.ImageLayoutFile, body: []byte(`{"imageLayoutVersion":"` + ocispec.ImageLayoutVersion + `"}`)},
		{name: ocispec.ImageIndexFile, body: index},
		{name: "blobs/", dir: true},
		{name: "blobs/sha256/", dir: true},
	}
	for d, data := range l.blobs {
		files = append(files, tarEntry{name: "blobs/sha256/" + d.Encoded(), body: data})
	}
	if err := os.WriteFile(path, tarOf(t, files), 0o600); err != nil {
		t.Fatal(err)
	}
}

// busyboxLayer is a layer tar with busybox as /bin/busybox and /bin/sh.
func busyboxLayer(t *testing.T, busybox []byte) []byte {
	return tarOf(t, []tarEntry{
		{name: "bin/", dir: true},
		{name: "bin/busybox", body: busybox, mode: 0o755},
		{name: "bin/sh", link: "busybox"},
	})
}

type tarEntry struct {
	name string
	body []byte
	mode int64
	dir  bool
	link string // symlink target
}

func tarOf(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		switch {
		case e.dir:
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		case e.link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, e.link, 0o777
		case e.mode != 0:
			h.Mode = e.mode
		}
		if err := w.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
