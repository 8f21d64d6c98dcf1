// Package vm runs one command as root inside a throwaway qemu VM, so that privileged tests can run on
// kernels other than the host's. The guest root is an initramfs holding only the files the caller names
// and a small static init (package guestinit); the command's output comes back over a second serial
// port and its exit status as a marker line on the console.
//
// qemu runs under TCG, as -enable-kvm hangs on the machines this project runs on; a Debian 6.1 kernel
// still boots to the command in about 3 s. Guests are amd64 (a PC) or arm64 (qemu's virt board), whatever
// the host's architecture. The output port carries about 100-250 KB/s (small writes are
// the slow end), plenty for test logs but not for bulk data.
package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"escapewatch/internal/testutil/vm/internal/protocol"
)

// Config describes one run.
type Config struct {
	Kernel   string            // path to the kernel image
	Arch     string            // the guest's GOARCH, the kernel's (Kernel.Arch): "amd64" (the default) or "arm64"
	Cmdline  string            // extra kernel command line (e.g. "lsm=lockdown,capability,landlock,bpf")
	Files    map[string]string // guest path -> host path; regular files copied with their mode; directories copied recursively
	Argv     []string          // command to run in the guest (absolute guest path first)
	Env      []string          // environment for the command (PATH is set to /bin:/usr/bin:/sbin:/usr/sbin if absent)
	Dir      string            // working dir in the guest (default "/")
	MemoryMB int               // default 2048
	CPUs     int               // default 2 (1 with Icount)
	// Icount makes the guest clock count executed instructions (qemu -icount shift=0,sleep=off: one ns each) on
	// one CPU: a loop the guest times then measures instructions, the same within 1 % from run to run, whatever
	// the host's load. For cost figures; the guest runs slower.
	Icount  bool
	Timeout time.Duration // whole run incl. boot; default 10 min
}

// Result is what a run produced.
type Result struct {
	ExitCode int           // the command's exit status inside the guest (-1 when it never reported one)
	Output   []byte        // what the command wrote to stdout+stderr (via the output serial port)
	Console  []byte        // the guest console (kernel log + init messages), for diagnosing failures
	Boot     time.Duration // time from qemu start until the command started
}

// machine is how qemu emulates one guest architecture.
type machine struct {
	qemu, debianPackage string   // the emulator and the Debian package that has it
	args                []string // machine and CPU
	console             string   // the kernel's console device, on qemu's first -serial (stdio)
	output              string   // the guest device that carries the command's output (protocol.Command.Output)
	outputArgs          []string // connect that device to the chardev "output"
}

// One host thread runs the vCPUs in turn (thread=single): a guest hang seen with multi-threaded TCG (a soft
// lockup in cgroup_mkdir, waiting on the other vCPU during text patching) cannot come from a race between
// emulator threads then. Never KVM (see the package comment).
var machines = map[string]machine{
	"amd64": {
		qemu: "qemu-system-x86_64", debianPackage: "qemu-system-x86",
		args:    []string{"-accel", "tcg,thread=single", "-cpu", "max"},
		console: "ttyS0", output: "/dev/ttyS1",
		outputArgs: []string{"-serial", "chardev:output"},
	},
	// The virt board has one UART (a PL011, ttyAMA0), so the output goes to a PCI 16550, which Debian's arm64
	// kernel drives with its built-in 8250 driver; having no ISA ports, it numbers that one ttyS0.
	"arm64": {
		qemu: "qemu-system-aarch64", debianPackage: "qemu-system-arm",
		// pauth-impdef: TCG emulates the architected pointer authentication cipher (QARMA) slowly; qemu's own
		// hash boots to the command in 5 s instead of 18.
		args:    []string{"-machine", "virt", "-accel", "tcg,thread=single", "-cpu", "max,pauth-impdef=on"},
		console: "ttyAMA0", output: "/dev/ttyS0",
		outputArgs: []string{"-device", "pci-serial,chardev=output"},
	},
}

// Qemu returns the qemu binary that runs guests of architecture arch (a GOARCH; "" is amd64) and the Debian
// package that has it.
func Qemu(arch string) (binary, debianPackage string, err error) {
	m, err := machineFor(arch)
	return m.qemu, m.debianPackage, err
}

func machineFor(arch string) (machine, error) {
	if arch == "" {
		arch = "amd64"
	}
	m, ok := machines[arch]
	if !ok {
		return m, fmt.Errorf("guest architecture %q: want amd64 or arm64", arch)
	}
	return m, nil
}

const (
	defaultPath = "PATH=/bin:/usr/bin:/sbin:/usr/sbin"
	// consoleTail is how many console lines an error quotes.
	consoleTail = 40
)

// Run builds the initramfs, boots qemu, waits for the exit marker or the timeout, and always kills qemu.
// An error means the VM could not be run (qemu missing, boot failure, timeout without marker); a failing
// command is not an error but a non-zero Result.ExitCode. The Result holds what was collected either way.
func Run(ctx context.Context, cfg Config) (Result, error) {
	res := Result{ExitCode: -1}
	cfg, err := withDefaults(cfg)
	if err != nil {
		return res, err
	}
	m, err := machineFor(cfg.Arch)
	if err != nil {
		return res, err
	}
	qemu, err := exec.LookPath(m.qemu)
	if err != nil {
		return res, fmt.Errorf("%s not found: apt-get install %s: %w", m.qemu, m.debianPackage, err)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "escapewatch-vm-")
	if err != nil {
		return res, fmt.Errorf("create a scratch directory for the VM: %w", err)
	}
	defer os.RemoveAll(dir)
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := buildInitramfs(ctx, initrd, cfg, m.output); err != nil {
		return res, err
	}
	output := filepath.Join(dir, "output")
	return boot(ctx, qemu, qemuArgs(m, cfg, initrd, output), output, cfg.Timeout)
}

// withDefaults checks cfg and fills in the defaults.
func withDefaults(cfg Config) (Config, error) {
	if _, err := os.Stat(cfg.Kernel); err != nil {
		return cfg, fmt.Errorf("kernel image (get one with FetchKernel): %w", err)
	}
	if len(cfg.Argv) == 0 || !path.IsAbs(cfg.Argv[0]) {
		return cfg, fmt.Errorf("argv %q: want an absolute guest path first", cfg.Argv)
	}
	if !hasVar(cfg.Env, "PATH") {
		cfg.Env = append(append([]string(nil), cfg.Env...), defaultPath)
	}
	if cfg.Dir == "" {
		cfg.Dir = "/"
	}
	if cfg.Arch == "" {
		cfg.Arch = "amd64"
	}
	if cfg.MemoryMB == 0 {
		cfg.MemoryMB = 2048
	}
	if cfg.Icount {
		cfg.CPUs = 1 // instructions of one CPU: several would interleave by the host's scheduling
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 2
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Minute
	}
	return cfg, nil
}

func hasVar(env []string, name string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, name+"=") {
			return true
		}
	}
	return false
}

// buildInitramfs writes the guest root: the init, the command for it (with output, the guest device of the
// output port), the console device it starts with, and cfg.Files.
func buildInitramfs(ctx context.Context, dst string, cfg Config, output string) error {
	initBin, err := guestInit(ctx, cfg.Arch)
	if err != nil {
		return err
	}
	command, err := json.Marshal(protocol.Command{Argv: cfg.Argv, Env: cfg.Env, Dir: cfg.Dir, Output: output})
	if err != nil {
		return err
	}
	return writeInitramfs(dst, func(b *initramfs) error {
		if err := b.addBytes("/init", 0o755, initBin); err != nil {
			return err
		}
		if err := b.addBytes(protocol.CommandPath, 0o644, command); err != nil {
			return err
		}
		// The kernel gives init its stdin, stdout and stderr from /dev/console before anything is mounted.
		if err := b.addCharDev("/dev/console", 0o600, 5, 1); err != nil {
			return err
		}
		return b.addFiles(cfg.Files)
	})
}

// guestInitCache holds the guest init once built, per architecture: it is the same for every run of a process.
var guestInitCache struct {
	sync.Mutex
	bin map[string][]byte // by GOARCH
}

// guestInit returns the guest init binary for arch, building it on first use; a failed build is tried again.
func guestInit(ctx context.Context, arch string) ([]byte, error) {
	guestInitCache.Lock()
	defer guestInitCache.Unlock()
	if guestInitCache.bin[arch] == nil {
		bin, err := buildGuestInit(ctx, arch)
		if err != nil {
			return nil, err
		}
		if guestInitCache.bin == nil {
			guestInitCache.bin = map[string][]byte{}
		}
		guestInitCache.bin[arch] = bin
	}
	return guestInitCache.bin[arch], nil
}

// buildGuestInit compiles the guest init as a static binary for arch and returns it.
func buildGuestInit(ctx context.Context, arch string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "escapewatch-vm-init-")
	if err != nil {
		return nil, fmt.Errorf("build the guest init: %w", err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "init")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "escapewatch/internal/testutil/vm/guestinit")
	// Build from this package's directory, so that any working directory of the caller will do.
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		cmd.Dir = filepath.Dir(file)
	}
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build the guest init (needs the go tool and this module's source): %w\n%s", err, out)
	}
	return os.ReadFile(bin)
}

// qemuArgs returns qemu's command line for machine m: the console on stdout, the command's output to file
// output. -no-reboot turns the guest's reboot, and so a panic (panic=-1), into qemu's exit.
func qemuArgs(m machine, cfg Config, initrd, output string) []string {
	args := []string{"-nographic", "-nodefaults", "-no-reboot"}
	args = append(args, m.args...)
	args = append(args,
		"-m", strconv.Itoa(cfg.MemoryMB), "-smp", strconv.Itoa(cfg.CPUs),
		"-kernel", cfg.Kernel, "-initrd", initrd,
		// A soft lockup (no progress for 2 x watchdog_thresh = 60 s, far above any stall of a loaded host) prints
		// every CPU's stack, the stuck one's included, then panics: qemu exits at once and the error holds the report.
		"-append", strings.TrimSpace("console="+m.console+" panic=-1 softlockup_panic=1 softlockup_all_cpu_backtrace=1 watchdog_thresh=30 "+cfg.Cmdline),
		"-serial", "stdio",
		"-chardev", "file,id=output,path="+strings.ReplaceAll(output, ",", ",,"),
	)
	if cfg.Icount {
		args = append(args, "-icount", "shift=0,sleep=off")
	}
	return append(args, m.outputArgs...)
}

// boot runs qemu until the guest reports the command's exit status, then kills it.
func boot(ctx context.Context, qemu string, args []string, output string, timeout time.Duration) (Result, error) {
	res := Result{ExitCode: -1}
	con := &console{exited: make(chan struct{})}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.Stdout, cmd.Stderr = con, &stderr
	cmd.WaitDelay = 5 * time.Second // qemu's output pipes close with it
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("start %s: %w", qemu, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var qemuErr error
	select {
	case <-con.exited:
		// The guest drained the output port before printing the marker, so nothing is left to wait for.
		_ = cmd.Process.Kill()
		<-waited
	case qemuErr = <-waited:
	}
	started, code, ok := con.result()
	res.Console = con.bytes()
	if !started.IsZero() {
		res.Boot = started.Sub(start)
	}
	var err error
	if res.Output, err = os.ReadFile(output); err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, fmt.Errorf("read the guest output: %w", err)
	}
	if ok {
		res.ExitCode = code
		return res, nil
	}
	return res, noExitError(ctx, timeout, !started.IsZero(), qemuErr, stderr.String(), res.Console)
}

// noExitError says why no exit status came back.
func noExitError(ctx context.Context, timeout time.Duration, started bool, qemuErr error, stderr string, console []byte) error {
	tail := "\nconsole tail:\n" + lastLines(console, consoleTail)
	if oops := firstKernelReport(console, 4*consoleTail); oops != "" { // room for every CPU's stack
		tail = "\nfirst kernel report on the console:\n" + oops + tail
	}
	if stderr != "" {
		tail += "\nqemu stderr:\n" + stderr
	}
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded) && started:
		return fmt.Errorf("VM timed out after %v: the command started but did not finish (raise Config.Timeout?): %w%s", timeout, ctx.Err(), tail)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("VM timed out after %v before the command started (boot hang?): %w%s", timeout, ctx.Err(), tail)
	case ctx.Err() != nil:
		return fmt.Errorf("VM run canceled: %w", ctx.Err())
	case qemuErr != nil:
		return fmt.Errorf("qemu failed: %w%s", qemuErr, tail)
	}
	return fmt.Errorf("the guest stopped without reporting an exit status (kernel panic or guest init failure, see the console)%s", tail)
}

// firstKernelReport returns n console lines from the kernel's first report of trouble (an oops, a lockup, an
// RCU stall), where the cause of a hang shows; later reports only repeat its victims.
func firstKernelReport(b []byte, n int) string {
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.Contains(l, "BUG:") || strings.Contains(l, "watchdog:") || strings.Contains(l, "rcu: INFO") ||
			strings.Contains(l, "Oops") || strings.Contains(l, "WARNING:") || strings.Contains(l, "Kernel panic") {
			return strings.Join(lines[i:min(len(lines), i+n)], "\n")
		}
	}
	return ""
}

// lastLines returns the last n lines of b.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\r\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// console collects qemu's stdout, the guest console, and notes the start and exit markers in it.
type console struct {
	mu      sync.Mutex
	buf     []byte
	scanned int // offset of the first line not scanned for markers yet
	started time.Time
	code    int
	exit    bool
	exited  chan struct{} // closed at the exit marker
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(c.buf, p...)
	for {
		i := bytes.IndexByte(c.buf[c.scanned:], '\n')
		if i < 0 {
			return len(p), nil
		}
		c.scanLine(string(c.buf[c.scanned : c.scanned+i]))
		c.scanned += i + 1
	}
}

func (c *console) scanLine(line string) {
	if c.started.IsZero() && strings.Contains(line, protocol.StartMarker) {
		c.started = time.Now()
	}
	if code, ok := parseExitMarker(line); ok && !c.exit {
		c.code, c.exit = code, true
		close(c.exited)
	}
}

func (c *console) result() (started time.Time, code int, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.started, c.code, c.exit
}

func (c *console) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf)
}

// parseExitMarker reads the exit status from a console line holding the exit marker. The marker need not
// start the line: a kernel message may have been printed in front of it.
func parseExitMarker(line string) (int, bool) {
	_, after, ok := strings.Cut(line, protocol.ExitMarker+" ")
	if !ok {
		return 0, false
	}
	code, err := strconv.Atoi(strings.TrimSpace(after))
	return code, err == nil
}
