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
	// build says which objects the kernel needs whatever helpers it has (nil: buildAny).
	build func() objectsBuild
}

// objectsBuild is which of a backend's two builds suits a kernel.
type objectsBuild int

const (
	buildAny     objectsBuild = iota // the regular objects, the legacy ones where helpers are missing
	buildRegular                     // only the regular objects
	buildLegacy                      // only the legacy objects (they run on newer kernels too)
)

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
		needs:     "BTF raw tracepoints: CONFIG_DEBUG_INFO_BTF=y, and io_uring tracepoints that pass the request (the io_uring of Linux 5.15, or of 5.17 and later)",
		preflight: func() error { _, err := probeIoUringTracing(); return err },
		build:     tracepointBuild,
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

// The legacy objects of lsm, fentry and kprobe have the same programs and maps as the regular ones (bpf2go
// generates identical structs under other names): they convert to them, and share their hooks and maps. The
// tracepoint backend's differ (io_uring followed from submission) and list their own.

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

// The legacy tracepoint objects differ from the regular ones: before 5.17 io_uring_complete passes no request,
// so they follow io_uring requests from their submission (bpf/tracepoint.bpf.c).
func (o *tracepointLegacyObjects) shared() sharedMaps {
	return sharedMaps{events: o.EwEvents, helperEvents: o.EwHelperEvents, counters: o.EwCounters, enforceAllowed: o.EwEnforceAllowed, agentValues: o.EwAgentValues,
		agentSetters: o.EwAgentSetters, hostAgents: o.EwHostAgents, origins: o.EwOrigins}
}

func (o *tracepointLegacyObjects) hooks() []hook {
	return append([]hook{
		{prog: o.EwSysExit, point: "tp_btf/sys_exit", attach: attachTracing},
		{prog: o.EwIoUringSubmitSqe, point: "tp_btf/io_uring_submit_sqe", attach: attachTracing},
		{prog: o.EwIoUringFailLink, point: "tp_btf/io_uring_fail_link", attach: attachTracing},
		{prog: o.EwIoUringComplete, point: "tp_btf/io_uring_complete", attach: attachTracing},
	}, lifecyclePrograms{o.EwSchedProcessExec, o.EwCgroupSetupRoot, o.EwCgroupRemount, o.EwCgroupDestroyRoot}.hooks()...)
}

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

// ioUringTracing is how the kernel's io_uring tracepoints let the tracepoint backend see opens and writes made
// through io_uring, which pass through no syscall.
type ioUringTracing int

const (
	// ioUringUnknown: no kernel BTF, or no io_uring tracepoint in it: the load says what is missing.
	ioUringUnknown ioUringTracing = iota
	// ioUringAtCompletion: io_uring_complete passes the request (Linux 5.17 and later): the regular objects.
	ioUringAtCompletion
	// ioUringFromSubmission: io_uring_complete passes only the request's user_data, which its submitter chooses;
	// io_uring_submit_sqe passes the request, and the kernel's io_uring is 5.15's (Debian 11's 5.10 since
	// 5.10.162, Linux 5.15): the legacy objects take requests down at submission and find them at completion.
	ioUringFromSubmission
)

// probeIoUringTracing reads the io_uring tracepoints' prototypes and the fields the legacy objects read in the
// kernel's BTF.
func probeIoUringTracing() (ioUringTracing, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return ioUringUnknown, nil
	}
	return ioUringTracingOf(spec)
}

// ioUringTracingOf is probeIoUringTracing on the kernel whose BTF is spec.
func ioUringTracingOf(spec *btf.Spec) (ioUringTracing, error) {
	complete, ok := tracepointParams(spec, "io_uring_complete")
	if !ok {
		return ioUringUnknown, nil
	}
	// (void *__data, ctx, req, ...): the request is the third, a pointer; before 5.17 the user_data, a u64.
	if len(complete) >= 3 && isPointer(complete[2].Type) {
		return ioUringAtCompletion, nil
	}
	const refused = "the kernel's io_uring_complete tracepoint does not pass the request (only its user_data)"
	const fix = "so the tracepoint backend would not see opens and writes made through io_uring: use --backend lsm, fentry or kprobe (auto picks one), or a kernel with the io_uring of Linux 5.15, or of 5.17 and later"
	if submit, ok := tracepointParams(spec, "io_uring_submit_sqe"); !ok || len(submit) < 3 || !isPointer(submit[2].Type) {
		return 0, fmt.Errorf("%s, nor does io_uring_submit_sqe, %s", refused, fix)
	}
	// (void *__data, req, link): the failed link, whose completion is posted where it is not looked for.
	if failLink, ok := tracepointParams(spec, "io_uring_fail_link"); !ok || len(failLink) != 3 || !isPointer(failLink[2].Type) {
		return 0, fmt.Errorf("%s, and its io_uring_fail_link tracepoint does not pass the failed link, %s", refused, fix)
	}
	var missing []string
	for _, f := range []struct{ typ, member string }{
		{"task_struct", "pf_io_worker"}, {"io_worker", "cur_work"}, {"io_ring_ctx", "submit_state"},
		{"io_submit_state", "compl_reqs"}, {"io_submit_state", "compl_nr"}, {"io_kiocb", "work"},
		{"io_kiocb", "result"}, {"io_kiocb", "user_data"}, {"io_kiocb", "open"}, {"io_open", "file_slot"},
	} {
		if !hasMember(spec, f.typ, f.member) {
			missing = append(missing, f.typ+"."+f.member)
		}
	}
	var batch *btf.Struct
	if spec.TypeByName("io_submit_state", &batch) == nil && !memberIsArray(batch, "compl_reqs") {
		missing = append(missing, "io_submit_state.compl_reqs as an array")
	}
	if len(missing) > 0 {
		return 0, fmt.Errorf("%s, and its io_uring is not the one escapewatch follows requests in from their submission (it lacks %s), %s",
			refused, strings.Join(missing, ", "), fix)
	}
	return ioUringFromSubmission, nil
}

// tracepointParams returns the parameters of the BTF prototype of tracepoint name (btf_trace_<name>).
func tracepointParams(spec *btf.Spec, name string) ([]btf.FuncParam, bool) {
	var tp *btf.Typedef
	if err := spec.TypeByName("btf_trace_"+name, &tp); err != nil {
		return nil, false
	}
	ptr, ok := btf.UnderlyingType(tp.Type).(*btf.Pointer)
	if !ok {
		return nil, false
	}
	proto, ok := btf.UnderlyingType(ptr.Target).(*btf.FuncProto)
	if !ok {
		return nil, false
	}
	return proto.Params, true
}

func isPointer(t btf.Type) bool {
	_, ok := btf.UnderlyingType(t).(*btf.Pointer)
	return ok
}

// hasMember says whether struct typ has member, directly or in an anonymous struct or union (as CO-RE finds it).
func hasMember(spec *btf.Spec, typ, member string) bool {
	var s *btf.Struct
	if err := spec.TypeByName(typ, &s); err != nil {
		return false
	}
	return findMember(s.Members, member) != nil
}

func findMember(members []btf.Member, name string) *btf.Member {
	for i, m := range members {
		if m.Name == name {
			return &members[i]
		}
		if m.Name != "" {
			continue
		}
		switch inner := btf.UnderlyingType(m.Type).(type) {
		case *btf.Struct:
			if found := findMember(inner.Members, name); found != nil {
				return found
			}
		case *btf.Union:
			if found := findMember(inner.Members, name); found != nil {
				return found
			}
		}
	}
	return nil
}

func memberIsArray(s *btf.Struct, name string) bool {
	m := findMember(s.Members, name)
	if m == nil {
		return false
	}
	_, ok := btf.UnderlyingType(m.Type).(*btf.Array)
	return ok
}

// tracepointBuild: the tracepoint backend's objects follow io_uring as the kernel's tracepoints allow.
func tracepointBuild() objectsBuild {
	mode, err := probeIoUringTracing()
	switch {
	case err != nil || mode == ioUringUnknown:
		return buildAny
	case mode == ioUringFromSubmission:
		return buildLegacy
	}
	return buildRegular
}

// errNotAvailable wraps why a backend cannot run on this kernel.
var errNotAvailable = errors.New("backend not available on this kernel")
