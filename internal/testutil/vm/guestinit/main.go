// Command guestinit is PID 1 of the VMs that package vm boots. It mounts the kernel's file systems, runs
// the command that vm.Run wrote to protocol.CommandPath with its stdout and stderr on the second serial
// port, reports the exit status on the console once that output has drained, and powers off.
//
// When it cannot set up, it logs why on the console and powers off without an exit marker, which the host
// reports as a failure to run the VM.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"escapewatch/internal/testutil/vm/internal/protocol"

	"golang.org/x/sys/unix"
)

// mount is one file system the guest command may need; sysfs provides the targets below /sys itself.
type mount struct {
	source, target, fstype string
}

var mounts = []mount{
	{"proc", "/proc", "proc"},
	{"sysfs", "/sys", "sysfs"},
	{"devtmpfs", "/dev", "devtmpfs"},
	{"tmpfs", "/tmp", "tmpfs"},
	{"tmpfs", "/run", "tmpfs"},
	{"securityfs", "/sys/kernel/security", "securityfs"},
	{"bpf", "/sys/fs/bpf", "bpf"},
	{"tracefs", "/sys/kernel/tracing", "tracefs"},
	{"debugfs", "/sys/kernel/debug", "debugfs"},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2"},
}

// exitNotRun is the status reported when the command cannot be started, as a shell reports a missing one.
const exitNotRun = 127

func main() {
	if err := run(); err != nil {
		logf("FAILED: %v", err)
	}
	powerOff()
}

// run sets up the guest, runs the command and reports its exit status.
func run() error {
	mountAll()
	if err := loopbackUp(); err != nil {
		logf("bring up lo: %v", err)
	}
	cmd, err := readCommand()
	if err != nil {
		return err
	}
	out, err := openOutput(cmd.Output)
	if err != nil {
		return err
	}
	code := runCommand(cmd, out)
	// The host kills qemu as soon as it reads the marker, so the output must be out of the guest first.
	if err := drain(out); err != nil {
		return fmt.Errorf("drain %s: %w", cmd.Output, err)
	}
	fmt.Printf("\n%s %d\n", protocol.ExitMarker, code)
	return drain(os.Stdout)
}

func logf(format string, args ...any) {
	fmt.Printf("vm-init: "+format+"\n", args...)
}

// mountAll mounts what it can: a kernel without one of the file systems still runs commands that do not
// need it, and the console shows what was missing.
func mountAll() {
	for _, m := range mounts {
		// Targets on the initramfs may be missing; those below /sys come with sysfs and cannot be made.
		_ = os.MkdirAll(m.target, 0o755)
		if err := unix.Mount(m.source, m.target, m.fstype, 0, ""); err != nil {
			logf("mount %s on %s: %v", m.fstype, m.target, err)
		}
	}
}

// loopbackUp brings up lo, as a booted system's init would: commands may serve or call 127.0.0.1.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

func readCommand() (protocol.Command, error) {
	var cmd protocol.Command
	data, err := os.ReadFile(protocol.CommandPath)
	if err != nil {
		return cmd, fmt.Errorf("read the command: %w", err)
	}
	if err := json.Unmarshal(data, &cmd); err != nil {
		return cmd, fmt.Errorf("decode %s: %w", protocol.CommandPath, err)
	}
	if len(cmd.Argv) == 0 || cmd.Output == "" {
		return cmd, fmt.Errorf("%s has no argv or no output device", protocol.CommandPath)
	}
	return cmd, nil
}

// openOutput opens the output serial port dev in raw mode, so that the host receives the bytes written
// unchanged (no \n to \r\n translation).
func openOutput(dev string) (*os.File, error) {
	f, err := os.OpenFile(dev, os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open the output port (is qemu's output serial device missing, or named otherwise in this guest?): %w", err)
	}
	fd := int(f.Fd())
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("get %s termios: %w", dev, err)
	}
	t.Oflag &^= unix.OPOST
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		return nil, fmt.Errorf("set %s raw: %w", dev, err)
	}
	return f, nil
}

// runCommand runs cmd with its stdout and stderr on out and returns its exit status, 128+signal when a
// signal ended it as a shell would say, or exitNotRun with the reason on out when it could not start.
func runCommand(cmd protocol.Command, out *os.File) int {
	c := exec.Command(cmd.Argv[0], cmd.Argv[1:]...)
	c.Env, c.Dir = cmd.Env, cmd.Dir
	c.Stdout, c.Stderr = out, out
	fmt.Println(protocol.StartMarker)
	err := c.Run()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		ws := exitErr.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
	if err != nil {
		msg := fmt.Sprintf("vm-init: cannot run %q: %v", cmd.Argv[0], err)
		fmt.Fprintln(out, msg)
		logf("%s", msg)
		return exitNotRun
	}
	return 0
}

// drain waits until everything written to the terminal f has left the serial port (tcdrain).
func drain(f *os.File) error {
	return unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1)
}

func powerOff() {
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Returning from PID 1 panics the kernel, which panic=-1 and qemu's -no-reboot also turn into an exit.
	logf("power off: %v", err)
}
