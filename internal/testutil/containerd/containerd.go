// Package containerd runs a real containerd for privileged tests: a daemon of the test's own, whose root, state
// and socket live in a temporary directory so that it never meets the host's, driven with ctr, and a busybox
// image built on the spot, since tests reach no registry. It needs root and the Debian packages containerd and
// busybox-static (and runc, whose shim containerd-shim-runc-v2 comes with containerd, to run tasks).
package containerd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"escapewatch/internal/testutil"
)

// CRINamespace is the containerd namespace of the CRI plugin, where a Kubernetes node's images and containers
// are.
const CRINamespace = "k8s.io"

// shimSocketDir is where containerd-shim-runc-v2 (containerd 1.6) puts its sockets, whatever the daemon's
// state directory: the one place a task uses outside the test's directories, once ctr run is given its
// --runc-root and --fifo-dir there.
const shimSocketDir = "/run/containerd/s"

// Daemon is a containerd started for one test, stopped when the test ends.
type Daemon struct {
	Socket string // containerd's gRPC socket, for ctr --address and the sensor's --containerd-socket
	dir    string // holds the daemon's configuration, root, state and log
	ctr    string // the ctr binary
}

// config keeps everything containerd writes in the test's directory. The CRI plugin is off: it would want CNI
// and a sandbox image; the snapshotters that need special filesystems or setup are off too, and the tests use
// "native", which only copies files.
const config = `version = 2
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

// Start runs containerd until the test ends and returns it once its socket accepts connections. When the test
// fails, the cleanup shows containerd's log. Tasks must be gone by then (see Remove): containerd leaves its
// shims running when it stops.
func Start(t testing.TB) *Daemon {
	t.Helper()
	testutil.RequirePrivileged(t)
	bin := testutil.RequireTool(t, "containerd", "containerd")
	d := &Daemon{dir: t.TempDir(), ctr: testutil.RequireTool(t, "ctr", "containerd")}
	d.Socket = filepath.Join(d.dir, "containerd.sock")
	configPath := filepath.Join(d.dir, "containerd.toml")
	body := fmt.Sprintf(config,
		filepath.Join(d.dir, "root"), filepath.Join(d.dir, "state"), d.Socket, filepath.Join(d.dir, "opt"))
	if err := os.WriteFile(configPath, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(d.dir, "containerd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	shimDirs := newShimDirs(t)
	cmd := exec.Command(bin, "--config", configPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		stop(t, cmd, exited)
		_ = logFile.Close()
		shimDirs.clean(t)
		if t.Failed() {
			showLog(t, logPath)
		}
	})
	waitForSocket(t, d.Socket, exited)
	return d
}

// Ctr runs `ctr --address d.Socket args...` and returns its combined output, failing the test when ctr fails.
func (d *Daemon) Ctr(t testing.TB, args ...string) string {
	t.Helper()
	// Not t.Context(): that ends before the cleanups run, and Remove is one.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args = append([]string{"--address", d.Socket}, args...)
	out, err := exec.CommandContext(ctx, d.ctr, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Remove kills and deletes the task of container id in namespace, then deletes the container, whichever of the
// two exist: a cleanup that works however far the test got. A task left behind would outlive the daemon, in
// its shim.
func (d *Daemon) Remove(t testing.TB, namespace, id string) {
	t.Helper()
	if slices.Contains(strings.Fields(d.Ctr(t, "--namespace", namespace, "tasks", "list", "--quiet")), id) {
		d.Ctr(t, "--namespace", namespace, "tasks", "delete", "--force", id)
	}
	if slices.Contains(strings.Fields(d.Ctr(t, "--namespace", namespace, "containers", "list", "--quiet")), id) {
		d.Ctr(t, "--namespace", namespace, "containers", "delete", id)
	}
}

func stop(t testing.TB, cmd *exec.Cmd, exited <-chan error) {
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

func showLog(t testing.TB, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Logf("read containerd's log: %v", err)
		return
	}
	t.Logf("containerd's log:\n%s", data)
}

func waitForSocket(t testing.TB, socket string, exited <-chan error) {
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

// shimDirs is what existed of shimSocketDir and its parent before the daemon started, so that the cleanup
// removes only what this test's tasks left there.
type shimDirs struct {
	existed map[string]bool // shimSocketDir and its parent
	sockets map[string]bool // names in shimSocketDir
}

func newShimDirs(t testing.TB) shimDirs {
	s := shimDirs{existed: map[string]bool{}, sockets: map[string]bool{}}
	for _, dir := range []string{filepath.Dir(shimSocketDir), shimSocketDir} {
		_, err := os.Stat(dir)
		s.existed[dir] = err == nil
	}
	for _, name := range listDir(t, shimSocketDir) {
		s.sockets[name] = true
	}
	return s
}

// clean removes the shim sockets that appeared since newShimDirs and that no process serves (a live one is a
// task of another containerd, or of another test), then the directories if they are new and now empty. A shim
// removes its socket when it exits cleanly; this is for the ones that crashed or were killed.
func (s shimDirs) clean(t testing.TB) {
	for _, name := range listDir(t, shimSocketDir) {
		path := filepath.Join(shimSocketDir, name)
		if s.sockets[name] || serves(path) {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("remove the stale shim socket %s: %v", path, err)
		}
	}
	for _, dir := range []string{shimSocketDir, filepath.Dir(shimSocketDir)} {
		if s.existed[dir] {
			continue
		}
		// Not empty: another containerd uses it now; not there: nothing was created.
		if err := syscall.Rmdir(dir); err != nil && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.ENOENT) {
			t.Errorf("remove %s, which containerd created for the test: %v", dir, err)
		}
	}
}

func listDir(t testing.TB, dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("list %s: %v", dir, err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// serves tells whether a process accepts connections on the unix socket at path.
func serves(path string) bool {
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
}
