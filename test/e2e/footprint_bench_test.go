package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"escapewatch/internal/testutil"
)

// BenchmarkFootprint measures what the sensor, on its default settings, holds: its resident memory at rest, its
// peak under a storm (one namespaced cgroup reading release_agent 2,000 times, opening it for writing 2,000
// times, then writing 2,000 different values into it), and the BPF memory of its maps and programs (the kernel's
// own accounting, from /proc/PID/fdinfo). Goals (README): BPF memory at most 2 MiB, RSS at most 30 MB at rest.
func BenchmarkFootprint(b *testing.B) {
	testutil.RequirePrivileged(b)
	for i := 0; i < b.N; i++ {
		cmd := exec.Command(sensorBin, "run", "--backend", backend(), "--metrics-addr", "127.0.0.1:0")
		cmd.Stdout = io.Discard
		stderr, err := cmd.StderrPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		ready := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				if strings.Contains(sc.Text(), "sensor ready") {
					close(ready)
				}
			}
		}()
		select {
		case <-ready:
		case <-time.After(readyLimit):
			cmd.Process.Kill()
			b.Fatalf("sensor not ready after %s", readyLimit)
		}
		time.Sleep(2 * time.Second) // settled: the start's garbage collected
		pid := cmd.Process.Pid
		rest := procStatusKiB(b, pid, "VmRSS")
		maps, progs := bpfMemlock(b, pid)

		h := testutil.MountHierarchy(b)
		dirs := testutil.CgroupDirs(b, "ewfootprint"+randomHex(b, 4))
		storm := exec.Command("unshare", "--mount", "--pid", "--fork", "--", "sh", "-c", testutil.JoinCgroups(dirs)+fmt.Sprintf(
			`i=0; while [ $i -lt 2000 ]; do read -r v < %[1]s; i=$((i+1)); done
i=0; while [ $i -lt 2000 ]; do exec 3>>%[1]s; i=$((i+1)); done
i=0; while [ $i -lt 2000 ]; do echo /storm-$i > %[1]s; i=$((i+1)); done`, h.Agent()))
		if out, err := storm.CombinedOutput(); err != nil {
			b.Fatalf("storm: %v\n%s", err, out)
		}
		time.Sleep(2 * time.Second) // the findings and the loss summaries written
		peak := procStatusKiB(b, pid, "VmHWM")
		after := procStatusKiB(b, pid, "VmRSS")
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()

		b.ReportMetric(0, "ns/op")
		b.ReportMetric(float64(rest)/1024, "rest-RSS-MiB")
		b.ReportMetric(float64(peak)/1024, "peak-RSS-MiB")
		b.ReportMetric(float64(after)/1024, "after-storm-RSS-MiB")
		b.ReportMetric(float64(maps)/(1<<20), "bpf-maps-MiB")
		b.ReportMetric(float64(progs)/(1<<20), "bpf-progs-MiB")
	}
}

// procStatusKiB reads a "Vm..." line of /proc/PID/status, in KiB.
func procStatusKiB(tb testing.TB, pid int, field string) int {
	tb.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				tb.Fatalf("%s: %q", field, line)
			}
			return n
		}
	}
	tb.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// bpfMemlock sums the kernel's memory accounting ("memlock") of the BPF maps and programs process pid holds.
func bpfMemlock(tb testing.TB, pid int) (maps, progs int64) {
	tb.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, fd := range fds {
		link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		info, err := os.ReadFile(filepath.Join(fmt.Sprintf("/proc/%d/fdinfo", pid), fd.Name()))
		if err != nil {
			continue
		}
		var memlock int64
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "memlock:"); ok {
				memlock, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
		}
		switch link {
		case "anon_inode:bpf-map":
			maps += memlock
		case "anon_inode:bpf-prog":
			progs += memlock
		}
	}
	return maps, progs
}
