package sensor

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"escapewatch/internal/testutil"
)

// TestHooksBySettings: refusing hooks replace their observe-only twins under --enforce, and the hooks on every
// read and write attach only then. Exactly one hook sees opens: security_file_open when every open must be seen
// (to refuse one, or with --any-fs), else cgroup_file_open, which no other file's open enters.
func TestHooksBySettings(t *testing.T) {
	for _, tt := range []struct {
		backend        string
		enforce, anyFS bool
		want           []string
		wantNone       []string
	}{
		{BackendLSM, false, false, []string{"fentry/cgroup_file_open", "fexit/cgroup1_parse_param", "tp_btf/cgroup_setup_root"},
			[]string{"lsm/file_open", "lsm/file_permission"}},
		{BackendLSM, false, true, []string{"lsm/file_open"}, []string{"fentry/cgroup_file_open", "lsm/file_permission"}},
		{BackendLSM, true, false, []string{"lsm/file_open", "lsm/file_permission"}, []string{"fentry/cgroup_file_open"}},
		{BackendFentry, false, false, []string{"fentry/cgroup_file_open", "fentry/security_inode_rename"},
			[]string{"fentry/security_file_open", "fmod_ret/security_file_open", "fmod_ret/security_file_permission"}},
		{BackendFentry, false, true, []string{"fentry/security_file_open", "fentry/security_inode_rename"},
			[]string{"fentry/cgroup_file_open", "fmod_ret/security_file_open"}},
		{BackendFentry, true, false, []string{"fmod_ret/security_file_open", "fmod_ret/security_inode_rename", "fmod_ret/security_file_permission"},
			[]string{"fentry/security_file_open", "fentry/security_inode_rename", "fentry/cgroup_file_open"}},
		{BackendFentry, true, true, []string{"fmod_ret/security_file_open"}, []string{"fentry/security_file_open", "fentry/cgroup_file_open"}},
		// kprobes cannot refuse: --enforce kills the writer, as well from cgroup_file_open.
		{BackendKprobe, true, false, []string{"kprobe/cgroup_file_open", "kretprobe/cgroup1_parse_param", "kretprobe/cgroup_write_notify_on_release"},
			[]string{"kprobe/security_file_open"}},
		{BackendKprobe, false, true, []string{"kprobe/security_file_open"}, []string{"kprobe/cgroup_file_open"}},
		{BackendTracepoint, true, false, []string{"tp_btf/sys_exit", "tp_btf/cgroup_remount", "tp_btf/cgroup_destroy_root"}, nil},
	} {
		b, err := findBackend(tt.backend)
		if err != nil {
			t.Fatal(err)
		}
		points := (&Sensor{backend: b, objs: b.objects(), enforce: tt.enforce, anyFS: tt.anyFS}).Programs()
		for _, p := range tt.want {
			if !slices.Contains(points, p) {
				t.Errorf("%s enforce=%v any-fs=%v: %s missing from %v", tt.backend, tt.enforce, tt.anyFS, p, points)
			}
		}
		for _, p := range tt.wantNone {
			if slices.Contains(points, p) {
				t.Errorf("%s enforce=%v any-fs=%v: %s attached, want it left out", tt.backend, tt.enforce, tt.anyFS, p)
			}
		}
		opens := 0
		for _, p := range points {
			if strings.HasSuffix(p, "file_open") {
				opens++
			}
		}
		if opens != 1 && tt.backend != BackendTracepoint {
			t.Errorf("%s enforce=%v any-fs=%v: %d hooks see opens (%v), want 1", tt.backend, tt.enforce, tt.anyFS, opens, points)
		}
	}
}

// TestBackendObjects: each backend's embedded object parses, has the load-time settings, and has one hook per
// program (none is loaded without ever being attached). Program names themselves are checked by the compiler.
func TestBackendObjects(t *testing.T) {
	for _, b := range backends {
		for build, objs := range map[string]objects{"regular": b.objects(), "legacy": b.legacy()} {
			spec, err := objs.spec()
			if err != nil {
				t.Fatalf("%s %s: %v", b.name, build, err)
			}
			if _, err := objs.config(spec); err != nil {
				t.Errorf("%s %s: settings: %v", b.name, build, err)
			}
			if hooks := objs.hooks(); len(hooks) != len(spec.Programs) {
				t.Errorf("%s %s: %d hooks for %d programs in the object", b.name, build, len(hooks), len(spec.Programs))
			}
		}
	}
}

// TestIoUringTracingThisKernel: the tracepoint backend takes the objects this kernel's io_uring tracepoints call
// for: the regular ones where io_uring_complete passes the request (Linux 5.17 and later, as here), the legacy
// ones where the request is followed from its submission (the matrix's 5.10 cells run that case for real).
func TestIoUringTracingThisKernel(t *testing.T) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("no kernel BTF here: %v", err)
	}
	mode, err := ioUringTracingOf(spec)
	want := map[ioUringTracing]objectsBuild{ioUringUnknown: buildAny, ioUringAtCompletion: buildRegular, ioUringFromSubmission: buildLegacy}[mode]
	if err != nil {
		t.Logf("the tracepoint backend is refused on this kernel: %v", err)
	} else if got := tracepointBuild(); got != want {
		t.Errorf("io_uring tracing %v: build %v, want %v", mode, got, want)
	}
	// Members inside anonymous unions are found as CO-RE finds them: io_kiocb's file is in one.
	for _, tc := range []struct {
		typ, member string
		want        bool
	}{
		{"io_kiocb", "file", true}, {"io_kiocb", "opcode", true}, {"io_kiocb", "no_such_member", false},
		{"no_such_struct", "file", false},
	} {
		if got := hasMember(spec, tc.typ, tc.member); got != tc.want {
			t.Errorf("hasMember(%s, %s) = %v, want %v", tc.typ, tc.member, got, tc.want)
		}
	}
}

// TestEnforceAllowLimit: MaxEnforceAllow is the size of the kernel's allow list (EW_ALLOW_MAX).
func TestEnforceAllowLimit(t *testing.T) {
	spec, err := loadTracepoint()
	if err != nil {
		t.Fatal(err)
	}
	var maps tracepointMapSpecs
	if err := spec.Assign(&maps); err != nil {
		t.Fatal(err)
	}
	if n := maps.EwEnforceAllowed.MaxEntries; n != MaxEnforceAllow {
		t.Errorf("ew_enforce_allowed holds %d entries, MaxEnforceAllow is %d", n, MaxEnforceAllow)
	}
}

func TestHelperName(t *testing.T) {
	tests := []struct {
		fn   asm.BuiltinFunc
		want string
	}{
		{asm.FnLoop, "bpf_loop"},
		{asm.FnTaskPtRegs, "bpf_task_pt_regs"},
		{asm.FnGetCurrentTaskBtf, "bpf_get_current_task_btf"},
		{asm.FnProbeReadKernelStr, "bpf_probe_read_kernel_str"},
	}
	for _, tt := range tests {
		if got := helperName(tt.fn); got != tt.want {
			t.Errorf("helperName(%v) = %q, want %q", tt.fn, got, tt.want)
		}
	}
}

// TestPrivilegedHelpersProbed: every helper each backend's programs call is probed, and this kernel has each one
// the tracepoint backend (the one it runs) needs; a helper no kernel has is found missing.
func TestPrivilegedHelpersProbed(t *testing.T) {
	testutil.RequirePrivileged(t)
	if known, err := kernelKnowsHelper(asm.BuiltinFunc(9999)); err != nil || known {
		t.Errorf("helper 9999: known %v, error %v; want unknown", known, err)
	}
	for _, b := range backends {
		spec, err := b.objects().spec()
		if err != nil {
			t.Fatal(err)
		}
		missing, err := missingHelpers(spec)
		if err != nil {
			t.Fatalf("%s: %v", b.name, err)
		}
		if b.name == BackendTracepoint && len(missing) > 0 {
			t.Errorf("%s: %v", b.name, missingHelpersError(missing))
		}
	}
}

func TestHelpersMissingError(t *testing.T) {
	err := missingHelpersError([]asm.BuiltinFunc{asm.FnRingbufQuery, asm.FnLoop, asm.FnGetCurrentTaskBtf})
	want := "the kernel lacks the BPF helper(s) bpf_ringbuf_query (Linux 5.8), bpf_loop (Linux 5.17), " +
		"bpf_get_current_task_btf (Linux 5.11) that the programs call: run on Linux 5.17 or later"
	if err.Error() != want {
		t.Errorf("got %q\nwant %q", err, want)
	}
}

// TestTrampolineRefusalNamesFix: an attach that the kernel refuses with ENOTSUPP at a trampoline's attach point
// names the missing feature and the backends that work, and no generic advice (the matrix sees it for real on
// arm64 6.1: test/matrix's refusals).
func TestTrampolineRefusalNamesFix(t *testing.T) {
	for _, tc := range []struct {
		point string
		want  bool
	}{
		{"lsm/file_open", true}, {"fentry/cgroup1_parse_param", true}, {"fexit/cgroup_release_agent_write", true},
		{"fmod_ret/security_file_open", true}, {"kprobe/security_file_open", false}, {"tp_btf/sys_exit", false},
	} {
		if got := isTrampoline(tc.point); got != tc.want {
			t.Errorf("isTrampoline(%q) = %v, want %v", tc.point, got, tc.want)
		}
	}
	err := fmt.Errorf("backend lsm: %w", &trampolinesUnsupportedError{fmt.Errorf("create raw tracepoint: %w", ebpf.ErrNotSupported)})
	var named fixNamed
	if !errors.As(err, &named) || !errors.Is(err, ebpf.ErrNotSupported) {
		t.Errorf("%v: want a fixNamed error wrapping ErrNotSupported", err)
	}
	for _, want := range []string{"cannot attach BPF trampolines to kernel functions", "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS", "--backend kprobe or tracepoint"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v: lacks %q", err, want)
		}
	}
}
