package sensor

import (
	"slices"
	"testing"
)

// TestHooksByEnforce: refusing hooks replace their observe-only twins under --enforce, and the hooks on every
// read and write attach only then.
func TestHooksByEnforce(t *testing.T) {
	for _, tt := range []struct {
		backend  string
		enforce  bool
		want     []string
		wantNone []string
	}{
		{BackendLSM, false, []string{"lsm/file_open", "fexit/cgroup1_parse_param", "tp_btf/cgroup_setup_root"}, []string{"lsm/file_permission"}},
		{BackendLSM, true, []string{"lsm/file_open", "lsm/file_permission"}, nil},
		{BackendFentry, false, []string{"fentry/security_file_open", "fentry/security_inode_rename"},
			[]string{"fmod_ret/security_file_open", "fmod_ret/security_file_permission"}},
		{BackendFentry, true, []string{"fmod_ret/security_file_open", "fmod_ret/security_inode_rename", "fmod_ret/security_file_permission"},
			[]string{"fentry/security_file_open", "fentry/security_inode_rename"}},
		{BackendKprobe, true, []string{"kprobe/security_file_open", "kretprobe/cgroup1_parse_param", "kretprobe/cgroup_write_notify_on_release"}, nil},
		{BackendTracepoint, true, []string{"tp_btf/sys_exit", "tp_btf/cgroup_remount", "tp_btf/cgroup_destroy_root"}, nil},
	} {
		b, err := findBackend(tt.backend)
		if err != nil {
			t.Fatal(err)
		}
		points := (&Sensor{backend: b, objs: b.objects(), enforce: tt.enforce}).Programs()
		for _, p := range tt.want {
			if !slices.Contains(points, p) {
				t.Errorf("%s enforce=%v: %s missing from %v", tt.backend, tt.enforce, p, points)
			}
		}
		for _, p := range tt.wantNone {
			if slices.Contains(points, p) {
				t.Errorf("%s enforce=%v: %s attached, want it left out", tt.backend, tt.enforce, p)
			}
		}
	}
}

// TestBackendObjects: each backend's embedded object parses, has the load-time settings, and has one hook per
// program (none is loaded without ever being attached). Program names themselves are checked by the compiler.
func TestBackendObjects(t *testing.T) {
	for _, b := range backends {
		objs := b.objects()
		spec, err := objs.spec()
		if err != nil {
			t.Fatalf("%s: %v", b.name, err)
		}
		if _, err := objs.config(spec); err != nil {
			t.Errorf("%s: settings: %v", b.name, err)
		}
		if hooks := objs.hooks(); len(hooks) != len(spec.Programs) {
			t.Errorf("%s: %d hooks for %d programs in the object", b.name, len(hooks), len(spec.Programs))
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
