package sensor

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"

	"escapewatch/internal/enrich"
	"escapewatch/internal/event"
)

// The kernel side counts, per origin (a cgroup), the records it did not send: over the origin's budget, or
// with the ring full (bpf/emit.h); over the budget, those that repeat the origin's last record sent are
// counted apart, as repeats. Run turns each origin's new losses and repeats into a records_lost event, with the
// current state of the hierarchy the last lost record was about, so a lost record is never silent and a storm
// cannot hide what it did to a release_agent.

// lossInterval is how often Run reports new losses.
const lossInterval = time.Second

// maxOrigins bounds the memory of origins: the kernel's map holds as many (EW_ORIGINS_MAX).
const maxOrigins = 1024

// originSeen is what user space last learnt about an origin from one of its records: a new cgroup's first
// records always get through, so an origin that loses records has usually been seen.
type originSeen struct {
	cgroupPath string
	task       Task
}

// lossCounts are an origin's records not sent, as its kernel entry counts them.
type lossCounts struct{ lost, repeated uint64 }

// losses is Run's state for reporting losses; only Run's goroutine uses it.
type losses struct {
	reported map[uint64]lossCounts // by origin id: what was already reported
	seen     map[uint64]originSeen
}

func newLosses() *losses {
	return &losses{reported: map[uint64]lossCounts{}, seen: map[uint64]originSeen{}}
}

// remember keeps the origin of a delivered record.
func (l *losses) remember(r *Record) {
	if _, ok := l.seen[r.Task.OriginID]; !ok && len(l.seen) >= maxOrigins {
		clear(l.seen)
	}
	l.seen[r.Task.OriginID] = originSeen{cgroupPath: r.CgroupPath, task: r.Task}
}

// reportLosses emits a records_lost event for every origin that lost or repeated records since the last report.
func (s *Sensor) reportLosses(l *losses, emit func(*event.Event)) error {
	var (
		key    uint64
		origin tracepointEwOrigin
		now    = map[uint64]bool{}
	)
	it := s.maps.origins.Iterate()
	for it.Next(&key, &origin) {
		now[key] = true
		total := lossCounts{lost: origin.LostRate + origin.LostRing, repeated: origin.Repeated}
		before := l.reported[key]
		if total.lost <= before.lost && total.repeated <= before.repeated {
			continue
		}
		ev := s.lossEvent(l, key, &origin, lossCounts{lost: total.lost - before.lost, repeated: total.repeated - before.repeated})
		l.reported[key] = total
		emit(&ev)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read the origins' losses: %w", err)
	}
	for key := range l.reported {
		if !now[key] {
			delete(l.reported, key) // evicted from the kernel's LRU map: its budget starts over
		}
	}
	return nil
}

// lossEvent describes an origin's new losses and repeats; it is attributed to the origin's last known process.
func (s *Sensor) lossEvent(l *losses, key uint64, o *tracepointEwOrigin, n lossCounts) event.Event {
	seen := l.seen[key]
	t := &seen.task
	origin, ctr := s.conv.classifier.Classify(enrich.Namespaces{Mnt: t.MntNS, PID: t.PidNS}, seen.cgroupPath)
	if seen.cgroupPath == "" {
		origin = "" // never seen: no process to attribute it to
	}
	// Per-kind counts are not kept: each loss since the last report is in lost, by reason where it is exact.
	overBudget, ringFull := o.LostRate, o.LostRing
	ev := event.Event{
		Timestamp:           int(int64(o.LastLostNs) + s.conv.bootToEpoch),
		ProcessID:           int(t.PID),
		ThreadID:            int(t.TID),
		HostProcessID:       int(t.HostPID),
		HostThreadID:        int(t.HostTID),
		HostParentProcessID: int(t.HostPPID),
		MountNS:             int(t.MntNS),
		PIDNS:               int(t.PidNS),
		ProcessName:         t.Comm,
		HostName:            t.Hostname,
		CgroupID:            uint(t.CgroupID),
		ContainerID:         ctr.ID,
		Container:           event.Container{ID: ctr.ID, Runtime: ctr.Runtime},
		Kubernetes:          event.Kubernetes{PodUID: ctr.PodUID},
		StackAddresses:      []uint64{},
		EventID:             event.RecordsLostID,
		EventName:           event.RecordsLost,
		Origin:              origin,
		Args: []event.Argument{
			arg("lost", "unsigned long", n.lost),
			arg("repeated", "unsigned long", n.repeated),
			arg("lost_over_budget_total", "unsigned long", overBudget),
			arg("lost_ring_full_total", "unsigned long", ringFull),
			arg("last_lost", "const char*", kindNames[kernelEwKind(o.LastLostKind)]),
			arg("cgroup", "const char*", seen.cgroupPath),
			arg("cgroup_origin_id", "unsigned long", key),
		},
	}
	if o.LastLostHierarchy != 0 {
		ev.Args = append(ev.Args, s.hierarchyState(o.LastLostHierarchy)...)
	}
	ev.ArgsNum = len(ev.Args)
	return ev
}

// kindNames are the event names of the record kinds.
var kindNames = map[kernelEwKind]string{
	kernelEwKindEW_KIND_FILE_OPEN:    event.SecurityFileOpen,
	kernelEwKindEW_KIND_INODE_RENAME: event.SecurityInodeRename,
	kernelEwKindEW_KIND_AGENT_WRITE:  event.ReleaseAgentChanged,
	kernelEwKindEW_KIND_NOTIFY_WRITE: event.NotifyOnReleaseChanged,
	kernelEwKindEW_KIND_HELPER_EXEC:  event.UsermodeHelperExec,
	kernelEwKindEW_KIND_MOUNT_OPTION: event.ReleaseAgentMountOption,
}

// hierarchyState reads, from the kernel's maps, hierarchy id's name, its release_agent now and who set it.
func (s *Sensor) hierarchyState(id uint32) []event.Argument {
	args := []event.Argument{arg("hierarchy", "const char*", hierarchyName(id))}
	var value tracepointEwAgentValue
	if err := s.maps.agentValues.Lookup(id, &value); err == nil {
		args = append(args, arg("release_agent", "const char*", cString(value.V[:])))
	}
	var setter tracepointEwAgentSetter
	if err := s.maps.agentSetters.Lookup(id, &setter); err == nil {
		args = append(args,
			arg("set_how", "const char*", setHowNames[kernelEwSetHow(setter.How)]),
			arg("set_trust", "const char*", trustNames[kernelEwTrust(setter.Trust)]),
			arg("set_by_pid", "int", int32(setter.HostPid)),
			arg("set_by_comm", "const char*", cString(setter.Comm[:])))
	} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
		s.log.Warn("read a hierarchy's setter", "hierarchy_id", id, "err", err)
	}
	return args
}

// hierarchyName names hierarchy id as the other events do: its name (a named hierarchy's "name=" option), else
// its controllers as /proc/self/cgroup lists them, else its ID.
func hierarchyName(id uint32) string {
	ids, err := readHierarchyIDs(filepath.Join("/proc", "self", "cgroup"))
	var controllers []string
	if err == nil {
		for token, n := range ids {
			if n != id {
				continue
			}
			if name, ok := strings.CutPrefix(token, "name="); ok {
				return name
			}
			controllers = append(controllers, token)
		}
	}
	if len(controllers) > 0 {
		slices.Sort(controllers)
		return strings.Join(controllers, ",")
	}
	return "hierarchy " + strconv.FormatUint(uint64(id), 10)
}
