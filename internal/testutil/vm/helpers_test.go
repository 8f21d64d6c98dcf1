package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseLdd(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    []string
		wantErr string
	}{
		{
			name: "dynamic",
			out: "\tlinux-vdso.so.1 (0x00007ffd2a3f4000)\n" +
				"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e8e000000)\n" +
				"\t/lib64/ld-linux-x86-64.so.2 (0x00007f0e8e2a0000)\n",
			want: []string{"/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"},
		},
		{name: "static-pie", out: "\tstatically linked\n"},
		{
			name:    "missing library",
			out:     "\tlibfoo.so.1 => not found\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x1)\n",
			wantErr: "ldd found no libfoo.so.1",
		},
		{name: "empty", out: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseLdd(tt.out)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("parseLdd = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestAddExecutable(t *testing.T) {
	files := map[string]string{}
	if err := AddExecutable(files, "/bin/cat"); err != nil {
		t.Fatal(err)
	}
	if files["/bin/cat"] != "/bin/cat" || !slices.ContainsFunc(slices.Collect(maps.Keys(files)), isLoader) {
		t.Fatalf("files %q: want /bin/cat and the dynamic loader", files)
	}

	static := filepath.Join(t.TempDir(), "init")
	bin, err := guestInit(t.Context(), "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(static, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	files = map[string]string{}
	if err := AddExecutable(files, static); err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 {
		t.Fatalf("static executable: files %q, want it alone", files)
	}

	if err := AddExecutable(files, "relative/path"); err == nil {
		t.Fatal("a relative path was accepted")
	}
}

func isLoader(p string) bool { return strings.Contains(filepath.Base(p), "ld-linux") }

func TestDefaultCacheDir(t *testing.T) {
	t.Setenv(CacheDirEnv, "/some/where")
	if dir, err := DefaultCacheDir(); err != nil || dir != "/some/where" {
		t.Fatalf("DefaultCacheDir = %q, %v; want the environment's", dir, err)
	}
	t.Setenv(CacheDirEnv, "")
	t.Setenv("XDG_CACHE_HOME", "/cache")
	if dir, err := DefaultCacheDir(); err != nil || dir != "/cache/escapewatch-vm" {
		t.Fatalf("DefaultCacheDir = %q, %v; want /cache/escapewatch-vm", dir, err)
	}
}

func TestParseExitMarker(t *testing.T) {
	tests := []struct {
		line string
		code int
		ok   bool
	}{
		{"ESCAPEWATCH-VM-EXIT 0", 0, true},
		{"ESCAPEWATCH-VM-EXIT 137\r", 137, true},
		{"[    3.2] random: crng initESCAPEWATCH-VM-EXIT 3", 3, true},
		{"ESCAPEWATCH-VM-EXIT", 0, false},
		{"ESCAPEWATCH-VM-EXIT x", 0, false},
		{"ESCAPEWATCH-VM-START", 0, false},
	}
	for _, tt := range tests {
		code, ok := parseExitMarker(tt.line)
		if code != tt.code || ok != tt.ok {
			t.Errorf("parseExitMarker(%q) = %d, %v; want %d, %v", tt.line, code, ok, tt.code, tt.ok)
		}
	}
}

// TestConsoleMarkersAcrossWrites feeds the console in pieces that split the marker lines.
func TestConsoleMarkersAcrossWrites(t *testing.T) {
	c := &console{exited: make(chan struct{})}
	text := "[ 1.0] Run /init\r\nESCAPEWATCH-VM-START\r\n\r\nESCAPEWATCH-VM-EXIT 42\r\n"
	for i := 0; i < len(text); i += 5 {
		if _, err := c.Write([]byte(text[i:min(i+5, len(text))])); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-c.exited:
	default:
		t.Fatal("the exit marker was not noticed")
	}
	started, code, ok := c.result()
	if started.IsZero() || code != 42 || !ok || string(c.bytes()) != text {
		t.Fatalf("result %v, %d, %v, console %q", started, code, ok, c.bytes())
	}
}

func TestNoExitError(t *testing.T) {
	expired, cancel := context.WithDeadline(t.Context(), time.Now())
	defer cancel()
	canceled, cancel2 := context.WithCancel(t.Context())
	cancel2()
	console := []byte("line 1\nKernel panic - not syncing: no init\n")
	tests := []struct {
		name    string
		ctx     context.Context
		started bool
		qemuErr error
		want    string
	}{
		{"boot hang", expired, false, nil, "before the command started"},
		{"slow command", expired, true, nil, "the command started but did not finish"},
		{"canceled", canceled, false, nil, "canceled"},
		{"qemu error", t.Context(), false, errors.New("exit status 1"), "qemu failed: exit status 1"},
		{"panic", t.Context(), false, nil, "Kernel panic"},
	}
	for _, tt := range tests {
		err := noExitError(tt.ctx, time.Minute, tt.started, tt.qemuErr, "", console)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	if err := os.WriteFile(kernel, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []Config{
		{Kernel: "/no/such/kernel", Argv: []string{"/bin/true"}},
		{Kernel: kernel},
		{Kernel: kernel, Argv: []string{"true"}},
	} {
		if _, err := Run(t.Context(), cfg); err == nil {
			t.Errorf("Run(%+v) gave no error", cfg)
		}
	}
}

func TestWithDefaults(t *testing.T) {
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	if err := os.WriteFile(kernel, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := withDefaults(Config{Kernel: kernel, Argv: []string{"/x"}, Env: []string{"A=1"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Env, []string{"A=1", defaultPath}) || cfg.Dir != "/" || cfg.MemoryMB != 2048 || cfg.CPUs != 2 || cfg.Timeout != 10*time.Minute {
		t.Fatalf("defaults %+v", cfg)
	}
	cfg, err = withDefaults(Config{Kernel: kernel, Argv: []string{"/x"}, Env: []string{"PATH=/opt"}})
	if err != nil || !slices.Equal(cfg.Env, []string{"PATH=/opt"}) {
		t.Fatalf("a given PATH was changed: %q, %v", cfg.Env, err)
	}
}

// cpioEntry is one entry read back by readCpio.
type cpioEntry struct {
	name      string
	mode      uint32
	rdevMajor uint32
	rdevMinor uint32
	data      string
}

// readCpio reads a newc archive up to its trailer, checking the magic and the 4-byte alignment.
func readCpio(t *testing.T, archive []byte) []cpioEntry {
	t.Helper()
	r := bytes.NewReader(archive)
	var entries []cpioEntry
	for {
		hdr := make([]byte, 110)
		if _, err := io.ReadFull(r, hdr); err != nil {
			t.Fatalf("read header: %v", err)
		}
		if string(hdr[:6]) != "070701" {
			t.Fatalf("magic %q at offset %d", hdr[:6], len(archive)-r.Len()-110)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("header field %d: %v", i, err)
			}
			return uint32(v)
		}
		name := readPadded(t, r, archive, int(field(11)))
		if name[len(name)-1] != 0 {
			t.Fatalf("name %q is not NUL-terminated", name)
		}
		e := cpioEntry{name: string(name[:len(name)-1]), mode: field(1), rdevMajor: field(9), rdevMinor: field(10)}
		if e.name == cpioTrailer {
			return entries
		}
		e.data = string(readPadded(t, r, archive, int(field(6))))
		entries = append(entries, e)
	}
}

func readPadded(t *testing.T, r *bytes.Reader, archive []byte, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	if off := len(archive) - r.Len(); off%4 != 0 {
		if _, err := r.Seek(int64(4-off%4), io.SeekCurrent); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestInitramfsRoundTrip(t *testing.T) {
	host := t.TempDir()
	tree := filepath.Join(host, "tree")
	mustWrite(t, filepath.Join(tree, "sub", "a.txt"), "hello", 0o640)
	mustWrite(t, filepath.Join(tree, "b"), "", 0o600)
	if err := os.Symlink("sub/a.txt", filepath.Join(tree, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tree, 0o750); err != nil {
		t.Fatal(err)
	}
	// A symlink named in Files is followed, to a directory as to a file.
	treeLink := filepath.Join(host, "tree-link")
	if err := os.Symlink(tree, treeLink); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(host, "exe")
	mustWrite(t, exe, "odd-sized!", 0o755)
	if err := os.Chmod(exe, 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(host, "initramfs.cpio")
	err := writeInitramfs(dst, func(b *initramfs) error {
		if err := b.addBytes("/init", 0o755, []byte("#!")); err != nil {
			return err
		}
		if err := b.addCharDev("/dev/console", 0o600, 5, 1); err != nil {
			return err
		}
		return b.addFiles(map[string]string{"/usr/bin/exe": exe, "/opt/tree": treeLink})
	})
	if err != nil {
		t.Fatal(err)
	}
	archive, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	want := []cpioEntry{
		{name: "init", mode: syscall.S_IFREG | 0o755, data: "#!"},
		{name: "dev", mode: syscall.S_IFDIR | 0o755},
		{name: "dev/console", mode: syscall.S_IFCHR | 0o600, rdevMajor: 5, rdevMinor: 1},
		{name: "opt", mode: syscall.S_IFDIR | 0o755},
		{name: "opt/tree", mode: syscall.S_IFDIR | 0o750},
		{name: "opt/tree/b", mode: syscall.S_IFREG | 0o600},
		{name: "opt/tree/link", mode: syscall.S_IFLNK | 0o777, data: "sub/a.txt"},
		{name: "opt/tree/sub", mode: syscall.S_IFDIR | 0o755},
		{name: "opt/tree/sub/a.txt", mode: syscall.S_IFREG | 0o640, data: "hello"},
		{name: "usr", mode: syscall.S_IFDIR | 0o755},
		{name: "usr/bin", mode: syscall.S_IFDIR | 0o755},
		{name: "usr/bin/exe", mode: syscall.S_IFREG | syscall.S_ISUID | 0o755, data: "odd-sized!"},
	}
	if got := readCpio(t, archive); !slices.Equal(got, want) {
		t.Fatalf("archive holds\n%s\nwant\n%s", formatEntries(got), formatEntries(want))
	}
}

func mustWrite(t *testing.T, p, data string, perm os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), perm); err != nil {
		t.Fatal(err)
	}
	// WriteFile's permissions pass through the umask.
	if err := os.Chmod(p, perm); err != nil {
		t.Fatal(err)
	}
}

func formatEntries(entries []cpioEntry) string {
	var b strings.Builder
	for _, e := range entries {
		fmt.Fprintf(&b, "%s %o %d,%d %q\n", e.name, e.mode, e.rdevMajor, e.rdevMinor, e.data)
	}
	return b.String()
}

func TestInitramfsRejects(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	mustWrite(t, file, "x", 0o644)
	tests := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"relative", map[string]string{"bin/f": file}, "want a clean absolute path"},
		{"unclean", map[string]string{"/bin/../f": file}, "want a clean absolute path"},
		{"root", map[string]string{"/": file}, "want a clean absolute path"},
		{"init's own", map[string]string{"/init": file}, "given twice"},
		{"missing host file", map[string]string{"/f": "/no/such/file"}, "no such file"},
		{"device", map[string]string{"/null": "/dev/null"}, "only regular files, directories and symlinks"},
	}
	for _, tt := range tests {
		err := writeInitramfs(filepath.Join(t.TempDir(), "initramfs"), func(b *initramfs) error {
			if err := b.addBytes("/init", 0o755, nil); err != nil {
				return err
			}
			return b.addFiles(tt.files)
		})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

// fakeRoot makes a root from links (guest path -> symlink target) and files (guest path -> host file to copy).
func fakeRoot(t *testing.T, links, files map[string]string) Root {
	t.Helper()
	r := Root{Dir: t.TempDir(), Arch: "amd64"}
	for g, target := range links {
		p := filepath.Join(r.Dir, g)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	for g, host := range files {
		data, err := os.ReadFile(host)
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, filepath.Join(r.Dir, g), string(data), 0o755)
	}
	return r
}

func TestRootResolve(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	mustWrite(t, file, "x", 0o644)
	r := fakeRoot(t, map[string]string{
		"/lib":                "usr/lib",
		"/usr/bin/python3":    "python3.11",
		"/usr/lib/abs":        "/usr/lib/x/real",
		"/usr/lib/x/up":       "../x/real",
		"/usr/lib/x/dangling": "/etc/host-only",
		"/usr/lib/x/loop":     "loop",
		"/usr/lib/x/escape":   "../../../../../x/real",
	}, map[string]string{"/usr/bin/python3.11": file, "/usr/lib/x/real": file})
	tests := []struct {
		guest, want, wantErr string
	}{
		{guest: "/usr/bin/python3", want: "/usr/bin/python3.11"},
		{guest: "/lib/x/real", want: "/usr/lib/x/real"},
		{guest: "/lib/abs", want: "/usr/lib/x/real"}, // an absolute target stays in the root
		{guest: "/lib/x/up", want: "/usr/lib/x/real"},
		{guest: "/usr/lib/x/escape", wantErr: "no such file"}, // .. stops at the root: /x/real
		{guest: "/usr/lib/x/dangling", wantErr: "no such file"},
		{guest: "/usr/lib/x/loop", wantErr: "too many symlinks"},
	}
	for _, tt := range tests {
		got, err := r.resolve(tt.guest)
		switch {
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("resolve(%s) = %q, %v; want an error containing %q", tt.guest, got, err, tt.wantErr)
			}
		case err != nil || got != filepath.Join(r.Dir, tt.want):
			t.Errorf("resolve(%s) = %q, %v; want %s in the root", tt.guest, got, err, tt.want)
		}
	}
}

func TestMergeUsr(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	mustWrite(t, file, "x", 0o644)
	r := fakeRoot(t, map[string]string{"/bin/sh": "dash"},
		map[string]string{"/bin/dash": file, "/usr/bin/env": file, "/lib/aarch64-linux-gnu/libc.so.6": file, "/usr/lib/aarch64-linux-gnu/libz.so.1": file})
	if err := mergeUsr(r.Dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/bin/sh", "/usr/bin/dash", "/usr/bin/env", "/lib/aarch64-linux-gnu/libz.so.1", "/usr/lib/aarch64-linux-gnu/libc.so.6"} {
		if _, err := r.resolve(p); err != nil {
			t.Errorf("after the merge: %v", err)
		}
	}
	if target, err := os.Readlink(filepath.Join(r.Dir, "bin")); err != nil || target != "usr/bin" {
		t.Errorf("/bin links to %q, %v; want usr/bin", target, err)
	}

	clash := fakeRoot(t, nil, map[string]string{"/bin/mount": file, "/usr/bin/mount": file})
	if err := mergeUsr(clash.Dir); err == nil || !strings.Contains(err.Error(), "both exist") {
		t.Errorf("a file in both /bin and /usr/bin: error %v, want one saying so", err)
	}
}

// TestRootAddExecutable reads the host's dynamically linked cat in a root made of host files: its libraries come
// from DT_NEEDED and its loader from PT_INTERP, with no ldd.
func TestRootAddExecutable(t *testing.T) {
	hostFiles := map[string]string{}
	if err := AddExecutable(hostFiles, "/usr/bin/cat"); err != nil {
		t.Fatal(err)
	}
	root := map[string]string{"/usr/bin/cat": "/usr/bin/cat"}
	for g, h := range hostFiles {
		if isLoader(g) {
			root[g] = h
		}
	}
	r := fakeRoot(t, nil, root)
	files := map[string]string{}
	err := r.AddExecutable(files, "/usr/bin/cat")
	if err == nil || !strings.Contains(err.Error(), "libc.so.6") || !strings.Contains(err.Error(), "Userland.Packages") {
		t.Fatalf("no libraries in the root: error %v, want one naming libc.so.6 and the fix", err)
	}

	// The host's cat, libraries and loader, each at its host path (guest paths are alike), make a root that works.
	r = fakeRoot(t, nil, hostFiles)
	files = map[string]string{}
	if err := r.AddExecutable(files, "/usr/bin/cat"); err != nil {
		t.Fatal(err)
	}
	for g := range hostFiles {
		if _, ok := files[g]; !ok {
			t.Errorf("ldd names %s, the root's AddExecutable did not: %q", g, slices.Sorted(maps.Keys(files)))
		}
	}
	if !slices.ContainsFunc(slices.Collect(maps.Keys(files)), isLoader) {
		t.Errorf("files %q: no loader", files)
	}

	r.Arch = "arm64"
	if err := r.AddExecutable(map[string]string{}, "/usr/bin/cat"); err == nil || !strings.Contains(err.Error(), "EM_X86_64") {
		t.Errorf("an amd64 executable in an arm64 root: error %v, want one naming its machine", err)
	}
}

func TestQemuArgs(t *testing.T) {
	tests := []struct {
		arch   string
		icount bool
		want   []string // in order, each a whole argument
	}{
		{"amd64", false, []string{"-no-reboot", "-cpu", "max", "-kernel", "/k", "console=ttyS0 panic=-1 softlockup_panic=1 softlockup_all_cpu_backtrace=1 watchdog_thresh=30 lsm=bpf",
			"-serial", "stdio", "-serial", "chardev:output"}},
		{"amd64", true, []string{"-smp", "1", "-icount", "shift=0,sleep=off"}},
		{"arm64", false, []string{"-no-reboot", "-machine", "virt", "-kernel", "/k", "console=ttyAMA0 panic=-1 softlockup_panic=1 softlockup_all_cpu_backtrace=1 watchdog_thresh=30 lsm=bpf",
			"-serial", "stdio", "-device", "pci-serial,chardev=output"}},
	}
	for _, tt := range tests {
		m, err := machineFor(tt.arch)
		if err != nil {
			t.Fatal(err)
		}
		cfg := Config{Kernel: "/k", Cmdline: "lsm=bpf", MemoryMB: 1, CPUs: 2, Icount: tt.icount}
		if tt.icount {
			cfg.CPUs = 1 // as withDefaults sets it
		}
		args := qemuArgs(m, cfg, "/initrd", "/out")
		rest := args
		for _, w := range tt.want {
			i := slices.Index(rest, w)
			if i < 0 {
				t.Errorf("%s: no %q (in order) in %q", tt.arch, w, args)
				break
			}
			rest = rest[i+1:]
		}
	}
}

func TestRunNamesTheQemuPackage(t *testing.T) {
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	if err := os.WriteFile(kernel, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir())
	tests := []struct{ arch, want string }{
		{"", "qemu-system-x86_64 not found: apt-get install qemu-system-x86"},
		{"arm64", "qemu-system-aarch64 not found: apt-get install qemu-system-arm"},
		{"riscv64", `guest architecture "riscv64": want amd64 or arm64`},
	}
	for _, tt := range tests {
		_, err := Run(t.Context(), Config{Kernel: kernel, Arch: tt.arch, Argv: []string{"/x"}})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("arch %q: error %v, want one containing %q", tt.arch, err, tt.want)
		}
	}
}
