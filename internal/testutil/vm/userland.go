package vm

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Userland is a guest userland made of Debian packages of one suite and architecture: the tools of a guest
// whose architecture is not the host's, which AddExecutable cannot copy from the host.
type Userland struct {
	Suite    string   // e.g. "bookworm"
	Arch     string   // GOARCH spelling, e.g. "arm64"
	Packages []string // binary packages of the suite's main component, at the versions the suite has today
}

// Arm64Userland has what the end-to-end suite runs in an arm64 guest (test/matrix's guestTools): dash,
// util-linux's unshare and setpriv, mount, coreutils, python3 with ctypes, runc and busybox, and the libraries
// they link (found by reading their DT_NEEDED; AddExecutable names any that is missing).
var Arm64Userland = Userland{
	Suite: "bookworm",
	Arch:  "arm64",
	Packages: []string{
		"dash", "util-linux", "mount", "coreutils", "runc", "busybox-static",
		"python3-minimal", "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
		"libc6", "libacl1", "libattr1", "libblkid1", "libcap-ng0", "libexpat1", "libffi8", "libmount1", "libpcre2-8-0",
		"libseccomp2", "libselinux1", "zlib1g",
	},
}

// Root is a Userland unpacked on the host, usr-merged as Debian installs it (/bin, /sbin and /lib link to their
// /usr counterparts). Guest paths are paths inside Dir.
type Root struct {
	Dir  string // the root directory on the host
	Arch string // GOARCH of its executables
}

// elfMachine and multiarch are, per GOARCH, the ELF machine of a root's executables and Debian's multiarch
// library directory name.
var (
	elfMachine = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	multiarch  = map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}
)

// FetchUserland returns u unpacked under cacheDir. It asks apt (with the per-suite-and-architecture indexes of
// FetchKernel) which versions the suite has today; the first use of that set downloads the packages and unpacks
// them, a later one finds them in the cache. The .debs are checked against the suite's signed indexes by apt.
func FetchUserland(ctx context.Context, u Userland, cacheDir string) (Root, error) {
	root := Root{Arch: u.Arch}
	if _, ok := elfMachine[u.Arch]; !ok || len(u.Packages) == 0 {
		return root, fmt.Errorf("userland %s/%s: want amd64 or arm64 and some packages", u.Suite, u.Arch)
	}
	apt, err := suiteApt(ctx, cacheDir, u.Suite, u.Arch)
	if err != nil {
		return root, err
	}
	debs, err := packageFiles(ctx, apt, u.Packages)
	if err != nil {
		return root, fmt.Errorf("userland %s/%s: %w", u.Suite, u.Arch, err)
	}
	// Keyed by what was unpacked, so that a new version in the suite gives a new root, never a mixed one.
	key := sha256.Sum256([]byte(strings.Join(debs, "\n")))
	dir := filepath.Join(cacheDir, "userland", u.Suite+"-"+u.Arch+"-"+hex.EncodeToString(key[:8]))
	root.Dir = filepath.Join(dir, "root")
	if _, err := os.Stat(root.Dir); err == nil {
		return root, nil
	}
	if err := unpackUserland(ctx, apt, u, debs, dir); err != nil {
		return root, fmt.Errorf("userland %s/%s: %w", u.Suite, u.Arch, err)
	}
	return root, nil
}

// packageFiles returns the sorted .deb file names (name_version_arch.deb) that apt-get download would fetch for
// packages, without downloading them.
func packageFiles(ctx context.Context, apt, packages []string) ([]string, error) {
	cmd := exec.CommandContext(ctx, "apt-get", append(append(apt, "--print-uris", "download"), packages...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("apt-get --print-uris download (is every package in the suite's main?): %w\n%s", err, out)
	}
	var debs []string
	for _, line := range strings.Split(string(out), "\n") {
		// 'http://deb.debian.org/debian/pool/main/d/dash/dash_0.5.12-2_arm64.deb' dash_0.5.12-2_arm64.deb 94924 SHA256:...
		if f := strings.Fields(line); len(f) >= 2 && strings.HasPrefix(f[0], "'") && strings.HasSuffix(f[1], ".deb") {
			debs = append(debs, f[1])
		}
	}
	if len(debs) != len(packages) {
		return nil, fmt.Errorf("apt-get --print-uris download named %d .debs for %d packages:\n%s", len(debs), len(packages), out)
	}
	slices.Sort(debs)
	return debs, nil
}

// unpackUserland downloads u's packages (expected to be the files debs), unpacks them into dir/root and
// usr-merges it; atomically, so that a concurrent FetchUserland sees the whole root or none.
func unpackUserland(ctx context.Context, apt []string, u Userland, debs []string, dir string) error {
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("create the userland cache: %w", err)
	}
	scratch, err := os.MkdirTemp(parent, ".download-")
	if err != nil {
		return fmt.Errorf("create the userland cache: %w", err)
	}
	defer os.RemoveAll(scratch)
	download := filepath.Join(scratch, "debs")
	if err := os.Mkdir(download, 0o755); err != nil {
		return err
	}
	get := exec.CommandContext(ctx, "apt-get", append(append(apt, "download"), u.Packages...)...)
	get.Dir = download
	if out, err := get.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download: %w\n%s", err, out)
	}
	got, err := filepath.Glob(filepath.Join(download, "*.deb"))
	if err != nil {
		return err
	}
	for i := range got {
		got[i] = filepath.Base(got[i])
	}
	slices.Sort(got)
	if !slices.Equal(got, debs) {
		return fmt.Errorf("apt-get download fetched %q, want %q (did the suite change meanwhile? try again)", got, debs)
	}
	root := filepath.Join(scratch, "root")
	for _, deb := range debs {
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", filepath.Join(download, deb), root).CombinedOutput(); err != nil {
			return fmt.Errorf("dpkg-deb -x %s (is this Debian?): %w\n%s", deb, err, out)
		}
	}
	if err := mergeUsr(root); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(scratch, "packages"), []byte(strings.Join(debs, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.RemoveAll(download); err != nil {
		return err
	}
	if err := os.Rename(scratch, dir); err != nil {
		if _, statErr := os.Stat(filepath.Join(dir, "root")); statErr == nil {
			return nil // another process unpacked the same packages first
		}
		return fmt.Errorf("store the userland: %w", err)
	}
	return nil
}

// mergeUsr moves /bin, /sbin and /lib into /usr and links them there, as an installed Debian 12 has them:
// packages still ship e.g. /bin/mount, but the tools' guest paths (the host's, e.g. /usr/bin/mount) assume
// the merged layout.
func mergeUsr(root string) error {
	for _, d := range []string{"bin", "sbin", "lib"} {
		top := filepath.Join(root, d)
		fi, err := os.Lstat(top)
		if errors.Is(err, fs.ErrNotExist) || err == nil && !fi.IsDir() {
			continue
		}
		if err != nil {
			return err
		}
		if err := mergeDir(top, filepath.Join(root, "usr", d)); err != nil {
			return fmt.Errorf("usr-merge the userland: %w", err)
		}
		if err := os.Symlink("usr/"+d, top); err != nil {
			return fmt.Errorf("usr-merge the userland: %w", err)
		}
	}
	return nil
}

// mergeDir moves src's entries into dst, merging directories both have, and removes src.
func mergeDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		from, to := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		fi, err := os.Lstat(to)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Rename(from, to); err != nil {
				return err
			}
		case err != nil:
			return err
		case e.IsDir() && fi.IsDir():
			if err := mergeDir(from, to); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s and %s both exist", from, to)
		}
	}
	return os.Remove(src)
}

// resolve returns the host path of guest path p, following symlinks as the guest would: an absolute target
// is inside the root too.
func (r Root) resolve(p string) (string, error) {
	const maxLinks = 40 // as the kernel's ELOOP limit
	links := 0
	done := "/"
	rest := strings.Split(p, "/")
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			done = path.Dir(done)
			continue
		}
		next := path.Join(done, c)
		fi, err := os.Lstat(filepath.Join(r.Dir, next))
		if err != nil {
			return "", fmt.Errorf("guest path %s in the userland: %w", p, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			done = next
			continue
		}
		if links++; links > maxLinks {
			return "", fmt.Errorf("guest path %s in the userland: too many symlinks", p)
		}
		target, err := os.Readlink(filepath.Join(r.Dir, next))
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			done = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return filepath.Join(r.Dir, filepath.FromSlash(done)), nil
}

// Add adds the file or directory tree at guest path p of the root to files, at p. A symlink at p is followed
// inside the root, so its target's content lands at p; symlinks within a tree stay symlinks.
func (r Root) Add(files map[string]string, p string) error {
	if !path.IsAbs(p) {
		return fmt.Errorf("guest path %q: want an absolute path", p)
	}
	host, err := r.resolve(p)
	if err != nil {
		return err
	}
	files[p] = host
	return nil
}

// AddExecutable adds the executable at guest path exe of the root to files, at exe, with the shared libraries
// it needs (its DT_NEEDED entries, recursively, found in the root's library directories) and its dynamic loader
// (PT_INTERP), each at its guest path. A static executable or a script comes alone.
func (r Root) AddExecutable(files map[string]string, exe string) error {
	if err := r.Add(files, exe); err != nil {
		return err
	}
	return r.addLinked(files, exe, map[string]bool{})
}

// addLinked adds the loader and the libraries that the ELF file at guest path p needs, skipping those in seen.
func (r Root) addLinked(files map[string]string, p string, seen map[string]bool) error {
	f, err := elf.Open(files[p])
	var formatErr *elf.FormatError
	if errors.As(err, &formatErr) {
		return nil // not ELF: a script, whose interpreter the caller adds
	}
	if err != nil {
		return fmt.Errorf("read %s of the userland: %w", p, err)
	}
	defer f.Close()
	if want := elfMachine[r.Arch]; f.Machine != want {
		return fmt.Errorf("%s of the userland is for %v, not %v (%s)", p, f.Machine, want, r.Arch)
	}
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, prog.Filesz)
		if _, err := prog.ReadAt(b, 0); err != nil {
			return fmt.Errorf("read the loader of %s: %w", p, err)
		}
		interp := strings.TrimRight(string(b), "\x00")
		if err := r.Add(files, interp); err != nil {
			return fmt.Errorf("loader of %s: %w: add the package that has it (libc6) to Userland.Packages", p, err)
		}
		// libc names the loader in DT_NEEDED; the loaded loader satisfies that, wherever it lies (amd64: /lib64).
		seen[path.Base(interp)] = true
	}
	needed, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("read the libraries %s needs: %w", p, err)
	}
	for _, lib := range needed {
		if seen[lib] {
			continue
		}
		seen[lib] = true
		guest, err := r.findLibrary(lib)
		if err != nil {
			return fmt.Errorf("%s needs %w", p, err)
		}
		if err := r.Add(files, guest); err != nil {
			return err
		}
		if err := r.addLinked(files, guest, seen); err != nil {
			return err
		}
	}
	return nil
}

// findLibrary returns the guest path of the shared library called name in the directories the loader searches
// by default (the guest has no ld.so.cache).
func (r Root) findLibrary(name string) (string, error) {
	dirs := []string{"/lib/" + multiarch[r.Arch], "/usr/lib/" + multiarch[r.Arch], "/lib", "/usr/lib"}
	for _, dir := range dirs {
		guest := path.Join(dir, name)
		if _, err := r.resolve(guest); err == nil {
			return guest, nil
		}
	}
	return "", fmt.Errorf("%s, which is in none of the userland's %s: add the Debian package that has it to Userland.Packages",
		name, strings.Join(dirs, ", "))
}

// AddPython adds python3 with what `python3 -c` needs to start and to import ctypes (the end-to-end tests' raw
// clone(CLONE_FILES), test/e2e/planted_test.go): the standard library's top-level modules, encodings, ctypes
// and its C part with libffi.
func (r Root) AddPython(files map[string]string) error {
	if err := r.AddExecutable(files, "/usr/bin/python3"); err != nil {
		return err
	}
	libs, err := filepath.Glob(filepath.Join(r.Dir, "usr", "lib", "python3.*"))
	if err != nil || len(libs) != 1 {
		return fmt.Errorf("python's standard library in the userland: found %q, want one (add libpython3.x-minimal): %v", libs, err)
	}
	lib := "/usr/lib/" + filepath.Base(libs[0])
	modules, err := filepath.Glob(filepath.Join(libs[0], "*.py"))
	if err != nil {
		return err
	}
	for _, m := range modules {
		if err := r.Add(files, path.Join(lib, filepath.Base(m))); err != nil {
			return err
		}
	}
	for _, dir := range []string{"encodings", "ctypes"} {
		if err := r.Add(files, path.Join(lib, dir)); err != nil {
			return fmt.Errorf("python's %s (add libpython3.x-stdlib): %w", dir, err)
		}
	}
	cmod, err := filepath.Glob(filepath.Join(libs[0], "lib-dynload", "_ctypes.cpython-*.so"))
	if err != nil || len(cmod) != 1 {
		return fmt.Errorf("python's _ctypes module in the userland: found %q, want one (add libpython3.x-stdlib): %v", cmod, err)
	}
	return r.AddExecutable(files, path.Join(lib, "lib-dynload", filepath.Base(cmod[0])))
}
