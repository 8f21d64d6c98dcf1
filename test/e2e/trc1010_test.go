package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"escapewatch/internal/event"
	"escapewatch/internal/testutil"
)

// kernelLargeFile is the kernel's O_LARGEFILE, which it forces on a 64-bit process's opens: asm-generic's on
// x86_64, arm64's own fcntl.h's there. Go's unix.O_LARGEFILE is 0 on both (userspace never needs it).
var kernelLargeFile = map[string]int{"amd64": 0o100000, "arm64": 0o400000}[runtime.GOARCH]

// fileFlags is the "flags" a finding reports for an open with flags: what the security hook sees in
// file->f_flags, O_LARGEFILE forced on 64-bit and O_CLOEXEC (a descriptor flag) gone; the same on every backend.
func fileFlags(flags int) int {
	return (flags | kernelLargeFile) &^ unix.O_CLOEXEC
}

// ioUringFlags: io_uring opens report only what stays in file->f_flags after the open.
func ioUringFlags(flags int) int {
	return fileFlags(flags) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY | unix.O_TRUNC)
}

// openCase is one way to open the real release_agent for writing from a new mount+pid namespace.
type openCase struct {
	name string
	// argv acts on agent; extra is a scratch directory of the test's own.
	argv func(agent, extra string) []string
	// want: the finding's pathname (default: agent), syscall_pathname, syscall, flags and comm.
	pathname        func(agent, extra string) string
	syscallPathname func(agent, extra string) string
	syscall         string
	flags           int
	// ioUring: the open may run in an io_uring worker thread of the process (same host pid, comm iou-wrk-N);
	// inWorker: it must.
	ioUring, inWorker bool
	// inlineNonblock: io_uring may open the file inline, with O_NONBLOCK added until the open is done: a hook
	// at the open (lsm, fentry, kprobe) sees it in the flags, the tracepoint backend after the open does not.
	inlineNonblock bool
}

func same(agent, _ string) string { return agent }
func none(_, _ string) string     { return "" }

var mustAlert = []openCase{
	{
		name:            "shell echo redirect",
		argv:            func(a, _ string) []string { return []string{"sh", "-c", shellAct + "echo /payload > " + a} },
		syscallPathname: same, syscall: "openat", flags: fileFlags(unix.O_WRONLY | unix.O_CREAT | unix.O_TRUNC),
	},
	{
		name: "python open w",
		argv: func(a, _ string) []string {
			return []string{"python3", "-c", "import os; print(os.readlink('/proc/self'), os.getpid(), " +
				"open('/proc/self/comm').read().strip(), flush=True); open('" + a + "', 'w').write('/payload')"}
		},
		syscallPathname: same, syscall: "openat", flags: fileFlags(unix.O_WRONLY | unix.O_CREAT | unix.O_TRUNC | unix.O_CLOEXEC),
	},
	{
		name:            "O_RDWR",
		argv:            func(a, _ string) []string { return []string{triggerBin, "open", a, "O_RDWR"} },
		syscallPathname: same, syscall: "openat", flags: fileFlags(unix.O_RDWR | unix.O_CLOEXEC),
	},
	{
		name:            "O_WRONLY|O_APPEND",
		argv:            func(a, _ string) []string { return []string{triggerBin, "open", a, "O_WRONLY|O_APPEND"} },
		syscallPathname: same, syscall: "openat", flags: fileFlags(unix.O_WRONLY | unix.O_APPEND | unix.O_CLOEXEC),
	},
	{
		name:            "symlink to it",
		argv:            func(a, x string) []string { return []string{triggerBin, "symlink", a, filepath.Join(x, "innocent")} },
		syscallPathname: func(_, x string) string { return filepath.Join(x, "innocent") },
		syscall:         "openat", flags: fileFlags(unix.O_WRONLY | unix.O_CLOEXEC),
	},
	{
		name:            "/proc/self/fd reopen",
		argv:            func(a, _ string) []string { return []string{triggerBin, "procfd", a} },
		syscallPathname: func(_, _ string) string { return "/proc/self/fd/" }, // prefix: the fd number varies
		syscall:         "openat", flags: fileFlags(unix.O_WRONLY | unix.O_CLOEXEC),
	},
	{
		name:            "openat2",
		argv:            func(a, _ string) []string { return []string{triggerBin, "openat2", a} },
		syscallPathname: same, syscall: "openat2", flags: fileFlags(unix.O_WRONLY),
	},
	{
		name:            "open_by_handle_at",
		argv:            func(a, _ string) []string { return []string{triggerBin, "handle", a} },
		syscallPathname: none, syscall: "open_by_handle_at", flags: fileFlags(unix.O_WRONLY),
	},
	{
		// The open runs in an io_uring worker thread of the process: same host pid, its own comm.
		name:            "io_uring openat",
		argv:            func(a, _ string) []string { return []string{triggerBin, "iouring", a} },
		syscallPathname: none, syscall: "io_uring_enter", flags: ioUringFlags(unix.O_WRONLY), ioUring: true,
	},
	{
		name:            "io_uring openat into a fixed file slot",
		argv:            func(a, _ string) []string { return []string{triggerBin, "iouring-fixed", a} },
		syscallPathname: none, syscall: "io_uring_enter", flags: ioUringFlags(unix.O_WRONLY), ioUring: true,
	},
	{
		// Completions carry the user_data the submitter chose: the no-ops around the open carry the open's.
		name:            "io_uring openat among no-ops with its user_data",
		argv:            func(a, _ string) []string { return []string{triggerBin, "iouring-decoys", a} },
		syscallPathname: none, syscall: "io_uring_enter", flags: ioUringFlags(unix.O_WRONLY), ioUring: true,
	},
	{
		// kernfs refuses the cached lookup of its names that an inline open needs, so io_uring punts opens of
		// cgroup files to a worker; through a bind mount of the file itself (named release_agent, which TRC-1010
		// asks of a path) no kernfs name is looked up, and the open may complete inline, in the submitter.
		name: "io_uring openat of a bind mount of the file",
		argv: func(a, x string) []string {
			return []string{"sh", "-c", fmt.Sprintf("touch %[1]s/release_agent && mount --bind %[2]s %[1]s/release_agent && exec %[3]s iouring %[1]s/release_agent", x, a, triggerBin)}
		},
		pathname:        func(_, x string) string { return x + "/release_agent" },
		syscallPathname: none, syscall: "io_uring_enter", flags: ioUringFlags(unix.O_WRONLY), ioUring: true,
		inlineNonblock: true,
	},
	{
		name:            "io_uring openat in an io-wq worker (IOSQE_ASYNC)",
		argv:            func(a, _ string) []string { return []string{triggerBin, "iouring-async", a} },
		syscallPathname: none, syscall: "io_uring_enter", flags: ioUringFlags(unix.O_WRONLY), ioUring: true, inWorker: true,
	},
	{
		name: "bind mount of the hierarchy",
		argv: func(a, x string) []string {
			return []string{"sh", "-c", fmt.Sprintf("mount --bind %s %s && %s echo /payload > %s/release_agent",
				filepath.Dir(a), x, shellAct, x)}
		},
		pathname:        func(_, x string) string { return x + "/release_agent" },
		syscallPathname: func(_, x string) string { return x + "/release_agent" },
		syscall:         "openat", flags: fileFlags(unix.O_WRONLY | unix.O_CREAT | unix.O_TRUNC),
	},
}

func init() {
	if runtime.GOARCH == "amd64" { // the others have only openat
		mustAlert = append(mustAlert,
			openCase{
				name:            "open(2) O_RDWR",
				argv:            func(a, _ string) []string { return []string{triggerBin, "open2", a, "O_RDWR"} },
				syscallPathname: same, syscall: "open", flags: fileFlags(unix.O_RDWR),
			},
			openCase{
				name:            "creat(2)",
				argv:            func(a, _ string) []string { return []string{triggerBin, "creat", a} },
				syscallPathname: same, syscall: "creat", flags: fileFlags(unix.O_WRONLY | unix.O_CREAT | unix.O_TRUNC),
			})
	}
}

// TestPrivilegedTRC1010MustAlert runs every way of opening the real release_agent for writing (mustAlert) from a
// new mount+pid namespace against the sensor on its defaults, and checks the finding's exact fields.
func TestPrivilegedTRC1010MustAlert(t *testing.T) {
	s := startSensor(t)
	for _, tc := range mustAlert {
		t.Run(tc.name, func(t *testing.T) {
			h := testutil.MountHierarchy(t)
			extra := t.TempDir()
			act := runAct(t, inNamespace(tc.argv(h.Agent(), extra)...)...)
			f := s.waitFor(t, tc.name, trc1010By(act.HostPID))

			wantPath := h.Agent()
			if tc.pathname != nil {
				wantPath = tc.pathname(h.Agent(), extra)
			}
			ev := f.Event
			flags, _ := f.arg("flags").(int32)
			if tc.inlineNonblock {
				flags &^= unix.O_NONBLOCK
			}
			checks := []struct {
				what      string
				got, want any
			}{
				{"rule", f.SigMetadata.ID, "TRC-1010"},
				{"event", ev.EventName, event.SecurityFileOpen},
				{"origin", ev.Origin, event.OriginNamespaced},
				{"processId", ev.ProcessID, act.NSPID},
				{"pathname", f.arg("pathname"), wantPath},
				{"flags", flags, int32(tc.flags)},
				{"syscall", ev.Syscall, tc.syscall},
				{"Data is null", f.Data == nil, true},
				{"truncated", len(ev.Truncated), 0},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s = %v (%T), want %v (%T)", c.what, c.got, c.got, c.want, c.want)
				}
			}
			inWorker := strings.HasPrefix(ev.ProcessName, "iou-wrk-")
			if tc.ioUring {
				// Inline or in a worker: both ways of completing a request are followed (the kernels differ).
				t.Logf("opened by %s (in an io-wq worker: %v)", ev.ProcessName, inWorker)
			}
			if (ev.ProcessName != act.Comm && !(tc.ioUring && inWorker)) || (tc.inWorker && !inWorker) {
				t.Errorf("processName = %q, want %q (or an io-wq worker's iou-wrk-N where allowed: %v; required: %v)",
					ev.ProcessName, act.Comm, tc.ioUring, tc.inWorker)
			}
			sp, _ := f.arg("syscall_pathname").(string)
			if want := tc.syscallPathname(h.Agent(), extra); !strings.HasPrefix(sp, want) || (want == "") != (sp == "") {
				t.Errorf("syscall_pathname = %q, want %q", sp, want)
			}
			if self, _ := os.Readlink("/proc/self/ns/mnt"); ev.MountNS == 0 || fmt.Sprintf("mnt:[%d]", ev.MountNS) == self {
				t.Errorf("mountNamespace = %d: want the new namespace, not ours (%s)", ev.MountNS, self)
			}
			if ev.Timestamp == 0 || ev.HostName == "" || ev.ArgsNum != 6 {
				t.Errorf("timestamp %d, hostName %q, argsNum %d: want all set", ev.Timestamp, ev.HostName, ev.ArgsNum)
			}
		})
	}
}

// TestPrivilegedIoUringFlood: io_uring requests held in flight by the thousand (more than the tracepoint backend's
// table of them holds on kernels before 5.17) do not hide an io_uring open of release_agent, and where they
// overflow that table the loss is counted and logged.
func TestPrivilegedIoUringFlood(t *testing.T) {
	s := startSensor(t)
	h := testutil.MountHierarchy(t)
	act := runAct(t, inNamespace(triggerBin, "iouring-flood", h.Agent())...)
	f := s.waitFor(t, "io_uring openat during a flood of requests in flight", trc1010By(act.HostPID))
	if got := f.arg("pathname"); got != h.Agent() {
		t.Errorf("pathname = %v, want %s", got, h.Agent())
	}
	if code := s.stop(syscall.SIGINT); code != 0 {
		t.Fatalf("sensor exited with %d on SIGINT", code)
	}
	untracked := stoppedLine(t, s)["kernel_io_uring_untracked"]
	fromSubmission := strings.Contains(s.stderr.String(), "follow requests from their submission")
	t.Logf("requests followed from their submission: %v; untracked: %d", fromSubmission, untracked)
	if fromSubmission && untracked == 0 {
		t.Errorf("the flood overflowed the table of io_uring requests in flight, and the sensor counted none untracked")
	}
	if !fromSubmission && untracked != 0 {
		t.Errorf("%d io_uring requests counted untracked by programs that follow none", untracked)
	}
}
