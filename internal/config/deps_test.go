package config

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoKernelDependencies: reading and checking a configuration, and matching the allowlist, must not link the
// BPF objects, cilium/ebpf or the containerd API. The sensor depends on these packages, never the reverse.
func TestNoKernelDependencies(t *testing.T) {
	goTool := "go"
	if root := os.Getenv("GOROOT"); root != "" {
		goTool = filepath.Join(root, "bin", "go")
	}
	pkgs := []string{"escapewatch/internal/config", "escapewatch/internal/suppress"}
	out, err := exec.Command(goTool, append([]string{"list", "-deps"}, pkgs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/cilium/ebpf") || strings.Contains(dep, "containerd") ||
			dep == "escapewatch/internal/sensor" || dep == "escapewatch/internal/enrich" {
			t.Errorf("%s depend on %s", strings.Join(pkgs, " and "), dep)
		}
	}
}
