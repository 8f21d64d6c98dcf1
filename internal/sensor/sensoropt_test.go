package sensor

import (
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"escapewatch/internal/sensoropt"
)

// TestBackendNamesAsConfigured: the configuration accepts exactly the sensor's backends, in its order.
func TestBackendNamesAsConfigured(t *testing.T) {
	if got, want := BackendNames(), sensoropt.Backends(); !slices.Equal(got, want) {
		t.Errorf("the sensor's backends %v, the configuration's %v", got, want)
	}
}

// TestEnforceAllowLimitsMatchTheKernel: the enforce allowlist's limits, which the configuration checks, are the
// sensor's and the kernel side's (EW_ALLOW_MAX entries of a prefix[EW_ALLOW_LEN] in ew_enforce_allowed), in
// every backend's object.
func TestEnforceAllowLimitsMatchTheKernel(t *testing.T) {
	if MaxEnforceAllow != sensoropt.MaxEnforceAllow || MaxEnforceAllowLen != sensoropt.MaxEnforceAllowLen {
		t.Errorf("the sensor allows %d cgroups shorter than %d bytes, the configuration %d shorter than %d",
			MaxEnforceAllow, MaxEnforceAllowLen, sensoropt.MaxEnforceAllow, sensoropt.MaxEnforceAllowLen)
	}
	for name, load := range map[string]func() (*ebpf.CollectionSpec, error){
		BackendLSM: loadLsm, BackendFentry: loadFentry, BackendKprobe: loadKprobe, BackendTracepoint: loadTracepoint,
	} {
		spec, err := load()
		if err != nil {
			t.Fatal(err)
		}
		m, ok := spec.Maps["ew_enforce_allowed"]
		if !ok {
			t.Fatalf("%s: no map ew_enforce_allowed", name)
		}
		if m.MaxEntries != sensoropt.MaxEnforceAllow {
			t.Errorf("%s: ew_enforce_allowed holds %d entries, sensoropt.MaxEnforceAllow is %d", name, m.MaxEntries, sensoropt.MaxEnforceAllow)
		}
		value, ok := btf.UnderlyingType(m.Value).(*btf.Struct)
		if !ok {
			t.Fatalf("%s: ew_enforce_allowed's value is %v, want a struct", name, m.Value)
		}
		prefix := -1
		for _, member := range value.Members {
			if a, ok := btf.UnderlyingType(member.Type).(*btf.Array); ok && member.Name == "prefix" {
				prefix = int(a.Nelems)
			}
		}
		if prefix != sensoropt.MaxEnforceAllowLen {
			t.Errorf("%s: ew_enforce_allowed's prefix holds %d bytes, sensoropt.MaxEnforceAllowLen is %d", name, prefix, sensoropt.MaxEnforceAllowLen)
		}
	}
}
