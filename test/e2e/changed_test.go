package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"escapewatch/internal/event"
	"escapewatch/internal/testutil"
)

// TestPrivilegedAgentChanged: EW-1001 reports the value the kernel stores after any write to a real
// release_agent, including the evasions TRC-1010 cannot see: a descriptor opened before the sensor started, a
// bind mount of the file under another name, and a write the kernel refuses.
func TestPrivilegedAgentChanged(t *testing.T) {
	h := testutil.MountHierarchy(t)

	// Opened before the sensor starts; written after.
	early := startEarlyWriter(t, h.Agent(), "/early-fd-payload")
	s := startSensor(t)
	if err := early.write(); err != nil || !early.wrote() {
		t.Fatalf("the early writer: %v", err)
	}
	f := s.waitFor(t, "the write through an early descriptor", changedBy(early.HostPID))
	checkChanged(t, f, h.Agent(), h.Name, "/early-fd-payload", "") // mounted before the sensor: known empty
	if got := s.matching(trc1010By(early.HostPID)); len(got) != 0 {
		t.Errorf("TRC-1010 cannot see this open (it happened before the sensor started), yet: %s", s.summary())
	}

	// A bind mount of the file under a harmless name.
	notes := filepath.Join(t.TempDir(), "notes.txt")
	bind := runAct(t, inNamespace("sh", "-c", "touch "+notes+" && mount --bind "+h.Agent()+" "+notes+" && "+
		shellAct+"echo /bind-payload > "+notes)...)
	f = s.waitFor(t, "the write through a bind mount", changedBy(bind.HostPID))
	checkChanged(t, f, notes, h.Name, "/bind-payload", "/early-fd-payload")

	// Without CAP_SYS_ADMIN the kernel refuses the write: reported, marked refused, value unchanged.
	refusedOut, _ := runExpectFailure(t, inNamespace("setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin",
		"sh", "-c", shellAct+"echo /refused-payload > "+h.Agent())...)
	refused := parseActor(t, refusedOut)
	f = s.waitFor(t, "the refused write", changedBy(refused.HostPID))
	if f.Event.ReturnValue >= 0 || f.Data["refused"] != true || f.Data["value"] != "/bind-payload" {
		t.Errorf("refused write: returnValue %d data %v; want < 0, refused, value unchanged", f.Event.ReturnValue, f.Data)
	}
}

func checkChanged(t *testing.T, f finding, pathname, hierarchy, value, oldValue string) {
	t.Helper()
	ev := f.Event
	if ev.EventName != event.ReleaseAgentChanged || f.arg("pathname") != pathname || f.arg("hierarchy") != hierarchy ||
		f.Data["value"] != value || ev.Origin != event.OriginNamespaced || ev.ReturnValue <= 0 || f.Data["refused"] != false {
		t.Errorf("EW-1001: event %s pathname %v hierarchy %v data %v origin %s returnValue %d; want %s %s %s value %s",
			ev.EventName, f.arg("pathname"), f.arg("hierarchy"), f.Data, ev.Origin, ev.ReturnValue,
			event.ReleaseAgentChanged, pathname, hierarchy, value)
	}
	if old, ok := f.Data["oldValue"].(string); !ok || old != oldValue {
		t.Errorf("oldValue %q (present: %v), want %q", old, ok, oldValue)
	}
}

// TestPrivilegedAgentOldValue: a change reports the value it replaced wherever that value came from: written
// before the sensor started, given as a mount option, or set by a remount after it started.
func TestPrivilegedAgentOldValue(t *testing.T) {
	before := testutil.MountHierarchy(t)
	if err := os.WriteFile(before.Agent(), []byte("/set-before-start\n"), 0); err != nil {
		t.Fatal(err)
	}
	s := startSensor(t)
	option := testutil.MountHierarchyWithAgent(t, "/mount-option")
	remounted := testutil.MountHierarchy(t)
	if err := unix.Mount("cgroup", remounted.Dir, "cgroup", unix.MS_REMOUNT,
		"none,name="+remounted.Name+",release_agent=/remount-value"); err != nil {
		t.Fatalf("remount with release_agent: %v", err)
	}
	for _, c := range []struct {
		what string
		h    testutil.Hierarchy
		old  string
	}{
		{"set before the sensor started", before, "/set-before-start"},
		{"mount option", option, "/mount-option"},
		{"remount", remounted, "/remount-value"},
	} {
		value := "/after-" + strings.ReplaceAll(c.what, " ", "-")
		act := runAct(t, inNamespace("sh", "-c", shellAct+"echo "+value+" > "+c.h.Agent())...)
		f := s.waitFor(t, c.what, changedBy(act.HostPID))
		checkChanged(t, f, c.h.Agent(), c.h.Name, value, c.old)
	}
}

// TestPrivilegedAgentChangedWriteFamily: every write-family call into release_agent is EW-1001 with the value,
// io_uring's IORING_OP_WRITE and IORING_OP_SPLICE and Linux AIO's io_submit included.
func TestPrivilegedAgentChangedWriteFamily(t *testing.T) {
	s := startSensor(t)
	h := testutil.MountHierarchy(t)
	for _, method := range []string{"writev", "pwrite", "pwritev2", "sendfile", "splice", "iouring-write", "iouring-splice", "aio"} {
		t.Run(method, func(t *testing.T) {
			value := "/" + method + "-payload"
			act := runAct(t, inNamespace(triggerBin, method, h.Agent(), value)...)
			f := s.waitFor(t, method, changedBy(act.HostPID))
			if f.Data["value"] != value || f.Data["refused"] != false {
				t.Errorf("%s: data %v, want value %s", method, f.Data, value)
			}
			if want := syscallOf(method); f.Event.Syscall != want {
				t.Errorf("%s: syscall %q, want %q", method, f.Event.Syscall, want)
			}
		})
	}
}

// syscallOf names the syscall a trigger method writes with.
func syscallOf(method string) string {
	switch method {
	case "iouring-write", "iouring-splice":
		return "io_uring_enter"
	case "aio":
		return "io_submit"
	case "pwrite":
		return "pwrite64"
	}
	return method
}

// TestPrivilegedAgentChangedReceivedDescriptor: a namespaced process writes through a descriptor it received over
// a unix socket (SCM_RIGHTS) from a host process that opened the file: the writer never opens it.
func TestPrivilegedAgentChangedReceivedDescriptor(t *testing.T) {
	s := startSensor(t)
	h := testutil.MountHierarchy(t)
	sockPath := filepath.Join(t.TempDir(), "fd.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sockPath, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sent := make(chan error, 1)
	go func() { sent <- sendDescriptor(ln, h.Agent()) }()
	act := runAct(t, inNamespace(triggerBin, "recvfd", sockPath, "/received-fd-payload")...)
	if err := <-sent; err != nil {
		t.Fatalf("send the descriptor: %v", err)
	}
	f := s.waitFor(t, "the write through a received descriptor", changedBy(act.HostPID))
	checkChanged(t, f, h.Agent(), h.Name, "/received-fd-payload", "")
	if got := s.matching(trc1010By(act.HostPID)); len(got) != 0 {
		t.Errorf("the writer never opened the file, yet TRC-1010 fired for it: %s", s.summary())
	}
}

// sendDescriptor accepts one connection on ln and sends it a descriptor of path open for writing.
func sendDescriptor(ln *net.UnixListener, path string) error {
	conn, err := ln.AcceptUnix()
	if err != nil {
		return err
	}
	defer conn.Close()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, _, err = conn.WriteMsgUnix([]byte{0}, unix.UnixRights(int(f.Fd())), nil)
	return err
}

// TestPrivilegedCopyFileRangeRefused: copy_file_range cannot change release_agent. cgroupfs has no copy
// method, so the kernel refuses a copy from another filesystem (EXDEV) before any handler runs, and the value
// stays. The tracepoint backend, which sees the syscall, reports the refused attempt.
func TestPrivilegedCopyFileRangeRefused(t *testing.T) {
	s := startSensor(t)
	h := testutil.MountHierarchy(t)
	out, stderr := runExpectFailure(t, inNamespace(triggerBin, "copy_file_range", h.Agent(), "/copied-payload")...)
	if !strings.Contains(stderr, unix.EXDEV.Error()) {
		t.Fatalf("copy_file_range into release_agent: %s, want %v", stderr, unix.EXDEV)
	}
	if v, err := os.ReadFile(h.Agent()); err != nil || strings.TrimSpace(string(v)) != "" {
		t.Errorf("release_agent = %q (%v) after the refused copy, want it unchanged (empty)", v, err)
	}
	if s.backend() != "tracepoint" {
		return
	}
	act := parseActor(t, out)
	f := s.waitFor(t, "the refused copy", changedBy(act.HostPID))
	if f.Data["refused"] != true || f.Event.ReturnValue != -int(unix.EXDEV) || f.Event.Syscall != "copy_file_range" {
		t.Errorf("refused copy: data %v returnValue %d syscall %s; want refused, -EXDEV, copy_file_range",
			f.Data, f.Event.ReturnValue, f.Event.Syscall)
	}
}

// TestPrivilegedAgentChangedDetachedMount: a hierarchy created with fsmount and never attached has no path at
// all; its release_agent, opened relative to the mount's descriptor, is still the real one.
func TestPrivilegedAgentChangedDetachedMount(t *testing.T) {
	s := startSensor(t)
	name := "ewdetached" + randomHex(t, 6)
	act := runAct(t, inNamespace(triggerBin, "fsmount", "-", name, "/detached-payload")...)
	f := s.waitFor(t, "the write into a detached mount", changedBy(act.HostPID))
	if f.Data["value"] != "/detached-payload" || f.arg("hierarchy") != name || f.Data["refused"] != false {
		t.Errorf("detached mount: data %v hierarchy %v; want value /detached-payload, hierarchy %s", f.Data, f.arg("hierarchy"), name)
	}
	s.waitFor(t, "TRC-1010 for the open in a detached mount", trc1010By(act.HostPID))
}

// TestPrivilegedAgentChangedShellTools: the everyday tools write the value as EW-1001 and open it as TRC-1010.
// cp tries copy_file_range first, which cgroupfs refuses, then falls back to read and write.
func TestPrivilegedAgentChangedShellTools(t *testing.T) {
	s := startSensor(t)
	h := testutil.MountHierarchy(t)
	src := filepath.Join(t.TempDir(), "payload-path")
	if err := os.WriteFile(src, []byte("/cp-payload\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ tool, script, value string }{
		{"tee", "echo /tee-payload | tee " + h.Agent() + " >/dev/null", "/tee-payload"},
		{"dd", "echo /dd-payload | dd of=" + h.Agent() + " status=none", "/dd-payload"},
		{"cp", "cp " + src + " " + h.Agent(), "/cp-payload"},
	} {
		t.Run(c.tool, func(t *testing.T) {
			// exec: the shell becomes the tool, so the printed pid is the writer's.
			act := runAct(t, inNamespace("sh", "-c", shellAct+"exec sh -c '"+c.script+"'")...)
			f := s.waitFor(t, c.tool, func(f finding) bool {
				return f.SigMetadata.ID == "EW-1001" && f.Data["value"] == c.value
			})
			if f.Event.ProcessName != c.tool || f.Event.Origin != event.OriginNamespaced {
				t.Errorf("%s: written by %s (%s), want %s, namespaced (shell pid %d)", c.tool, f.Event.ProcessName,
					f.Event.Origin, c.tool, act.HostPID)
			}
			s.waitFor(t, c.tool+" TRC-1010", func(f finding) bool {
				return f.SigMetadata.ID == "TRC-1010" && f.Event.ProcessName == c.tool && f.arg("pathname") == h.Agent()
			})
		})
	}
}
