package vm_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"escapewatch/internal/testutil"
	"escapewatch/internal/testutil/vm"
)

var debian61 = vm.Debian61

// bpfLSM is the LSM list that enables BPF LSM on a kernel that has it built in but not enabled.
const bpfLSM = "lsm=lockdown,capability,landlock,bpf"

// probeLines is how many 101-byte lines the probe prints: over 64 KiB, more than any buffer on the way.
const probeLines = 2000

// fetchKernel returns the Debian 6.1 kernel image, downloading it on first use.
func fetchKernel(t *testing.T) string {
	t.Helper()
	testutil.RequirePrivileged(t)
	testutil.RequireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	dir, err := vm.DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	kernel, err := vm.FetchKernel(t.Context(), debian61, dir)
	if err != nil {
		t.Fatal(err)
	}
	return kernel
}

// buildProbe builds testdata/probe as a static binary.
func buildProbe(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "probe")
	cmd := exec.Command("go", "build", "-o", bin, "./testdata/probe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the probe: %v\n%s", err, out)
	}
	return bin
}

func TestPrivilegedBootDebian61(t *testing.T) {
	kernel := fetchKernel(t)
	files := map[string]string{"/probe": buildProbe(t)}
	// cat is dynamically linked: the guest runs it only if AddExecutable brought its libraries and loader.
	if err := vm.AddExecutable(files, "/bin/cat"); err != nil {
		t.Fatal(err)
	}
	res, err := vm.Run(t.Context(), vm.Config{
		Kernel:  kernel,
		Cmdline: bpfLSM,
		Files:   files,
		Argv:    []string{"/probe", "/bin/cat", fmt.Sprint(probeLines)},
		Timeout: 5 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot to command: %v, output: %d bytes", res.Boot, len(res.Output))
	if res.ExitCode != 3 {
		t.Fatalf("exit code %d, want 3; output:\n%s\nconsole:\n%s", res.ExitCode, res.Output, res.Console)
	}
	checkProbeOutput(t, string(res.Output))
}

// checkProbeOutput checks the probe's report and that every one of its lines arrived, in order.
func checkProbeOutput(t *testing.T, out string) {
	t.Helper()
	values := map[string][]string{}
	var lines []string
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			values[k] = append(values[k], v)
		} else if strings.HasPrefix(line, "line ") || line == "probe-end" {
			lines = append(lines, line)
		}
	}
	if r := values["release"]; len(r) != 1 || !strings.HasPrefix(r[0], "6.1.") {
		t.Errorf("release %q, want 6.1.*", r)
	}
	if l := values["lsm"]; len(l) != 1 || !strings.Contains(","+l[0]+",", ",bpf,") {
		t.Errorf("active LSMs %q, want bpf among them", l)
	}
	if v := values["version"]; len(v) != 1 || !strings.HasPrefix(v[0], "Linux version 6.1.") {
		t.Errorf("/bin/cat /proc/version printed %q, want Linux version 6.1.*", v)
	}
	if s := values["stderr"]; len(s) != 1 || s[0] != "ok" {
		t.Errorf("stderr line %q, want ok", s)
	}
	for _, want := range []string{"/sys/fs/bpf bpf", "/sys/fs/cgroup cgroup2", "/sys/kernel/security securityfs", "/sys/kernel/tracing tracefs", "/tmp tmpfs"} {
		if !strings.Contains(strings.Join(values["mount"], "\n"), want) {
			t.Errorf("no mount %q in %q", want, values["mount"])
		}
	}
	if len(lines) != probeLines+1 || lines[len(lines)-1] != "probe-end" {
		t.Fatalf("got %d numbered lines and the end line, want %d; output ends with %q", len(lines), probeLines+1, out[max(0, len(out)-300):])
	}
	for i, line := range lines[:probeLines] {
		if want := fmt.Sprintf("line %05d %s", i, strings.Repeat("x", 90)); line != want {
			t.Fatalf("line %d is %q, want %q", i, line, want)
		}
	}
}

func TestPrivilegedMissingCommand(t *testing.T) {
	kernel := fetchKernel(t)
	res, err := vm.Run(t.Context(), vm.Config{Kernel: kernel, Argv: []string{"/no/such/command"}, Timeout: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 127 || !strings.Contains(string(res.Output), `cannot run "/no/such/command"`) {
		t.Fatalf("exit code %d, output %q: want 127 and the reason", res.ExitCode, res.Output)
	}
}

// arm64Tools are the arm64 userland's executables the arm64 test runs (the end-to-end suite's guest tools).
var arm64Tools = []string{
	"/bin/sh", "/usr/bin/unshare", "/usr/bin/mount", "/usr/bin/umount", "/usr/bin/setpriv", "/usr/sbin/runc", "/bin/busybox",
	"/usr/bin/mkdir", "/usr/bin/touch", "/usr/bin/tee", "/usr/bin/dd", "/usr/bin/cp", "/usr/bin/cat", "/usr/bin/uname",
	"/usr/bin/true",
}

// arm64Script runs in the arm64 guest what the end-to-end suite needs from its tools and kernel, printing a line
// per check (each on its own line: set -e ignores a failure on the left of &&); set -e ends it at the first failure, so the exit status 7 says every check ran.
const arm64Script = `set -e
echo "arch=$(uname -m)"
python3 -c 'import ctypes, os; print("python pid=%d" % os.getpid())'
unshare --mount --pid --fork true
echo unshare=ok
setpriv --help >/dev/null
echo setpriv=ok
runc --version
busybox true
echo busybox=ok
mkdir /tmp/h
mount -t cgroup -o none,name=ewtest cgroup /tmp/h
echo "release_agent=[$(cat /tmp/h/release_agent)]"
umount /tmp/h
echo hello | tee /tmp/a >/dev/null
cp /tmp/a /tmp/b
dd if=/tmp/b of=/tmp/c 2>/dev/null
touch /tmp/d
echo "copied=$(cat /tmp/c)"
test -e /sys/kernel/btf/vmlinux
echo btf=ok
echo "lsm=$(cat /sys/kernel/security/lsm)"
exit 7
`

func TestPrivilegedBootDebian61Arm64(t *testing.T) {
	testutil.RequirePrivileged(t)
	qemu, pkg, err := vm.Qemu("arm64")
	if err != nil {
		t.Fatal(err)
	}
	testutil.RequireTool(t, qemu, pkg)
	testutil.RequireTool(t, "apt-get", "apt")
	testutil.RequireTool(t, "dpkg-deb", "dpkg")
	dir, err := vm.DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	kernel, err := vm.FetchKernel(t.Context(), vm.Debian61Arm64, dir)
	if err != nil {
		t.Fatal(err)
	}
	root, err := vm.FetchUserland(t.Context(), vm.Arm64Userland, dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, tool := range arm64Tools {
		if err := root.AddExecutable(files, tool); err != nil {
			t.Fatal(err)
		}
	}
	if err := root.AddPython(files); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := vm.Run(t.Context(), vm.Config{
		Kernel:  kernel,
		Arch:    vm.Debian61Arm64.GOARCH(),
		Cmdline: bpfLSM,
		Files:   files,
		Argv:    []string{"/bin/sh", "-c", arm64Script},
		Timeout: 5 * time.Minute,
	})
	if err != nil {
		t.Fatalf("%v\noutput:\n%s", err, res.Output)
	}
	t.Logf("boot to command: %v, whole run: %v, output:\n%s", res.Boot, time.Since(start), res.Output)
	if res.ExitCode != 7 {
		t.Fatalf("exit code %d, want 7 (the script's end); output:\n%s\nconsole tail:\n%s", res.ExitCode, res.Output, lastLines(res.Console, 30))
	}
	out := string(res.Output)
	for _, want := range []string{
		"arch=aarch64\n", "python pid=", "unshare=ok\n", "setpriv=ok\n", "runc version ", "busybox=ok\n",
		"release_agent=[]\n", "copied=hello\n", "btf=ok\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the output", want)
		}
	}
	if _, lsm, _ := strings.Cut(out, "lsm="); !strings.Contains(","+strings.TrimSpace(lsm)+",", ",bpf,") {
		t.Errorf("active LSMs %q, want bpf among them", lsm)
	}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
