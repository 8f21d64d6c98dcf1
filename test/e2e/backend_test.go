package e2e

import (
	"context"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"escapewatch/internal/testutil"
)

// The backends best first, and what a forced one that the kernel lacks must name as the fix (one of them: lsm
// needs the bpf LSM active and trampolines that attach to kernel functions, which arm64 before 6.4 lacks).
var backendNeeds = []struct {
	name  string
	needs []string
}{
	{"lsm", []string{"lsm=...,bpf", "BPF trampolines"}},
	{"fentry", []string{"BPF trampolines"}},
	{"kprobe", []string{"CONFIG_KPROBES"}},
	{"tracepoint", []string{"CONFIG_DEBUG_INFO_BTF"}},
}

// tryBackend starts the sensor with --backend name, and reports whether it became ready, with its log.
func tryBackend(t *testing.T, name string) (bool, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, sensorBin, "run", "--backend", name)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for {
		select {
		case err := <-exited:
			if err == nil {
				t.Fatalf("--backend %s exited 0 without becoming ready:\n%s", name, stderr.String())
			}
			return false, stderr.String()
		case <-time.After(20 * time.Millisecond):
		}
		if strings.Contains(stderr.String(), "sensor ready") {
			cmd.Process.Signal(syscall.SIGINT)
			<-exited
			return true, stderr.String()
		}
	}
}

// TestPrivilegedBackendSelection: each forced backend either starts or fails with an error that names what
// the kernel lacks and how to get it; auto chooses the best backend that starts on its own.
func TestPrivilegedBackendSelection(t *testing.T) {
	testutil.RequirePrivileged(t)
	var best string
	for _, b := range backendNeeds {
		ok, log := tryBackend(t, b.name)
		if !ok {
			named := slices.ContainsFunc(b.needs, func(fix string) bool { return strings.Contains(log, fix) })
			if !strings.Contains(log, "backend "+b.name+": ") || !named {
				t.Errorf("--backend %s failed without naming the missing feature (one of %q):\n%s", b.name, b.needs, log)
			}
			continue
		}
		if best == "" {
			best = b.name
		}
	}
	if best == "" {
		t.Fatal("no backend starts on this kernel")
	}
	ok, log := tryBackend(t, "auto")
	if !ok {
		t.Fatalf("auto did not start:\n%s", log)
	}
	m := regexp.MustCompile(`msg="backend chosen" backend=(\w+)`).FindStringSubmatch(log)
	if m == nil || m[1] != best {
		t.Errorf("auto chose %v, want %s (the best that starts alone):\n%s", m, best, log)
	}
	if strings.Count(log, `msg="backend not available`) != indexOf(best) {
		t.Errorf("auto should log why it passed over each better backend:\n%s", log)
	}
}

func indexOf(backend string) int {
	for i, b := range backendNeeds {
		if b.name == backend {
			return i
		}
	}
	return -1
}
