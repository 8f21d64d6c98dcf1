// Package sensoropt states what the sensor accepts in its configuration, without the sensor: the backend
// names and the limits and check of the enforce allowlist. The configuration checks a file with it without
// linking the BPF objects and cilium/ebpf; the sensor uses it too, and the sensor's tests hold its own limits
// and the BPF objects' to these.
package sensoropt

import (
	"fmt"
	"strings"
)

// Backend names.
const (
	BackendAuto       = "auto"
	BackendLSM        = "lsm"
	BackendFentry     = "fentry"
	BackendKprobe     = "kprobe"
	BackendTracepoint = "tracepoint"
)

// Backends lists the accepted backend names: auto, then the backends best first, the order in which auto tries
// them.
func Backends() []string {
	return []string{BackendAuto, BackendLSM, BackendFentry, BackendKprobe, BackendTracepoint}
}

// Limits of the enforce allowlist: at most MaxEnforceAllow cgroup paths, each shorter than MaxEnforceAllowLen
// bytes: the entries of the kernel side's ew_enforce_allowed map and the size of their prefix.
const (
	MaxEnforceAllow    = 16
	MaxEnforceAllowLen = 128
)

// CheckAllowedCgroup reports why p cannot be an allowed cgroup path prefix, or nil.
func CheckAllowedCgroup(p string) error {
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("allowed cgroup %q: want an absolute cgroup path such as /lxc.payload.web", p)
	case p == "/":
		return fmt.Errorf("allowed cgroup \"/\" would allow every process: leave --enforce off instead")
	case strings.HasSuffix(p, "/"):
		return fmt.Errorf("allowed cgroup %q: remove the trailing slash (a prefix always ends at a path boundary)", p)
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("allowed cgroup %q: contains a NUL byte", p)
	case len(p) >= MaxEnforceAllowLen:
		return fmt.Errorf("allowed cgroup %q: %d bytes, at most %d", p, len(p), MaxEnforceAllowLen-1)
	}
	return nil
}
