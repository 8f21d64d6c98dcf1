// Command probe runs inside the VM of TestPrivilegedBootDebian61 and prints what the test checks: the
// kernel release, the active LSMs, the mounts, the output of a dynamically linked host executable
// (argv[1] /proc/version) and argv[2] numbered lines, then exits with status 3.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		fail(err)
	}
	var release []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		release = append(release, byte(c))
	}
	fmt.Printf("release=%s\n", release)
	lsm, err := os.ReadFile("/sys/kernel/security/lsm")
	if err != nil {
		fail(err)
	}
	fmt.Printf("lsm=%s\n", lsm)
	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		fail(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(mounts)), "\n") {
		if f := strings.Fields(line); len(f) > 2 {
			fmt.Printf("mount=%s %s\n", f[1], f[2])
		}
	}
	version, err := exec.Command(os.Args[1], "/proc/version").Output()
	if err != nil {
		fail(err)
	}
	fmt.Printf("version=%s", version)
	fmt.Fprintln(os.Stderr, "stderr=ok")
	n, err := strconv.Atoi(os.Args[2])
	if err != nil {
		fail(err)
	}
	for i := range n {
		fmt.Printf("line %05d %s\n", i, strings.Repeat("x", 90))
	}
	fmt.Println("probe-end")
	os.Exit(3)
}

func fail(err error) {
	fmt.Println("probe failed:", err)
	os.Exit(1)
}
