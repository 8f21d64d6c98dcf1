package vm

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// AddExecutable adds the host executable hostPath to files at the same guest path, with every shared
// library that ldd says it needs, the dynamic loader included, each at its host path too.
func AddExecutable(files map[string]string, hostPath string) error {
	if !filepath.IsAbs(hostPath) {
		return fmt.Errorf("executable %q: want an absolute path, the guest path is the same", hostPath)
	}
	if _, err := os.Stat(hostPath); err != nil {
		return fmt.Errorf("executable for the guest: %w", err)
	}
	libs, err := sharedLibraries(hostPath)
	if err != nil {
		return err
	}
	files[hostPath] = hostPath
	for _, lib := range libs {
		files[lib] = lib
	}
	return nil
}

// sharedLibraries runs ldd on exe; a static executable needs none.
func sharedLibraries(exe string) ([]string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("ldd", exe)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if strings.Contains(stderr.String(), "not a dynamic executable") {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s (ldd comes with libc-bin): %w: %s", exe, err, stderr.String())
	}
	libs, err := parseLdd(stdout.String())
	if err != nil {
		return nil, fmt.Errorf("libraries of %s: %w", exe, err)
	}
	return libs, nil
}

// parseLdd returns the library paths in ldd output: "name => /path (addr)" lines and the loader's
// "/path (addr)" line. The vDSO has no file, and a library that ldd did not find is an error.
func parseLdd(out string) ([]string, error) {
	var libs, missing []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && f[2] == "not":
			missing = append(missing, f[0])
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0])
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("ldd found no %s: install the package that has it", strings.Join(missing, ", "))
	}
	return libs, nil
}
