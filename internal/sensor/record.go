package sensor

import (
	"bytes"
	"fmt"
	"unsafe"
)

// Record is one kernel record with its C strings turned into Go strings.
type Record struct {
	Kind      kernelEwKind
	Source    kernelEwSource
	Ret       int64
	SyscallNr uint32
	Facts     kernelEwFact
	Task      Task
	Inode     uint64
	CtimeNs   uint64
	Dev       uint32
	FileFlags uint32
	Action    uint32 // enum ew_action
	// CgroupPath is the task's cgroup (v2, or the first v1 controller below the root).
	CgroupPath string
	// Path is, for opens, the kernel-resolved path; for renames, the directory a relative new name starts from.
	Path string
	// ArgPath is the path string the process passed (opens), or the new name as passed (renames).
	ArgPath string
	// ArgPath2 is the old name as passed (renames).
	ArgPath2 string
	// BasePath is the directory a relative old name starts from (renames).
	BasePath string
	// Setter is, for a helper exec that is a hierarchy's current release_agent, who set that value.
	Setter Setter
}

// Setter is the kernel's record of who set a hierarchy's release_agent.
type Setter struct {
	ValueHash   uint64
	BootNs      uint64
	CgroupID    uint64
	How         kernelEwSetHow
	Trust       kernelEwTrust
	HostPID     uint32
	MntNS       uint32
	PidNS       uint32
	HierarchyID uint32
	Comm        string
}

// Task is the process context captured in the kernel at the event.
type Task struct {
	BootNs, StartBootNs uint64
	CgroupID            uint64
	OriginID            uint64 // the kernfs id of the cgroup CgroupPath names: the kernel's unit of fairness
	HostPID, HostTID    uint32
	HostPPID            uint32
	PID, TID, PPID      uint32
	UID                 uint32
	MntNS, PidNS        uint32
	CPU                 uint32
	Comm, Hostname      string
}

// Has reports whether every bit of f is set.
func (r *Record) Has(f kernelEwFact) bool { return r.Facts&f == f }

// recordHeadSize is the fixed part of a record as the kernel sends it (struct ew_record_head).
const recordHeadSize = int(unsafe.Sizeof(kernelEwRecordHead{}))

// recordStrings is how many NUL-terminated strings follow the head, in the order of struct ew_record.
const recordStrings = 5

// decodeRecord turns the raw bytes of one ring-buffer sample into a Record. The sample is the C struct
// ew_record_head exactly (little-endian, same layout: bpf2go generated the Go type from its BTF), then the
// record's strings, each ending with its NUL (bpf/maps.h, ew_emit).
func decodeRecord(raw []byte) (Record, error) {
	if len(raw) < recordHeadSize+recordStrings {
		return Record{}, fmt.Errorf("short record: %d bytes, want at least %d", len(raw), recordHeadSize+recordStrings)
	}
	c := (*kernelEwRecordHead)(unsafe.Pointer(&raw[0]))
	switch kernelEwKind(c.Kind) {
	case kernelEwKindEW_KIND_FILE_OPEN, kernelEwKindEW_KIND_INODE_RENAME, kernelEwKindEW_KIND_AGENT_WRITE,
		kernelEwKindEW_KIND_NOTIFY_WRITE, kernelEwKindEW_KIND_HELPER_EXEC, kernelEwKindEW_KIND_MOUNT_OPTION:
	default:
		return Record{}, fmt.Errorf("unknown record kind %d", c.Kind)
	}
	var strs [recordStrings]string
	rest := raw[recordHeadSize:]
	for i := range strs {
		end := bytes.IndexByte(rest, 0)
		if end < 0 {
			return Record{}, fmt.Errorf("record kind %d: string %d of %d has no end", c.Kind, i+1, recordStrings)
		}
		strs[i], rest = string(rest[:end]), rest[end+1:]
	}
	t := &c.Task
	return Record{
		Kind:      kernelEwKind(c.Kind),
		Source:    kernelEwSource(c.Source),
		Ret:       c.Ret,
		SyscallNr: c.SyscallNr,
		Facts:     kernelEwFact(c.Facts),
		Task: Task{
			BootNs: t.BootNs, StartBootNs: t.StartBootNs, CgroupID: t.CgroupId, OriginID: t.OriginId,
			HostPID: t.HostPid, HostTID: t.HostTid, HostPPID: t.HostPpid,
			PID: t.Pid, TID: t.Tid, PPID: t.Ppid, UID: t.Uid,
			MntNS: t.MntNs, PidNS: t.PidNs, CPU: t.Cpu,
			Comm: cString(t.Comm[:]), Hostname: cString(t.Hostname[:]),
		},
		Inode:      c.Inode,
		CtimeNs:    c.CtimeNs,
		Dev:        c.Dev,
		FileFlags:  c.FileFlags,
		Action:     c.Action,
		CgroupPath: strs[0],
		Path:       strs[1],
		ArgPath:    strs[2],
		ArgPath2:   strs[3],
		BasePath:   strs[4],
		Setter: Setter{
			ValueHash: c.Setter.ValueHash, BootNs: c.Setter.BootNs, CgroupID: c.Setter.CgroupId,
			How: kernelEwSetHow(c.Setter.How), Trust: kernelEwTrust(c.Setter.Trust),
			HostPID: c.Setter.HostPid, MntNS: c.Setter.MntNs, PidNS: c.Setter.PidNs,
			HierarchyID: c.Setter.HierarchyId, Comm: cString(c.Setter.Comm[:]),
		},
	}, nil
}

// cString returns the NUL-terminated string at the start of a C char array.
func cString(a []int8) string {
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(a))), len(a))
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
