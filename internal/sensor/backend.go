package sensor

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Backend names, best first: the order in which "auto" tries them.
const (
	BackendAuto       = "auto"
	BackendLSM        = "lsm"
	BackendFentry     = "fentry"
	BackendKprobe     = "kprobe"
	BackendTracepoint = "tracepoint"
)

// backend is one family of kernel hooks with its own BPF object; the C logic behind them is shared.
type backend struct {
	name  string
	spec  func() (*ebpf.CollectionSpec, error)
	hooks []hook
	needs string // what the kernel must offer, and how to get it: the fix in the error when it is missing
	// preflight checks a precondition that loading alone would not reveal (nil: none).
	preflight func() error
}

type hook struct {
	prog   string // program name in the object
	point  string // where it attaches, for logs and errors
	attach func(*ebpf.Program) (link.Link, error)
	when   attachWhen
}

// attachWhen says under which --enforce setting a hook attaches.
type attachWhen int

const (
	always       attachWhen = iota
	enforcing               // refusing hooks, and hooks on paths every read and write of the machine takes
	notEnforcing            // observe-only twins of the refusing hooks
)

// lifecycleHooks are in every backend's object (bpf/lifecycle.h).
var lifecycleHooks = []hook{
	{prog: "ew_sched_process_exec", point: "tp_btf/sched_process_exec", attach: attachTracing},
	{prog: "ew_cgroup_setup_root", point: "tp_btf/cgroup_setup_root", attach: attachTracing},
	{prog: "ew_cgroup_remount", point: "tp_btf/cgroup_remount", attach: attachTracing},
	{prog: "ew_cgroup_destroy_root", point: "tp_btf/cgroup_destroy_root", attach: attachTracing},
}

func withLifecycle(hooks ...hook) []hook { return append(hooks, lifecycleHooks...) }

func attachTracing(p *ebpf.Program) (link.Link, error) {
	return link.AttachTracing(link.TracingOptions{Program: p})
}

func attachLSM(p *ebpf.Program) (link.Link, error) {
	return link.AttachLSM(link.LSMOptions{Program: p})
}

// kprobeHook is program prog on the entry of kernel function symbol, or on its return.
func kprobeHook(prog, symbol string, ret bool) hook {
	if ret {
		return hook{prog: prog, point: "kretprobe/" + symbol,
			attach: func(p *ebpf.Program) (link.Link, error) { return link.Kretprobe(symbol, p, nil) }}
	}
	return hook{prog: prog, point: "kprobe/" + symbol,
		attach: func(p *ebpf.Program) (link.Link, error) { return link.Kprobe(symbol, p, nil) }}
}

var backends = []backend{
	{
		name: BackendLSM,
		spec: loadLsm,
		hooks: withLifecycle(
			hook{prog: "ew_lsm_file_open", point: "lsm/file_open", attach: attachLSM},
			hook{prog: "ew_lsm_inode_rename", point: "lsm/inode_rename", attach: attachLSM},
			hook{prog: "ew_lsm_file_permission", point: "lsm/file_permission", attach: attachLSM, when: enforcing},
			hook{prog: "ew_lsm_fexit_agent_write", point: "fexit/cgroup_release_agent_write", attach: attachTracing},
			hook{prog: "ew_lsm_fexit_notify_write", point: "fexit/cgroup_write_notify_on_release", attach: attachTracing},
			hook{prog: "ew_lsm_fentry_parse_param", point: "fentry/cgroup1_parse_param", attach: attachTracing},
			hook{prog: "ew_lsm_fexit_parse_param", point: "fexit/cgroup1_parse_param", attach: attachTracing},
		),
		needs:     "BPF LSM: CONFIG_BPF_LSM=y, \"bpf\" in the active LSMs (add lsm=...,bpf to the kernel command line) and BPF trampolines",
		preflight: bpfLSMActive,
	},
	{
		name: BackendFentry,
		spec: loadFentry,
		hooks: withLifecycle(
			hook{prog: "ew_fentry_file_open", point: "fentry/security_file_open", attach: attachTracing, when: notEnforcing},
			hook{prog: "ew_fentry_inode_rename", point: "fentry/security_inode_rename", attach: attachTracing, when: notEnforcing},
			hook{prog: "ew_fmodret_file_open", point: "fmod_ret/security_file_open", attach: attachTracing, when: enforcing},
			hook{prog: "ew_fmodret_inode_rename", point: "fmod_ret/security_inode_rename", attach: attachTracing, when: enforcing},
			hook{prog: "ew_fmodret_file_permission", point: "fmod_ret/security_file_permission", attach: attachTracing, when: enforcing},
			hook{prog: "ew_fexit_agent_write", point: "fexit/cgroup_release_agent_write", attach: attachTracing},
			hook{prog: "ew_fexit_notify_write", point: "fexit/cgroup_write_notify_on_release", attach: attachTracing},
			hook{prog: "ew_fentry_parse_param", point: "fentry/cgroup1_parse_param", attach: attachTracing},
			hook{prog: "ew_fexit_parse_param", point: "fexit/cgroup1_parse_param", attach: attachTracing},
		),
		needs: "BPF trampolines (fentry, and fmod_ret for --enforce): CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS on x86_64 or arm64, kernel 5.7 or later",
	},
	{
		name: BackendKprobe,
		spec: loadKprobe,
		hooks: withLifecycle(
			kprobeHook("ew_kprobe_file_open", "security_file_open", false),
			kprobeHook("ew_kprobe_inode_rename", "security_inode_rename", false),
			kprobeHook("ew_kprobe_agent_write", "cgroup_release_agent_write", false),
			kprobeHook("ew_kretprobe_agent_write", "cgroup_release_agent_write", true),
			kprobeHook("ew_kprobe_notify_write", "cgroup_write_notify_on_release", false),
			kprobeHook("ew_kretprobe_notify_write", "cgroup_write_notify_on_release", true),
			kprobeHook("ew_kprobe_parse_param", "cgroup1_parse_param", false),
			kprobeHook("ew_kretprobe_parse_param", "cgroup1_parse_param", true),
		),
		needs: "kprobes: CONFIG_KPROBES=y and CONFIG_KPROBE_EVENTS=y",
	},
	{
		name: BackendTracepoint,
		spec: loadTracepoint,
		hooks: withLifecycle(
			hook{prog: "ew_sys_exit", point: "tp_btf/sys_exit", attach: attachTracing},
			hook{prog: "ew_io_uring_complete", point: "tp_btf/io_uring_complete", attach: attachTracing},
		),
		needs: "BTF raw tracepoints: CONFIG_DEBUG_INFO_BTF=y and kernel 5.17 or later (bpf_loop)",
	},
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

// errNotAvailable wraps why a backend cannot run on this kernel.
var errNotAvailable = errors.New("backend not available on this kernel")
