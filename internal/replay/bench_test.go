package replay

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"escapewatch/internal/event"
	"escapewatch/internal/rule"
)

var benchMB = flag.Int("benchmb", 200, "megabytes of Tracee output BenchmarkReplay replays")

// BenchmarkReplay replays Tracee output (see traceeStream) three ways over the same bytes: "decode-all" decodes
// every line as replays did before scanEvent, "json-valid" only runs encoding/json.Valid on each line (the
// floor of anything that checks lines with the standard library), and "replay" is Run. Each reports MB/s of
// wall-clock time and MB per CPU-second of the whole process (garbage collection included); "replay" also
// reports its speed as a multiple of the other two's, measured in the same run.
func BenchmarkReplay(b *testing.B) {
	stream := traceeStream(b, *benchMB<<20)
	var decodeAll, valid time.Duration // per replay of the stream
	b.Run("decode-all", func(b *testing.B) {
		decodeAll = benchRun(b, stream, func() error { return replayStream(b, stream, config{maxLine: MaxLineBytes, decodeAll: true}) })
	})
	b.Run("json-valid", func(b *testing.B) {
		valid = benchRun(b, stream, func() error {
			for line := range bytes.Lines(stream) {
				if !json.Valid(line) {
					return fmt.Errorf("invalid line %q", line)
				}
			}
			return nil
		})
	})
	b.Run("replay", func(b *testing.B) {
		fast := benchRun(b, stream, func() error { return replayStream(b, stream, config{maxLine: MaxLineBytes}) })
		if decodeAll > 0 && valid > 0 {
			b.ReportMetric(float64(decodeAll)/float64(fast), "x-decode-all")
			b.ReportMetric(float64(valid)/float64(fast), "x-json-valid")
		}
	})
}

// benchRun times f, one pass over stream, and returns the wall-clock time of one pass.
func benchRun(b *testing.B, stream []byte, f func() error) time.Duration {
	b.SetBytes(int64(len(stream)))
	cpu0 := cpuTime(b)
	for b.Loop() {
		if err := f(); err != nil {
			b.Fatal(err)
		}
	}
	cpu := cpuTime(b) - cpu0
	b.ReportMetric(float64(len(stream))*float64(b.N)/1e6/cpu.Seconds(), "MB/cpu-s")
	return b.Elapsed() / time.Duration(b.N)
}

// cpuTime is the CPU time the process has used, all its threads included.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// replayStream replays stream and checks that it held what traceeStream put in it.
func replayStream(b *testing.B, stream []byte, cfg config) error {
	eng, err := rule.NewEngine(rule.Default(), rule.ReplayScope)
	if err != nil {
		return err
	}
	var errs bytes.Buffer
	st, err := run(b.Context(), bytes.NewReader(stream), io.Discard, &errs, eng, cfg)
	if err != nil {
		return err
	}
	if st.Failed != 0 || st.Findings != st.Lines/findingEvery || st.Events != st.Lines {
		return fmt.Errorf("replay: %+v; errors:\n%s", st, errs.Bytes())
	}
	return nil
}

const (
	findingEvery   = 1000 // one line in this many is a release_agent opened for writing in a container
	otherOpenEvery = 200  // one line in this many is another security_file_open: a rule reads it, none fires
)

// traceeStream returns about size bytes of Tracee v0.24 JSON lines, the same for a given size: a mix of the
// events a default Tracee policy writes, from processes on a host and in containers (some in Kubernetes pods),
// of which one in findingEvery makes TRC-1010 fire and one in otherOpenEvery is read by it without a finding.
func traceeStream(tb testing.TB, size int) []byte {
	tb.Helper()
	rng := rand.New(rand.NewPCG(15, 1010))
	procs := make([]process, 64)
	for i := range procs {
		procs[i] = newProcess(rng, i)
	}
	var buf bytes.Buffer
	ts := 1750942312094527411
	for n := 1; buf.Len() < size; n++ {
		ts += rng.IntN(200_000)
		p := &procs[rng.IntN(len(procs))]
		var ev event.Event
		switch {
		case n%findingEvery == 0:
			p = &procs[0] // in a container
			ev = p.event(ts, event.SecurityFileOpenID, event.SecurityFileOpen, "openat", 0,
				arg("pathname", "const char*", "/tmp/cgrp/release_agent"), arg("flags", "int", 0o1101),
				arg("dev", "dev_t", 49), arg("inode", "unsigned long", 4),
				arg("ctime", "unsigned long", 1750942298712004513), arg("syscall_pathname", "const char*", "/tmp/cgrp/release_agent"))
		case n%otherOpenEvery == 0:
			ev = p.event(ts, event.SecurityFileOpenID, event.SecurityFileOpen, "openat", 0,
				arg("pathname", "const char*", pick(rng, paths)), arg("flags", "int", 0o2000000),
				arg("dev", "dev_t", 66306), arg("inode", "unsigned long", rng.IntN(1<<22)),
				arg("ctime", "unsigned long", 1749805021512283331+rng.IntN(1e9)), arg("syscall_pathname", "const char*", pick(rng, paths)))
		default:
			ev = p.routine(rng, ts)
		}
		line, err := json.Marshal(ev)
		if err != nil {
			tb.Fatal(err)
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

var (
	paths = []string{"/etc/ld.so.cache", "/lib/x86_64-linux-gnu/libc.so.6", "/etc/passwd", "/etc/nsswitch.conf",
		"/proc/self/status", "/sys/fs/cgroup/cpu.max", "/usr/lib/locale/locale-archive", "/var/log/app/access.log",
		"/tmp/build-3f2a/out.o", "/dev/null", "/usr/share/zoneinfo/UTC", "/run/secrets/kubernetes.io/serviceaccount/token"}
	programs = []string{"/usr/bin/bash", "/usr/bin/dash", "/usr/bin/python3.11", "/usr/sbin/nginx", "/usr/bin/containerd-shim-runc-v2",
		"/usr/lib/systemd/systemd-journald", "/usr/local/bin/node", "/usr/bin/curl", "/usr/bin/cat", "/usr/bin/grep"}
	images = []string{"docker.io/library/nginx:1.27", "docker.io/library/python:3.12-slim", "ghcr.io/acme/api:v2.14.3", "docker.io/library/ubuntu:22.04"}
)

func pick(rng *rand.Rand, from []string) string { return from[rng.IntN(len(from))] }

func arg(name, typ string, value any) event.Argument {
	return event.Argument{ArgMeta: event.ArgMeta{Name: name, Type: typ}, Value: value}
}

// process is what the events of one process share.
type process struct {
	ev event.Event // the context fields
}

func newProcess(rng *rand.Rand, i int) process {
	exe := pick(rng, programs)
	pid := 100 + rng.IntN(400000)
	ev := event.Event{
		ThreadStartTime: 1750932000000000000 + rng.IntN(1e13), ProcessorID: rng.IntN(16), ProcessID: pid,
		CgroupID: uint(rng.IntN(30000)), ThreadID: pid, ParentProcessID: 1 + rng.IntN(pid), HostProcessID: pid, HostThreadID: pid,
		HostParentProcessID: 1, UserID: []int{0, 0, 33, 1000}[rng.IntN(4)], MountNS: 4026531841, PIDNS: 4026531836,
		ProcessName: exe[len(exe)-min(len(exe), 15):], Executable: event.File{Path: exe}, HostName: "node-a",
		MatchedPolicies: []string{"default"}, ThreadEntityId: rng.Uint32(), ProcessEntityId: rng.Uint32(), ParentEntityId: rng.Uint32(),
	}
	if i%4 != 3 { // three processes in four are in containers, the first among them
		id := fmt.Sprintf("%016x%016x%016x%016x", rng.Uint64(), rng.Uint64(), rng.Uint64(), rng.Uint64())
		ev.ProcessID, ev.ThreadID, ev.ParentProcessID = 1+rng.IntN(200), 1+rng.IntN(200), 1
		ev.MountNS, ev.PIDNS = 4026532000+rng.IntN(5000), 4026532000+rng.IntN(5000)
		ev.HostName = id[:12]
		ev.ContainerID = id
		ev.Container = event.Container{ID: id, Name: fmt.Sprintf("app-%d", i), ImageName: pick(rng, images),
			ImageDigest: fmt.Sprintf("sha256:%016x%016x%016x%016x", rng.Uint64(), rng.Uint64(), rng.Uint64(), rng.Uint64())}
		ev.ContextFlags.ContainerStarted = true
		if i%2 == 0 {
			ev.Kubernetes = event.Kubernetes{PodName: fmt.Sprintf("web-7d9f8c6b5-%05d", i), PodNamespace: "shop",
				PodUID: fmt.Sprintf("%08x-8c2e-4d1a-9f7e-%012x", rng.Uint32(), rng.Uint64()>>16)}
		}
	}
	return process{ev: ev}
}

// event is one of p's events.
func (p *process) event(ts, id int, name, syscall string, ret int, args ...event.Argument) event.Event {
	ev := p.ev
	ev.Timestamp, ev.EventID, ev.EventName, ev.Syscall, ev.ReturnValue = ts, id, name, syscall, ret
	ev.StackAddresses = []uint64{0}
	ev.ArgsNum, ev.Args = len(args), args
	return ev
}

// routine is one of the events no rule reads, about as often as a default Tracee policy writes each.
func (p *process) routine(rng *rand.Rand, ts int) event.Event {
	path := pick(rng, paths)
	switch r := rng.IntN(100); {
	case r < 30:
		return p.event(ts, 257, "openat", "openat", 3+rng.IntN(60), arg("dirfd", "int", -100),
			arg("pathname", "const char*", path), arg("flags", "int", 0o2000000), arg("mode", "mode_t", 0))
	case r < 45:
		return p.event(ts, 3, "close", "close", 0, arg("fd", "int", 3+rng.IntN(60)))
	case r < 60:
		return p.event(ts, 0, "read", "read", rng.IntN(4096), arg("fd", "int", 3+rng.IntN(60)),
			arg("buf", "void*", 140733193388032+rng.IntN(1<<20)), arg("count", "size_t", 4096))
	case r < 70:
		return p.event(ts, 9, "mmap", "mmap", 140395297000000+rng.IntN(1<<30), arg("addr", "void*", 0),
			arg("length", "size_t", 8192), arg("prot", "int", 3), arg("flags", "int", 34), arg("fd", "int", -1), arg("off", "off_t", 0))
	case r < 78:
		return p.event(ts, 41, "socket", "socket", 3+rng.IntN(60), arg("domain", "int", 2), arg("type", "int", 524289), arg("protocol", "int", 0))
	case r < 85:
		return p.event(ts, 42, "security_socket_connect", "connect", 0, arg("sockfd", "int", 3+rng.IntN(60)), arg("type", "int", 1),
			arg("remote_addr", "struct sockaddr*", map[string]string{"sa_family": "AF_INET", "sin_addr": "10.96.0.10", "sin_port": "53"}))
	case r < 90:
		exe := pick(rng, programs)
		ev := p.event(ts, 715, "sched_process_exec", "execve", 0,
			arg("cmdpath", "const char*", exe), arg("pathname", "const char*", exe), arg("dev", "dev_t", 2049),
			arg("inode", "unsigned long", rng.IntN(1<<22)), arg("ctime", "unsigned long", 1749805021512283331),
			arg("inode_mode", "umode_t", 33261), arg("interpreter_pathname", "const char*", ""), arg("interp_dev", "dev_t", 0),
			arg("interp_inode", "unsigned long", 0), arg("interp_ctime", "unsigned long", 0), arg("interpreter", "const char*", ""),
			arg("stdin_type", "string", "S_IFIFO"), arg("stdin_path", "char*", "pipe:[1829133]"), arg("invoked_from_kernel", "int", 0),
			arg("argv", "const char**", []string{exe, "-c", "grep -q ready /tmp/status && exit 0"}), arg("env", "const char**", nil))
		ev.StackAddresses = []uint64{140395297729336, 140395297614210, 18446744072435811649}
		return ev
	case r < 95:
		return p.event(ts, 714, "sched_process_fork", "clone", 0, arg("parent_tid", "int", p.ev.ThreadID),
			arg("parent_ns_tid", "int", p.ev.ThreadID), arg("parent_pid", "int", p.ev.ProcessID), arg("parent_ns_pid", "int", p.ev.ProcessID),
			arg("child_tid", "int", 400000+rng.IntN(10000)), arg("child_ns_tid", "int", 200+rng.IntN(100)),
			arg("child_pid", "int", 400000+rng.IntN(10000)), arg("child_ns_pid", "int", 200+rng.IntN(100)),
			arg("start_time", "unsigned long", ts-rng.IntN(1000)))
	default:
		return p.event(ts, 716, "sched_process_exit", "exit_group", 0, arg("exit_code", "long", 0), arg("process_group_exit", "bool", true))
	}
}
