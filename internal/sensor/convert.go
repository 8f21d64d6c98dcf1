package sensor

import (
	"fmt"
	"os"
	"path"
	"strconv"

	"golang.org/x/sys/unix"

	"escapewatch/internal/enrich"
	"escapewatch/internal/event"
)

var actionNames = map[kernelEwAction]string{
	kernelEwActionEW_ACTION_ALERT:  event.ActionAlert,
	kernelEwActionEW_ACTION_DENIED: event.ActionDenied,
	kernelEwActionEW_ACTION_KILLED: event.ActionKilled,
}

// converter turns kernel records into Tracee-shaped events.
type converter struct {
	classifier *enrich.Classifier
	// bootToEpoch is added to boot-clock nanoseconds to give wall-clock nanoseconds, as Tracee reports.
	bootToEpoch int64
	procRoot    string
	// executables caches each process's executable, read once from /proc: a process is its pid and start time.
	executables map[processKey]string
}

type processKey struct {
	pid   uint32
	start uint64
}

// maxCachedProcesses bounds the executable cache; when full it starts over.
const maxCachedProcesses = 4096

func newConverter(classifier *enrich.Classifier) (*converter, error) {
	var boot unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot); err != nil {
		return nil, fmt.Errorf("read the boot clock: %w", err)
	}
	var real unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &real); err != nil {
		return nil, fmt.Errorf("read the wall clock: %w", err)
	}
	return &converter{
		classifier: classifier, bootToEpoch: real.Nano() - boot.Nano(), procRoot: "/proc",
		executables: map[processKey]string{},
	}, nil
}

// event builds the Tracee event for a record. The record's kind was checked by decodeRecord.
func (c *converter) event(r *Record) event.Event {
	t := &r.Task
	origin, ctr := c.classifier.Classify(enrich.Namespaces{Mnt: t.MntNS, PID: t.PidNS}, r.CgroupPath)
	ev := event.Event{
		Timestamp:           int(int64(t.BootNs) + c.bootToEpoch),
		ThreadStartTime:     int(int64(t.StartBootNs) + c.bootToEpoch),
		ProcessorID:         int(t.CPU),
		ProcessID:           int(t.PID),
		CgroupID:            uint(t.CgroupID),
		ThreadID:            int(t.TID),
		ParentProcessID:     int(t.PPID),
		HostProcessID:       int(t.HostPID),
		HostThreadID:        int(t.HostTID),
		HostParentProcessID: int(t.HostPPID),
		UserID:              int(t.UID),
		MountNS:             int(t.MntNS),
		PIDNS:               int(t.PidNS),
		ProcessName:         t.Comm,
		Executable:          event.File{Path: c.executable(t)},
		HostName:            t.Hostname,
		ContainerID:         ctr.ID,
		Container:           event.Container{ID: ctr.ID, Runtime: ctr.Runtime},
		Kubernetes:          event.Kubernetes{PodUID: ctr.PodUID},
		Syscall:             c.syscallName(r),
		StackAddresses:      []uint64{},
		ContextFlags: event.ContextFlags{
			ContainerStarted: origin == event.OriginContainer,
			IsCompat:         r.Has(kernelEwFactEW_FACT_COMPAT_SYSCALL),
		},
		Origin:    origin,
		Action:    actionNames[kernelEwAction(r.Action)],
		Truncated: truncatedArgs(r),
	}
	switch r.Kind {
	case kernelEwKindEW_KIND_FILE_OPEN:
		ev.EventID, ev.EventName = event.SecurityFileOpenID, event.SecurityFileOpen
		// Like Tracee's, the value the security hook returned: 0, or -EPERM when escapewatch denied the open.
		if r.Ret < 0 {
			ev.ReturnValue = int(r.Ret)
		}
		ev.Args = []event.Argument{
			arg("pathname", "const char*", r.Path),
			arg("flags", "int", int32(r.FileFlags)),
			arg("dev", "dev_t", r.Dev),
			arg("inode", "unsigned long", r.Inode),
			arg("ctime", "unsigned long", r.CtimeNs),
			arg("syscall_pathname", "const char*", r.ArgPath),
		}
	case kernelEwKindEW_KIND_INODE_RENAME:
		ev.EventID, ev.EventName = event.SecurityInodeRenameID, event.SecurityInodeRename
		ev.ReturnValue = int(r.Ret)
		ev.Args = []event.Argument{
			arg("old_path", "const char*", joinDir(r.BasePath, r.ArgPath2)),
			arg("new_path", "const char*", joinDir(r.Path, r.ArgPath)),
		}
	case kernelEwKindEW_KIND_AGENT_WRITE:
		ev.EventID, ev.EventName = event.ReleaseAgentChangedID, event.ReleaseAgentChanged
		ev.ReturnValue = int(r.Ret) // bytes written, or the kernel's refusal (-errno)
		ev.Args = []event.Argument{
			arg("pathname", "const char*", r.Path),
			arg("hierarchy", "const char*", r.BasePath),
			arg("value", "const char*", r.ArgPath),
		}
		if r.Has(kernelEwFactEW_FACT_OLD_VALUE) {
			ev.Args = append(ev.Args, arg("old_value", "const char*", r.ArgPath2))
		}
	case kernelEwKindEW_KIND_NOTIFY_WRITE:
		ev.EventID, ev.EventName = event.NotifyOnReleaseChangedID, event.NotifyOnReleaseChanged
		ev.ReturnValue = int(r.Ret)
		ev.Args = []event.Argument{
			arg("pathname", "const char*", r.Path),
			arg("hierarchy", "const char*", r.BasePath),
			arg("enabled", "bool", r.Has(kernelEwFactEW_FACT_ENABLED)),
		}
	case kernelEwKindEW_KIND_MOUNT_OPTION:
		ev.EventID, ev.EventName = event.ReleaseAgentMountOptionID, event.ReleaseAgentMountOption
		ev.ReturnValue = int(r.Ret)
		ev.Args = []event.Argument{arg("value", "const char*", r.ArgPath)}
	case kernelEwKindEW_KIND_HELPER_EXEC:
		ev.EventID, ev.EventName = event.UsermodeHelperExecID, event.UsermodeHelperExec
		ev.Syscall = "execve"
		ev.Args = c.helperArgs(r)
	}
	ev.ArgsNum = len(ev.Args)
	return ev
}

var setHowNames = map[kernelEwSetHow]string{
	kernelEwSetHowEW_SET_UNKNOWN: event.SetUnknown,
	kernelEwSetHowEW_SET_SEEDED:  event.SetBeforeStart,
	kernelEwSetHowEW_SET_WRITE:   event.SetWrite,
	kernelEwSetHowEW_SET_MOUNT:   event.SetMount,
	kernelEwSetHowEW_SET_REMOUNT: event.SetRemount,
}

var trustNames = map[kernelEwTrust]string{
	kernelEwTrustEW_TRUST_UNKNOWN: event.TrustUnknown,
	kernelEwTrustEW_TRUST_HOST:    event.TrustHost,
	kernelEwTrustEW_TRUST_OUTSIDE: event.TrustOutside,
}

// helperArgs are a helper exec's arguments: the program, the kernel's verdict, and, when the program is a
// hierarchy's current release_agent, the hierarchy and who set the value.
func (c *converter) helperArgs(r *Record) []event.Argument {
	args := []event.Argument{
		arg("pathname", "const char*", r.BasePath),
		arg("escape", "bool", r.Has(kernelEwFactEW_FACT_AGENT_ESCAPE)),
		arg("release_agent_shaped", "bool", r.Has(kernelEwFactEW_FACT_AGENT_SHAPED)),
	}
	if !r.Has(kernelEwFactEW_FACT_AGENT_CURRENT) {
		return args
	}
	s := &r.Setter
	how := setHowNames[s.How]
	if r.Has(kernelEwFactEW_FACT_SETTER_STALE) {
		how = event.SetUnwatched // the recorded setter left another value: a path the sensor does not watch set this one
	}
	args = append(args, arg("hierarchy", "const char*", r.ArgPath), arg("set_how", "const char*", how))
	if how == event.SetUnwatched {
		return append(args, arg("set_trust", "const char*", event.TrustUnknown))
	}
	if s.How == kernelEwSetHowEW_SET_UNKNOWN || s.How == kernelEwSetHowEW_SET_SEEDED {
		return append(args, arg("set_trust", "const char*", trustNames[s.Trust]))
	}
	return append(args,
		arg("set_trust", "const char*", trustNames[s.Trust]),
		arg("set_at", "unsigned long", uint64(int64(s.BootNs)+c.bootToEpoch)),
		arg("set_by_pid", "int", int32(s.HostPID)),
		arg("set_by_comm", "const char*", s.Comm),
		arg("set_by_mnt_ns", "unsigned int", s.MntNS),
		arg("set_by_pid_ns", "unsigned int", s.PidNS),
		arg("set_by_cgroup_id", "unsigned long", s.CgroupID),
	)
}

// truncatedArgs names the event arguments whose value the kernel cut, in the order of the event's arguments:
// the paths it walks up from a file (the record's path and, for renames, base path) keep their lower part when
// the walk cannot reach the top.
func truncatedArgs(r *Record) []string {
	var cut []string
	switch r.Kind {
	case kernelEwKindEW_KIND_FILE_OPEN, kernelEwKindEW_KIND_AGENT_WRITE, kernelEwKindEW_KIND_NOTIFY_WRITE:
		if r.Has(kernelEwFactEW_FACT_PATH_TRUNCATED) {
			cut = append(cut, "pathname")
		}
	case kernelEwKindEW_KIND_INODE_RENAME:
		if r.Has(kernelEwFactEW_FACT_BASE_PATH_TRUNCATED) {
			cut = append(cut, "old_path")
		}
		if r.Has(kernelEwFactEW_FACT_PATH_TRUNCATED) {
			cut = append(cut, "new_path")
		}
	}
	return cut
}

func (c *converter) syscallName(r *Record) string {
	if r.Source == kernelEwSourceEW_SOURCE_IO_URING {
		return "io_uring_enter" // the request was submitted through io_uring, not an open syscall
	}
	names := syscallNames
	if r.Has(kernelEwFactEW_FACT_COMPAT_SYSCALL) {
		names = compatSyscallNames
	}
	if n, ok := names[r.SyscallNr]; ok {
		return n
	}
	return strconv.FormatUint(uint64(r.SyscallNr), 10)
}

// executable is best effort: the process has usually not exited within the milliseconds since the event. The
// pid's start time tells a reused pid apart, so a cached answer is never another process's.
func (c *converter) executable(t *Task) string {
	key := processKey{t.HostPID, t.StartBootNs}
	if exe, ok := c.executables[key]; ok {
		return exe
	}
	exe, _ := os.Readlink(c.procRoot + "/" + strconv.FormatUint(uint64(t.HostPID), 10) + "/exe")
	if len(c.executables) >= maxCachedProcesses {
		clear(c.executables)
	}
	c.executables[key] = exe
	return exe
}

func arg(name, typ string, v any) event.Argument {
	return event.Argument{ArgMeta: event.ArgMeta{Name: name, Type: typ}, Value: v}
}

// joinDir makes a path given relative to dir absolute; absolute paths are kept as the process passed them.
func joinDir(dir, name string) string {
	if name == "" || path.IsAbs(name) || dir == "" {
		return name
	}
	return path.Join(dir, name)
}
