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
	name    string
	spec    func() (*ebpf.CollectionSpec, error)
	hooks   []hook
	canDeny bool   // refuses operations itself; the others kill the process under --enforce
	needs   string // what the kernel must offer, and how to get it: the fix in the error when it is missing
	// preflight checks a precondition that loading alone would not reveal (nil: none).
	preflight func() error
}

type hook struct {
	prog   string // program name in the object
	point  string // where it attaches, for logs and errors
	attach func(*ebpf.Program) (link.Link, error)
}

func attachTracing(p *ebpf.Program) (link.Link, error) {
	return link.AttachTracing(link.TracingOptions{Program: p})
}

func attachLSM(p *ebpf.Program) (link.Link, error) {
	return link.AttachLSM(link.LSMOptions{Program: p})
}

func attachKprobe(symbol string) func(*ebpf.Program) (link.Link, error) {
	return func(p *ebpf.Program) (link.Link, error) { return link.Kprobe(symbol, p, nil) }
}

func attachKretprobe(symbol string) func(*ebpf.Program) (link.Link, error) {
	return func(p *ebpf.Program) (link.Link, error) { return link.Kretprobe(symbol, p, nil) }
}

var backends = []backend{
	{
		name: BackendLSM,
		spec: loadLsm,
		hooks: []hook{
			{"ew_lsm_file_open", "lsm/file_open", attachLSM},
			{"ew_lsm_inode_rename", "lsm/inode_rename", attachLSM},
			{"ew_lsm_fexit_agent_write", "fexit/cgroup_release_agent_write", attachTracing},
			{"ew_lsm_fexit_notify_write", "fexit/cgroup_write_notify_on_release", attachTracing},
			{"ew_lsm_fentry_parse_param", "fentry/cgroup1_parse_param", attachTracing},
			{"ew_sched_process_exec", "tp_btf/sched_process_exec", attachTracing},
		},
		canDeny:   true,
		needs:     "BPF LSM: CONFIG_BPF_LSM=y, \"bpf\" in the active LSMs (add lsm=...,bpf to the kernel command line) and BPF trampolines",
		preflight: bpfLSMActive,
	},
	{
		name: BackendFentry,
		spec: loadFentry,
		hooks: []hook{
			{"ew_fentry_file_open", "fentry/security_file_open", attachTracing},
			{"ew_fentry_inode_rename", "fentry/security_inode_rename", attachTracing},
			{"ew_fexit_agent_write", "fexit/cgroup_release_agent_write", attachTracing},
			{"ew_fexit_notify_write", "fexit/cgroup_write_notify_on_release", attachTracing},
			{"ew_fentry_parse_param", "fentry/cgroup1_parse_param", attachTracing},
			{"ew_sched_process_exec", "tp_btf/sched_process_exec", attachTracing},
		},
		needs: "BPF trampolines (fentry): CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS on x86_64 or arm64, kernel 5.5 or later",
	},
	{
		name: BackendKprobe,
		spec: loadKprobe,
		hooks: []hook{
			{"ew_kprobe_file_open", "kprobe/security_file_open", attachKprobe("security_file_open")},
			{"ew_kprobe_inode_rename", "kprobe/security_inode_rename", attachKprobe("security_inode_rename")},
			{"ew_kprobe_agent_write", "kprobe/cgroup_release_agent_write", attachKprobe("cgroup_release_agent_write")},
			{"ew_kretprobe_agent_write", "kretprobe/cgroup_release_agent_write", attachKretprobe("cgroup_release_agent_write")},
			{"ew_kprobe_notify_write", "kprobe/cgroup_write_notify_on_release", attachKprobe("cgroup_write_notify_on_release")},
			{"ew_kprobe_parse_param", "kprobe/cgroup1_parse_param", attachKprobe("cgroup1_parse_param")},
			{"ew_sched_process_exec", "tp_btf/sched_process_exec", attachTracing},
		},
		needs: "kprobes: CONFIG_KPROBES=y and CONFIG_KPROBE_EVENTS=y",
	},
	{
		name: BackendTracepoint,
		spec: loadTracepoint,
		hooks: []hook{
			{"ew_sys_exit", "tp_btf/sys_exit", attachTracing},
			{"ew_io_uring_complete", "tp_btf/io_uring_complete", attachTracing},
			{"ew_sched_process_exec", "tp_btf/sched_process_exec", attachTracing},
		},
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
