// Package event is escapewatch's event model: Tracee v0.24's trace.Event,
// with the same Go field names and the same JSON encoding, plus escapewatch's
// extensions (Origin, Action, Truncated, Container.Runtime), omitted when
// empty. Events decoded from Tracee JSON lines
// re-encode to what Tracee emitted, so a finding can carry the very event
// that Tracee would have attached to it.
package event

// Tracee v0.24 names and IDs of the events TRC-1010 consumes. The IDs are
// Tracee's own numbering (pkg/events/core.go), which does not depend on the
// architecture, unlike syscall IDs.
const (
	SecurityFileOpen      = "security_file_open"
	SecurityFileOpenID    = 732
	SecurityInodeRename   = "security_inode_rename"
	SecurityInodeRenameID = 768
)

// escapewatch's own events, numbered above Tracee's range.
const (
	// ReleaseAgentChanged is a write to the real release_agent, through any file descriptor, with the value
	// the kernel stores afterwards: pathname, hierarchy, value, and old_value when it was seen before.
	ReleaseAgentChanged   = "release_agent_changed"
	ReleaseAgentChangedID = 10001
	// NotifyOnReleaseChanged is a write to a cgroup v1 notify_on_release: pathname (when the write came
	// through a file the sensor saw), hierarchy, enabled (the flag after the write).
	NotifyOnReleaseChanged   = "notify_on_release_changed"
	NotifyOnReleaseChangedID = 10002
	// UsermodeHelperExec is a program the kernel started as root on the host on its own behalf (a release
	// agent, modprobe, a core dump helper): pathname; escape, the kernel side's verdict (a release agent the
	// host did not set); release_agent_shaped (started as the kernel starts release agents); and when the
	// program is a hierarchy's current release_agent: hierarchy, set_how, set_trust and, when known, set_at,
	// set_by_pid, set_by_comm, set_by_mnt_ns, set_by_pid_ns, set_by_cgroup_id.
	UsermodeHelperExec   = "usermode_helper_exec"
	UsermodeHelperExecID = 10003
	// ReleaseAgentMountOption is release_agent given as a cgroup v1 mount option, by mount(2), fsconfig (even
	// for a hierarchy never attached) or a remount: value.
	ReleaseAgentMountOption   = "release_agent_mount_option"
	ReleaseAgentMountOptionID = 10004
	// RecordsLost is the kernel side's count of records from one origin (a cgroup) that never reached user
	// space since the last report: lost, lost_over_budget, lost_ring_full, last_lost (the kind of event the last
	// lost record was), cgroup; and when the last lost record was about a hierarchy: hierarchy, release_agent
	// (its value now) and who set it (set_how, set_trust, set_by_pid, set_by_comm), from the kernel's state.
	RecordsLost   = "records_lost"
	RecordsLostID = 10005
)

// How a release_agent got its value (the set_how argument).
const (
	SetWrite       = "write"        // a write to release_agent
	SetMount       = "mount"        // the hierarchy's creation (mount(2), fsconfig), with release_agent= if any
	SetRemount     = "remount"      // a remount, or fspick and fsconfig's reconfigure
	SetBeforeStart = "before-start" // the value was there when the sensor started; who set it is unknown
	SetUnwatched   = "unwatched"    // changed since its recorded setting, by a path the sensor does not watch
	SetUnknown     = "unknown"      // the sensor has no record of this hierarchy
)

// Whether a release_agent's setter may choose what the kernel runs as root (the set_trust argument).
const (
	TrustHost    = "host"    // a host process, a cgroup --enforce allows, or a value the configuration names
	TrustOutside = "outside" // a process in a container or namespace
	TrustUnknown = "unknown"
)

// Origin classes. Container, ContainerInit and Host are Tracee's
// (trace.EventOrigin); Namespaced is escapewatch's: a process in a mount or
// pid namespace other than the host's where no container was found.
const (
	OriginContainer     = "container"
	OriginContainerInit = "container-init"
	OriginNamespaced    = "namespaced"
	OriginHost          = "host"
)

// Event is Tracee's trace.Event (v0.24). Field order is Tracee's so that the
// encoded keys come out in Tracee's order.
type Event struct {
	Timestamp           int          `json:"timestamp"`
	ThreadStartTime     int          `json:"threadStartTime"`
	ProcessorID         int          `json:"processorId"`
	ProcessID           int          `json:"processId"`
	CgroupID            uint         `json:"cgroupId"`
	ThreadID            int          `json:"threadId"`
	ParentProcessID     int          `json:"parentProcessId"`
	HostProcessID       int          `json:"hostProcessId"`
	HostThreadID        int          `json:"hostThreadId"`
	HostParentProcessID int          `json:"hostParentProcessId"`
	UserID              int          `json:"userId"`
	MountNS             int          `json:"mountNamespace"`
	PIDNS               int          `json:"pidNamespace"`
	ProcessName         string       `json:"processName"`
	Executable          File         `json:"executable"`
	HostName            string       `json:"hostName"`
	ContainerID         string       `json:"containerId"`
	Container           Container    `json:"container,omitempty"`
	Kubernetes          Kubernetes   `json:"kubernetes,omitempty"`
	EventID             int          `json:"eventId,string"` // Tracee writes the ID as a JSON string
	EventName           string       `json:"eventName"`
	MatchedPolicies     []string     `json:"matchedPolicies,omitempty"`
	ArgsNum             int          `json:"argsNum"`
	ReturnValue         int          `json:"returnValue"`
	Syscall             string       `json:"syscall"`
	StackAddresses      []uint64     `json:"stackAddresses"`
	ContextFlags        ContextFlags `json:"contextFlags"`
	ThreadEntityId      uint32       `json:"threadEntityId"`
	ProcessEntityId     uint32       `json:"processEntityId"`
	ParentEntityId      uint32       `json:"parentEntityId"`
	Args                []Argument   `json:"args"`
	Metadata            *Metadata    `json:"metadata,omitempty"`

	// Origin is escapewatch's extension: the origin class the live sensor
	// determined. Tracee never writes it, so replayed events leave it empty
	// and OriginOf falls back to Tracee's own rule.
	Origin string `json:"origin,omitempty"`
	// Action is escapewatch's extension: what the live sensor did about the operation (ActionAlert,
	// ActionDenied, ActionKilled). Empty in replayed events.
	Action string `json:"action,omitempty"`
	// Truncated is escapewatch's extension: the names of the arguments whose value the kernel cut, in argument
	// order. A path longer than the kernel side's buffer, or deeper than its walk goes, is reported by its
	// lower part (the end, with the file's name), so it is not the whole path. Empty when nothing was cut.
	Truncated []string `json:"truncated,omitempty"`
}

// What the live sensor did about an operation.
const (
	ActionAlert  = "alert"  // reported only
	ActionDenied = "denied" // the kernel refused it (lsm or fentry backend, --enforce)
	ActionKilled = "killed" // the process was killed before it returned to user space (--enforce)
)

// File is Tracee's trace.File.
type File struct {
	Path string `json:"path"`
}

// Container is Tracee's trace.Container, plus the runtime (escapewatch's extension).
type Container struct {
	ID          string `json:"id,omitempty"`
	Name        string `json:"name,omitempty"`
	ImageName   string `json:"image,omitempty"`
	ImageDigest string `json:"imageDigest,omitempty"`
	Runtime     string `json:"runtime,omitempty"` // docker, containerd, crio, podman, lxc; empty when unknown
}

// Kubernetes is Tracee's trace.Kubernetes.
type Kubernetes struct {
	PodName      string `json:"podName,omitempty"`
	PodNamespace string `json:"podNamespace,omitempty"`
	PodUID       string `json:"podUID,omitempty"`
	PodSandbox   bool   `json:"podSandbox,omitempty"`
}

// ContextFlags is Tracee's trace.ContextFlags.
type ContextFlags struct {
	ContainerStarted bool `json:"containerStarted"`
	IsCompat         bool `json:"isCompat"`
}

// Metadata is Tracee's trace.Metadata; like Tracee it has no JSON tags, so
// its keys are the field names.
type Metadata struct {
	Version     string
	Description string
	Tags        []string
	Properties  map[string]any
}

// ArgMeta is Tracee's trace.ArgMeta.
type ArgMeta struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Argument is Tracee's trace.Argument: {"name","type","value"}.
type Argument struct {
	ArgMeta
	Value any `json:"value"`
}

// Arg returns the first argument called name, as Tracee's helpers do.
func (e *Event) Arg(name string) (Argument, bool) {
	for _, a := range e.Args {
		if a.Name == name {
			return a, true
		}
	}
	return Argument{}, false
}

// OriginOf returns the event's origin class: e.Origin when the live sensor
// set it, else Tracee's trace.Event.Origin(): "container" once the
// container's entry point has started (contextFlags.containerStarted),
// "container-init" for a container process before that, "host" otherwise.
// Tracee's selector Origin "container" matches only the first, so a replay
// scoped to "container" reproduces Tracee's findings exactly.
func OriginOf(e *Event) string {
	switch {
	case e.Origin != "":
		return e.Origin
	case e.ContextFlags.ContainerStarted:
		return OriginContainer
	case e.Container.ID != "":
		return OriginContainerInit
	default:
		return OriginHost
	}
}
