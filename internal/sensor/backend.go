package sensor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"escapewatch/internal/sensoropt"
)

// Backend names, best first: the order in which "auto" tries them (as sensoropt states them).
const (
	BackendAuto       = sensoropt.BackendAuto
	BackendLSM        = sensoropt.BackendLSM
	BackendFentry     = sensoropt.BackendFentry
	BackendKprobe     = sensoropt.BackendKprobe
	BackendTracepoint = sensoropt.BackendTracepoint
)

// backend is one family of kernel hooks with its own BPF object; the C logic behind them is shared.
type backend struct {
	name string
	// objects returns the backend's objects, not loaded yet.
	objects func() objects
	// legacy returns the same built for kernels that lack the newer helpers (EW_LEGACY in bpf/kernel.h).
	legacy func() objects
	needs  string // what the kernel must offer, and how to get it: the fix in the error when it is missing
	// refuses: under --enforce, its programs refuse an open (the others kill the opener).
	refuses bool
	// preflight checks a precondition that loading alone would not reveal (nil: none).
	preflight func() error
}

// objects is a backend's bpf2go-generated xxxObjects, whose fields are its programs, maps and variables by
// name: a program or map renamed in bpf/ is a compile error here, not a failure at load time.
type objects interface {
	io.Closer
	// spec returns the backend's embedded object (bpf2go's loadXxx).
	spec() (*ebpf.CollectionSpec, error)
	// config returns the load-time settings (bpf/config.h) in spec.
	config(spec *ebpf.CollectionSpec) (configSpecs, error)
	// shared returns the maps the sensor reads and writes, the same in every backend.
	shared() sharedMaps
	// hooks lists the programs (nil until loaded) and where they attach: the backend's own, then lifecycle's.
	hooks() []hook
}

// configSpecs are the settings of bpf/config.h. bpf2go generates an identical struct for each backend
// (xxxVariableSpecs); each converts to this one, so a backend whose settings differ does not compile.
type configSpecs tracepointVariableSpecs

// sharedMaps are the maps of bpf/ that user space reads or fills, in every backend's object.
type sharedMaps struct {
	events         *ebpf.Map // ring buffer of records
	helperEvents   *ebpf.Map // ring buffer of the kernel's helpers' execs, which no storm can fill
	counters       *ebpf.Map // per-CPU counters: emitted, dropped
	enforceAllowed *ebpf.Map // cgroups --enforce lets write
	agentValues    *ebpf.Map // the release_agent value of each hierarchy, to report the one a write replaced
	agentSetters   *ebpf.Map // who set each hierarchy's release_agent: the record helper execs are judged by
	hostAgents     *ebpf.Map // the whole values trusted setters left
	origins        *ebpf.Map // each origin's budget and losses
}

type hook struct {
	prog   *ebpf.Program
	point  string // where it attaches, for logs and errors
	attach func(*ebpf.Program) (link.Link, error)
	when   attachWhen
}

// only returns h attached under w alone.
func (h hook) only(w attachWhen) hook {
	h.when = w
	return h
}

// attachWhen says under which settings (--enforce, --any-fs) a hook attaches.
type attachWhen int

const (
	always       attachWhen = iota
	enforcing               // refusing hooks, and hooks on paths every read and write of the machine takes
	notEnforcing            // observe-only twins of the refusing hooks
	// The opens: security_file_open sees every open of the machine, cgroup_file_open only those of cgroup files,
	// at no cost to any other open. The first is taken only when needed: to refuse an open, or to see files named
	// release_agent on other file systems.
	everyOpenToRefuse // security_file_open for a refusing backend: under --enforce or with --any-fs
	everyOpenObserved // security_file_open observe-only: with --any-fs, not under --enforce (its refusing twin then)
	everyOpenAnyFS    // security_file_open for a backend that cannot refuse: with --any-fs
	cgroupOpens       // cgroup_file_open: when no security_file_open hook of the backend is attached
)

// holds says whether a hook attaches under these settings. refuses: the backend refuses opens under --enforce.
func (w attachWhen) holds(enforce, anyFS, refuses bool) bool {
	everyOpen := anyFS || (enforce && refuses)
	switch w {
	case enforcing:
		return enforce
	case notEnforcing:
		return !enforce
	case everyOpenToRefuse:
		return enforce || anyFS
	case everyOpenObserved:
		return anyFS && !enforce
	case everyOpenAnyFS:
		return anyFS
	case cgroupOpens:
		return !everyOpen
	}
	return true
}

// lifecyclePrograms are the programs of bpf/lifecycle.h, in every backend's object.
type lifecyclePrograms struct {
	schedProcessExec, cgroupSetupRoot, cgroupRemount, cgroupDestroyRoot *ebpf.Program
}

func (p lifecyclePrograms) hooks() []hook {
	return []hook{
		{prog: p.schedProcessExec, point: "tp_btf/sched_process_exec", attach: attachTracing},
		{prog: p.cgroupSetupRoot, point: "tp_btf/cgroup_setup_root", attach: attachTracing},
		{prog: p.cgroupRemount, point: "tp_btf/cgroup_remount", attach: attachTracing},
		{prog: p.cgroupDestroyRoot, point: "tp_btf/cgroup_destroy_root", attach: attachTracing},
	}
}

func attachTracing(p *ebpf.Program) (link.Link, error) {
	return link.AttachTracing(link.TracingOptions{Program: p})
}

func attachLSM(p *ebpf.Program) (link.Link, error) {
	return link.AttachLSM(link.LSMOptions{Program: p})
}

// kprobeHook is program prog on the entry of kernel function symbol, or on its return.
func kprobeHook(prog *ebpf.Program, symbol string, ret bool) hook {
	if ret {
		return hook{prog: prog, point: "kretprobe/" + symbol,
			attach: func(p *ebpf.Program) (link.Link, error) { return link.Kretprobe(symbol, p, nil) }}
	}
	return hook{prog: prog, point: "kprobe/" + symbol,
		attach: func(p *ebpf.Program) (link.Link, error) { return link.Kprobe(symbol, p, nil) }}
}

var backends = []backend{
	{
		name:      BackendLSM,
		objects:   func() objects { return new(lsmObjects) },
		refuses:   true,
		legacy:    func() objects { return new(lsmLegacyObjects) },
		needs:     "BPF LSM: CONFIG_BPF_LSM=y, \"bpf\" in the active LSMs (add lsm=...,bpf to the kernel command line) and BPF trampolines",
		preflight: bpfLSMActive,
	},
	{
		name:    BackendFentry,
		objects: func() objects { return new(fentryObjects) },
		refuses: true,
		legacy:  func() objects { return new(fentryLegacyObjects) },
		needs:   "BPF trampolines (fentry, and fmod_ret for --enforce): CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS on x86_64 or arm64, kernel 5.7 or later",
	},
	{
		name:    BackendKprobe,
		objects: func() objects { return new(kprobeObjects) },
		legacy:  func() objects { return new(kprobeLegacyObjects) },
		needs:   "kprobes: CONFIG_KPROBES=y and CONFIG_KPROBE_EVENTS=y",
	},
	{
		name:      BackendTracepoint,
		objects:   func() objects { return new(tracepointObjects) },
		legacy:    func() objects { return new(tracepointLegacyObjects) },
		needs:     "BTF raw tracepoints: CONFIG_DEBUG_INFO_BTF=y and an io_uring_complete tracepoint that passes the request",
		preflight: ioUringCompletePassesRequest,
	},
}

func (*lsmObjects) spec() (*ebpf.CollectionSpec, error) { return loadLsm() }

func (*lsmObjects) config(spec *ebpf.CollectionSpec) (configSpecs, error) {
	var v lsmVariableSpecs
	err := spec.Assign(&v)
	return configSpecs(v), err
}

func (o *lsmObjects) shared() sharedMaps {
	return sharedMaps{events: o.EwEvents, helperEvents: o.EwHelperEvents, counters: o.EwCounters, enforceAllowed: o.EwEnforceAllowed, agentValues: o.EwAgentValues,
		agentSetters: o.EwAgentSetters, hostAgents: o.EwHostAgents, origins: o.EwOrigins}
}

func (o *lsmObjects) hooks() []hook {
	return append([]hook{
		{prog: o.EwLsmFileOpen, point: "lsm/file_open", attach: attachLSM, when: everyOpenToRefuse},
		{prog: o.EwLsmCgroupFileOpen, point: "fentry/cgroup_file_open", attach: attachTracing, when: cgroupOpens},
		{prog: o.EwLsmInodeRename, point: "lsm/inode_rename", attach: attachLSM},
		{prog: o.EwLsmFilePermission, point: "lsm/file_permission", attach: attachLSM, when: enforcing},
		{prog: o.EwLsmFsContextParseParam, point: "lsm/fs_context_parse_param", attach: attachLSM, when: enforcing},
		{prog: o.EwLsmFexitAgentWrite, point: "fexit/cgroup_release_agent_write", attach: attachTracing},
		{prog: o.EwLsmFexitNotifyWrite, point: "fexit/cgroup_write_notify_on_release", attach: attachTracing},
		{prog: o.EwLsmFentryParseParam, point: "fentry/cgroup1_parse_param", attach: attachTracing},
		{prog: o.EwLsmFexitParseParam, point: "fexit/cgroup1_parse_param", attach: attachTracing},
	}, lifecyclePrograms{o.EwSchedProcessExec, o.EwCgroupSetupRoot, o.EwCgroupRemount, o.EwCgroupDestroyRoot}.hooks()...)
}

func (*fentryObjects) spec() (*ebpf.CollectionSpec, error) { return loadFentry() }

func (*fentryObjects) config(spec *ebpf.CollectionSpec) (configSpecs, error) {
	var v fentryVariableSpecs
	err := spec.Assign(&v)
	return configSpecs(v), err
}

func (o *fentryObjects) shared() sharedMaps {
	return sharedMaps{events: o.EwEvents, helperEvents: o.EwHelperEvents, counters: o.EwCounters, enforceAllowed: o.EwEnforceAllowed, agentValues: o.EwAgentValues,
		agentSetters: o.EwAgentSetters, hostAgents: o.EwHostAgents, origins: o.EwOrigins}
}

func (o *fentryObjects) hooks() []hook {
	return append([]hook{
		{prog: o.EwFentryFileOpen, point: "fentry/security_file_open", attach: attachTracing, when: everyOpenObserved},
		{prog: o.EwFentryCgroupFileOpen, point: "fentry/cgroup_file_open", attach: attachTracing, when: cgroupOpens},
		{prog: o.EwFentryInodeRename, point: "fentry/security_inode_rename", attach: attachTracing, when: notEnforcing},
		{prog: o.EwFmodretFileOpen, point: "fmod_ret/security_file_open", attach: attachTracing, when: enforcing},
		{prog: o.EwFmodretInodeRename, point: "fmod_ret/security_inode_rename", attach: attachTracing, when: enforcing},
		{prog: o.EwFmodretFilePermission, point: "fmod_ret/security_file_permission", attach: attachTracing, when: enforcing},
		{prog: o.EwFmodretFsContextParseParam, point: "fmod_ret/security_fs_context_parse_param", attach: attachTracing, when: enforcing},
		{prog: o.EwFexitAgentWrite, point: "fexit/cgroup_release_agent_write", attach: attachTracing},
		{prog: o.EwFexitNotifyWrite, point: "fexit/cgroup_write_notify_on_release", attach: attachTracing},
		{prog: o.EwFentryParseParam, point: "fentry/cgroup1_parse_param", attach: attachTracing},
		{prog: o.EwFexitParseParam, point: "fexit/cgroup1_parse_param", attach: attachTracing},
	}, lifecyclePrograms{o.EwSchedProcessExec, o.EwCgroupSetupRoot, o.EwCgroupRemount, o.EwCgroupDestroyRoot}.hooks()...)
}

func (*kprobeObjects) spec() (*ebpf.CollectionSpec, error) { return loadKprobe() }

func (*kprobeObjects) config(spec *ebpf.CollectionSpec) (configSpecs, error) {
	var v kprobeVariableSpecs
	err := spec.Assign(&v)
	return configSpecs(v), err
}

func (o *kprobeObjects) shared() sharedMaps {
	return sharedMaps{events: o.EwEvents, helperEvents: o.EwHelperEvents, counters: o.EwCounters, enforceAllowed: o.EwEnforceAllowed, agentValues: o.EwAgentValues,
		agentSetters: o.EwAgentSetters, hostAgents: o.EwHostAgents, origins: o.EwOrigins}
}

func (o *kprobeObjects) hooks() []hook {
	return append([]hook{
		kprobeHook(o.EwKprobeFileOpen, "security_file_open", false).only(everyOpenAnyFS),
		kprobeHook(o.EwKprobeCgroupFileOpen, "cgroup_file_open", false).only(cgroupOpens),
		kprobeHook(o.EwKprobeInodeRename, "security_inode_rename", false),
		kprobeHook(o.EwKprobeAgentWrite, "cgroup_release_agent_write", false),
		kprobeHook(o.EwKretprobeAgentWrite, "cgroup_release_agent_write", true),
		kprobeHook(o.EwKprobeNotifyWrite, "cgroup_write_notify_on_release", false),
		kprobeHook(o.EwKretprobeNotifyWrite, "cgroup_write_notify_on_release", true),
		kprobeHook(o.EwKprobeParseParam, "cgroup1_parse_param", false),
		kprobeHook(o.EwKretprobeParseParam, "cgroup1_parse_param", true),
	}, lifecyclePrograms{o.EwSchedProcessExec, o.EwCgroupSetupRoot, o.EwCgroupRemount, o.EwCgroupDestroyRoot}.hooks()...)
}

func (*tracepointObjects) spec() (*ebpf.CollectionSpec, error) { return loadTracepoint() }

func (*tracepointObjects) config(spec *ebpf.CollectionSpec) (configSpecs, error) {
	var v tracepointVariableSpecs
	err := spec.Assign(&v)
	return configSpecs(v), err
}

func (o *tracepointObjects) shared() sharedMaps {
	return sharedMaps{events: o.EwEvents, helperEvents: o.EwHelperEvents, counters: o.EwCounters, enforceAllowed: o.EwEnforceAllowed, agentValues: o.EwAgentValues,
		agentSetters: o.EwAgentSetters, hostAgents: o.EwHostAgents, origins: o.EwOrigins}
}

func (o *tracepointObjects) hooks() []hook {
	return append([]hook{
		{prog: o.EwSysExit, point: "tp_btf/sys_exit", attach: attachTracing},
		{prog: o.EwIoUringComplete, point: "tp_btf/io_uring_complete", attach: attachTracing},
	}, lifecyclePrograms{o.EwSchedProcessExec, o.EwCgroupSetupRoot, o.EwCgroupRemount, o.EwCgroupDestroyRoot}.hooks()...)
}

// The legacy objects have the same programs and maps as the regular ones (bpf2go generates identical structs
// under other names): they convert to them, and share their hooks and maps.

func (*lsmLegacyObjects) spec() (*ebpf.CollectionSpec, error) { return loadLsmLegacy() }

func (*lsmLegacyObjects) config(spec *ebpf.CollectionSpec) (configSpecs, error) {
	var v lsmLegacyVariableSpecs
	err := spec.Assign(&v)
	return configSpecs(v), err
}

func (o *lsmLegacyObjects) regular() *lsmObjects {
	return &lsmObjects{lsmPrograms: lsmPrograms(o.lsmLegacyPrograms), lsmMaps: lsmMaps(o.lsmLegacyMaps)}
}

func (o *lsmLegacyObjects) shared() sharedMaps { return o.regular().shared() }
func (o *lsmLegacyObjects) hooks() []hook      { return o.regular().hooks() }

func (*fentryLegacyObjects) spec() (*ebpf.CollectionSpec, error) { return loadFentryLegacy() }

func (*fentryLegacyObjects) config(spec *ebpf.CollectionSpec) (configSpecs, error) {
	var v fentryLegacyVariableSpecs
	err := spec.Assign(&v)
	return configSpecs(v), err
}

func (o *fentryLegacyObjects) regular() *fentryObjects {
	return &fentryObjects{fentryPrograms: fentryPrograms(o.fentryLegacyPrograms), fentryMaps: fentryMaps(o.fentryLegacyMaps)}
}

func (o *fentryLegacyObjects) shared() sharedMaps { return o.regular().shared() }
func (o *fentryLegacyObjects) hooks() []hook      { return o.regular().hooks() }

func (*kprobeLegacyObjects) spec() (*ebpf.CollectionSpec, error) { return loadKprobeLegacy() }

func (*kprobeLegacyObjects) config(spec *ebpf.CollectionSpec) (configSpecs, error) {
	var v kprobeLegacyVariableSpecs
	err := spec.Assign(&v)
	return configSpecs(v), err
}

func (o *kprobeLegacyObjects) regular() *kprobeObjects {
	return &kprobeObjects{kprobePrograms: kprobePrograms(o.kprobeLegacyPrograms), kprobeMaps: kprobeMaps(o.kprobeLegacyMaps)}
}

func (o *kprobeLegacyObjects) shared() sharedMaps { return o.regular().shared() }
func (o *kprobeLegacyObjects) hooks() []hook      { return o.regular().hooks() }

func (*tracepointLegacyObjects) spec() (*ebpf.CollectionSpec, error) { return loadTracepointLegacy() }

func (*tracepointLegacyObjects) config(spec *ebpf.CollectionSpec) (configSpecs, error) {
	var v tracepointLegacyVariableSpecs
	err := spec.Assign(&v)
	return configSpecs(v), err
}

func (o *tracepointLegacyObjects) regular() *tracepointObjects {
	return &tracepointObjects{tracepointPrograms: tracepointPrograms(o.tracepointLegacyPrograms),
		tracepointMaps: tracepointMaps(o.tracepointLegacyMaps)}
}

func (o *tracepointLegacyObjects) shared() sharedMaps { return o.regular().shared() }
func (o *tracepointLegacyObjects) hooks() []hook      { return o.regular().hooks() }

// BackendNames lists the accepted --backend values.
func BackendNames() []string {
	names := []string{BackendAuto}
	for _, b := range backends {
		names = append(names, b.name)
	}
	return names
}

func findBackend(name string) (*backend, error) {
	for i := range backends {
		if backends[i].name == name {
			return &backends[i], nil
		}
	}
	return nil, fmt.Errorf("unknown backend %q (want one of %s)", name, strings.Join(BackendNames(), ", "))
}

// lsmFile lists the active LSMs.
const lsmFile = "/sys/kernel/security/lsm"

// bpfLSMActive: BPF LSM programs load and attach on kernels where the bpf LSM is built but not active, and then
// never run. The list lives in securityfs, which systemd mounts at boot; a minimal host may lack it, so it is
// mounted where systemd would.
func bpfLSMActive() error {
	list, err := os.ReadFile(lsmFile)
	if errors.Is(err, os.ErrNotExist) {
		if merr := unix.Mount("securityfs", "/sys/kernel/security", "securityfs", 0, ""); merr != nil {
			return fmt.Errorf("cannot read the active LSMs: securityfs is not mounted and mounting it failed: %w", merr)
		}
		list, err = os.ReadFile(lsmFile)
	}
	if err != nil {
		return fmt.Errorf("cannot read the active LSMs: %w", err)
	}
	for _, lsm := range strings.Split(strings.TrimSpace(string(list)), ",") {
		if lsm == "bpf" {
			return nil
		}
	}
	return fmt.Errorf("the bpf LSM is not active (%s: %s)", lsmFile, strings.TrimSpace(string(list)))
}

// ioUringCompletePassesRequest: the tracepoint backend sees opens and writes made through io_uring at the
// io_uring_complete tracepoint, in the request it passes. Older kernels' tracepoint (Debian 11's 5.10) passes only
// the request's user_data: the backend would not see them, so it is refused there, as the kernel's BTF says.
func ioUringCompletePassesRequest() error {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil // the load says what is missing
	}
	var tp *btf.Typedef
	if err := spec.TypeByName("btf_trace_io_uring_complete", &tp); err != nil {
		return nil // no such tracepoint: the load says so
	}
	ptr, ok := btf.UnderlyingType(tp.Type).(*btf.Pointer)
	if !ok {
		return nil
	}
	proto, ok := btf.UnderlyingType(ptr.Target).(*btf.FuncProto)
	if !ok {
		return nil
	}
	// (void *__data, ctx, req, ...): the third is the request, a pointer.
	if len(proto.Params) >= 3 {
		if _, ok := btf.UnderlyingType(proto.Params[2].Type).(*btf.Pointer); ok {
			return nil
		}
	}
	return errors.New("the kernel's io_uring_complete tracepoint does not pass the request (only its user_data), so the tracepoint backend would not see opens and writes made through io_uring: use --backend lsm, fentry or kprobe (auto picks one), or a kernel whose tracepoint passes it (Linux 5.17 and later do)")
}

// errNotAvailable wraps why a backend cannot run on this kernel.
var errNotAvailable = errors.New("backend not available on this kernel")
