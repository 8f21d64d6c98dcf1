package vm

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// Kernel is one pinned Debian kernel package (see kernels.go).
type Kernel struct {
	Name    string // e.g. "debian-6.1"
	Suite   string // the Debian suite whose main component has it, e.g. "bookworm"
	Arch    string // the package's architecture in GOARCH spelling, "amd64" or "arm64"; "" is amd64
	Package string // the binary package, e.g. "linux-image-6.1.0-50-cloud-amd64-unsigned"
	Version string // its exact Debian version
	SHA256  string // of the .deb, checked before anything is extracted from it
}

// GOARCH returns the kernel's architecture, and so the guest's (Config.Arch).
func (k Kernel) GOARCH() string {
	if k.Arch == "" {
		return "amd64"
	}
	return k.Arch
}

// Mirror is the Debian archive the kernels come from (the one the host's apt uses).
const Mirror = "http://deb.debian.org/debian"

// archiveKeyring authenticates the suites' indexes (package debian-archive-keyring).
const archiveKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

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

// FetchKernel returns the path of k's kernel image, downloading the pinned package with apt-get and extracting
// the image into cacheDir on first use. The cache is keyed by package name and version; a cached image is used
// without any download.
func FetchKernel(ctx context.Context, k Kernel, cacheDir string) (string, error) {
	image := filepath.Join(cacheDir, k.Package+"_"+k.Version, "vmlinuz")
	if _, err := os.Stat(image); err == nil {
		return image, nil
	}
	if err := downloadKernel(ctx, k, image); err != nil {
		return "", fmt.Errorf("kernel %s: %w", k.Name, err)
	}
	return image, nil
}

// downloadKernel downloads pkg into a scratch directory beside image and extracts its boot/vmlinuz-*
// to image, atomically so that a concurrent FetchKernel sees the whole image or none.
func downloadKernel(ctx context.Context, k Kernel, image string) error {
	dir := filepath.Dir(image)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create the kernel cache: %w", err)
	}
	scratch, err := os.MkdirTemp(dir, ".download-")
	if err != nil {
		return fmt.Errorf("create the kernel cache: %w", err)
	}
	defer os.RemoveAll(scratch)
	apt, err := suiteApt(ctx, filepath.Dir(dir), k.Suite, k.GOARCH())
	if err != nil {
		return err
	}
	get := exec.CommandContext(ctx, "apt-get", append(apt, "download", k.Package+"="+k.Version)...)
	get.Dir = scratch
	if out, err := get.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s=%s from %s: %w\n%s\nIf the archive no longer has this version (a point release "+
			"of %s removed it), pin another in internal/testutil/vm/kernels.go", k.Package, k.Version, k.Suite, err, out, k.Suite)
	}
	debs, err := filepath.Glob(filepath.Join(scratch, "*.deb"))
	if err != nil || len(debs) != 1 {
		return fmt.Errorf("apt-get download %s left %d .deb files, want 1", k.Package, len(debs))
	}
	if err := checkSHA256(debs[0], k.SHA256); err != nil {
		return err
	}
	tmp := filepath.Join(scratch, "vmlinuz")
	if err := extractKernel(ctx, debs[0], tmp); err != nil {
		return err
	}
	return os.Rename(tmp, image)
}

// debianArch is the Debian spelling of each GOARCH a guest may have.
var debianArch = map[string]string{"amd64": "amd64", "arm64": "arm64"}

// suiteApt returns the apt options that make apt-get see Debian's suite (main) for architecture goarch, with its
// indexes of the day in a lists directory of its own per suite and architecture under cacheDir: the host's apt
// sources, lists, caches and package status are never touched (no dpkg --add-architecture), and any suite and
// architecture is reachable from any Debian host.
func suiteApt(ctx context.Context, cacheDir, suite, goarch string) ([]string, error) {
	if suite == "" {
		return nil, errors.New("the pin names no suite")
	}
	arch, ok := debianArch[goarch]
	if !ok {
		return nil, fmt.Errorf("architecture %q: want amd64 or arm64", goarch)
	}
	root := filepath.Join(cacheDir, "apt", suite+"-"+arch)
	lists := filepath.Join(root, "lists")
	if err := os.MkdirAll(filepath.Join(lists, "partial"), 0o755); err != nil {
		return nil, fmt.Errorf("create the apt lists of %s: %w", suite, err)
	}
	sources := filepath.Join(root, "sources.list")
	line := fmt.Sprintf("deb [arch=%s signed-by=%s] %s %s main\n", arch, archiveKeyring, Mirror, suite)
	if err := os.WriteFile(sources, []byte(line), 0o644); err != nil {
		return nil, fmt.Errorf("write the apt sources of %s: %w", suite, err)
	}
	opts := []string{"-q", "-o", "Dir::Etc::sourcelist=" + sources, "-o", "Dir::Etc::sourceparts=-",
		"-o", "Dir::State::Lists=" + lists, "-o", "APT::Get::List-Cleanup=0",
		"-o", "APT::Architecture=" + arch, "-o", "APT::Architectures=" + arch,
		// Nothing is installed: the host's package status would only mix its own architecture in, and the binary
		// caches would go to the host's /var/cache/apt.
		"-o", "Dir::State::status=/dev/null", "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache="}
	update := exec.CommandContext(ctx, "apt-get", append(opts, "update")...)
	if out, err := update.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("apt-get update of %s/%s from %s (needs the package debian-archive-keyring and the archive reachable): %w\n%s",
			suite, arch, Mirror, err, out)
	}
	return opts, nil
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

// checkSHA256 refuses a file whose SHA-256 is not want: the pin names one exact build, not whatever the
// mirror serves under that version.
func checkSHA256(file, want string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("hash %s: %w", file, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("%s has SHA-256 %s, but the pin says %s: the mirror serves another build under this version", filepath.Base(file), got, want)
	}
	return nil
}
