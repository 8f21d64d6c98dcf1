package vm

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// Kernel is one kernel of the matrix.
type Kernel struct {
	Name    string // e.g. "debian-6.1"
	Package string // apt package name pattern, e.g. "linux-image-6.1.0-*-cloud-amd64-unsigned"
}

// CacheDirEnv names the directory that DefaultCacheDir returns when set.
const CacheDirEnv = "ESCAPEWATCH_VM_CACHE"

// DefaultCacheDir returns $ESCAPEWATCH_VM_CACHE if set, else escapewatch-vm in the user's cache directory.
func DefaultCacheDir() (string, error) {
	if dir := os.Getenv(CacheDirEnv); dir != "" {
		return dir, nil
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory for kernels: set %s: %w", CacheDirEnv, err)
	}
	return filepath.Join(dir, "escapewatch-vm"), nil
}

// FetchKernel returns the path of the kernel image of the newest package that k.Package matches in the
// apt lists, downloading the package with apt-get and extracting the image into cacheDir on first use.
// The cache is keyed by package name and version, and a cached image is used without any download.
func FetchKernel(ctx context.Context, k Kernel, cacheDir string) (string, error) {
	pkg, err := resolvePackage(ctx, k.Package)
	if err != nil {
		return "", fmt.Errorf("kernel %s: %w", k.Name, err)
	}
	image := filepath.Join(cacheDir, pkg.name+"_"+pkg.version, "vmlinuz")
	if _, err := os.Stat(image); err == nil {
		return image, nil
	}
	if err := downloadKernel(ctx, pkg, image); err != nil {
		return "", fmt.Errorf("kernel %s: %w", k.Name, err)
	}
	return image, nil
}

// debPackage is one version of a Debian package.
type debPackage struct {
	name, version string
}

// resolvePackage finds the newest version of the packages whose names match pattern, from the local
// apt lists only.
func resolvePackage(ctx context.Context, pattern string) (debPackage, error) {
	if _, err := path.Match(pattern, ""); err != nil {
		return debPackage{}, fmt.Errorf("package pattern %q: %w", pattern, err)
	}
	prefix := pattern
	if i := strings.IndexAny(pattern, `*?[\`); i >= 0 {
		prefix = pattern[:i]
	}
	out, err := command(ctx, "apt-cache", "pkgnames", prefix)
	if err != nil {
		return debPackage{}, err
	}
	var names []string
	for _, name := range strings.Fields(out) {
		if ok, _ := path.Match(pattern, name); ok {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return debPackage{}, fmt.Errorf("no package matches %q in the apt lists: run apt-get update", pattern)
	}
	out, err = command(ctx, "apt-cache", append([]string{"madison"}, names...)...)
	if err != nil {
		return debPackage{}, err
	}
	return newestPackage(ctx, parseMadison(out))
}

// parseMadison returns the binary package versions that `apt-cache madison` lists, lines like
// "linux-image-6.1.0-56-cloud-amd64-unsigned | 6.1.158-1 | https://deb.debian.org/debian bookworm/main amd64 Packages".
func parseMadison(out string) []debPackage {
	var pkgs []debPackage
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, "|")
		if len(f) != 3 || !strings.HasSuffix(strings.TrimSpace(f[2]), " Packages") {
			continue // a source package, or not a version line
		}
		pkgs = append(pkgs, debPackage{name: strings.TrimSpace(f[0]), version: strings.TrimSpace(f[1])})
	}
	return pkgs
}

// newestPackage compares versions with dpkg, whose ordering rules (epochs, ~, revisions) are its own.
func newestPackage(ctx context.Context, pkgs []debPackage) (debPackage, error) {
	if len(pkgs) == 0 {
		return debPackage{}, errors.New("apt-cache madison listed no binary package version: run apt-get update")
	}
	best := pkgs[0]
	for _, p := range pkgs[1:] {
		err := exec.CommandContext(ctx, "dpkg", "--compare-versions", p.version, "gt", best.version).Run()
		var exitErr *exec.ExitError
		switch {
		case err == nil:
			best = p
		case !errors.As(err, &exitErr):
			return debPackage{}, fmt.Errorf("dpkg --compare-versions (is this Debian?): %w", err)
		}
	}
	return best, nil
}

// downloadKernel downloads pkg into a scratch directory beside image and extracts its boot/vmlinuz-*
// to image, atomically so that a concurrent FetchKernel sees the whole image or none.
func downloadKernel(ctx context.Context, pkg debPackage, image string) error {
	dir := filepath.Dir(image)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create the kernel cache: %w", err)
	}
	scratch, err := os.MkdirTemp(dir, ".download-")
	if err != nil {
		return fmt.Errorf("create the kernel cache: %w", err)
	}
	defer os.RemoveAll(scratch)
	get := exec.CommandContext(ctx, "apt-get", "download", pkg.name+"="+pkg.version)
	get.Dir = scratch
	if out, err := get.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s=%s (run apt-get update if the version is gone): %w\n%s", pkg.name, pkg.version, err, out)
	}
	debs, err := filepath.Glob(filepath.Join(scratch, "*.deb"))
	if err != nil || len(debs) != 1 {
		return fmt.Errorf("apt-get download %s left %d .deb files, want 1", pkg.name, len(debs))
	}
	tmp := filepath.Join(scratch, "vmlinuz")
	if err := extractKernel(ctx, debs[0], tmp); err != nil {
		return err
	}
	return os.Rename(tmp, image)
}

// extractKernel copies boot/vmlinuz-* out of the .deb's data archive to dst, skipping the modules.
func extractKernel(ctx context.Context, deb, dst string) error {
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb)
	data, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("dpkg-deb (is this Debian?): %w", err)
	}
	found, copyErr := copyKernelImage(tar.NewReader(data), dst)
	// Read to the end so that dpkg-deb does not fail on a closed pipe.
	_, _ = io.Copy(io.Discard, data)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w: %s", deb, err, stderr.String())
	}
	if copyErr != nil {
		return fmt.Errorf("extract the kernel from %s: %w", deb, copyErr)
	}
	if !found {
		return fmt.Errorf("%s has no boot/vmlinuz-*: is it a linux-image package?", deb)
	}
	return nil
}

func copyKernelImage(tr *tar.Reader, dst string) (bool, error) {
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if ok, _ := path.Match("./boot/vmlinuz-*", hdr.Name); !ok || hdr.Typeflag != tar.TypeReg {
			continue
		}
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return false, err
		}
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return true, err
	}
}

// command runs name with args and returns its stdout, or an error that includes its stderr.
func command(ctx context.Context, name string, args ...string) (string, error) {
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}
