package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"escapewatch/internal/enrich"
	"escapewatch/internal/event"
	"escapewatch/internal/rule"
	"escapewatch/internal/sensor"
)

// selftestChild is the hidden subcommand the self-test runs in its throwaway namespaces.
const selftestChild = "selftest-child"

// selftestValue is what the self-test writes: it names itself, and is never run (no cgroup of the hierarchy
// has notify_on_release, and the hierarchy is gone right after).
const selftestValue = "/escapewatch-selftest"

func runSelftest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("selftest", "escapewatch selftest [--running URL] [--backend NAME] [--timeout D]", stderr)
	running := fs.String("running", "",
		"check the sensor already running with this metrics endpoint (e.g. http://127.0.0.1:9464) instead of starting one")
	backend := fs.String("backend", sensor.BackendAuto, "backend of the sensor started for the test")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the sensor to report the write")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var err error
	if *running != "" {
		err = selftestRunning(ctx, *running, *timeout)
	} else {
		err = selftestInProcess(ctx, *backend, *timeout)
	}
	if err != nil {
		fmt.Fprintln(stdout, "selftest: FAIL:", err)
		return fmt.Errorf("selftest failed: %w", err)
	}
	fmt.Fprintln(stdout, "selftest: PASS: a release_agent write from a new mount+pid namespace was reported")
	return nil
}

// selftestInProcess starts a sensor in this process and checks that it reports the write.
func selftestInProcess(ctx context.Context, backend string, timeout time.Duration) error {
	classifier, err := enrich.NewClassifier("/proc")
	if err != nil {
		return err
	}
	s, err := sensor.Open(sensor.Config{Backend: backend, Classifier: classifier, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer s.Close()
	eng, err := rule.NewEngine(rule.Default(), rule.ScopeNamespaced)
	if err != nil {
		return err
	}
	reported := make(chan struct{})
	var once sync.Once
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	var childPID int
	var mu sync.Mutex
	wg.Go(func() {
		s.Run(runCtx, func(ev *event.Event) {
			mu.Lock()
			pid := childPID
			mu.Unlock()
			if ev.HostProcessID == pid && len(eng.Process(ev)) > 0 {
				once.Do(func() { close(reported) })
			}
		})
	})
	pid, err := selftestWrite(func(p int) { mu.Lock(); childPID = p; mu.Unlock() })
	if err != nil {
		return err
	}
	select {
	case <-reported:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("the %s sensor did not report the write by pid %d within %s", s.Backend(), pid, timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// selftestRunning checks a running sensor through its metrics: its count of findings (written or suppressed)
// must grow after the write.
func selftestRunning(ctx context.Context, base string, timeout time.Duration) error {
	before, err := reportedCount(ctx, base)
	if err != nil {
		return err
	}
	if _, err := selftestWrite(func(int) {}); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		after, err := reportedCount(ctx, base)
		if err != nil {
			return err
		}
		if after > before {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the sensor at %s did not report the write within %s (is its scope excluding namespaced processes?)", base, timeout)
}

// reportedCount sums escapewatch_findings_total and escapewatch_findings_suppressed_total.
func reportedCount(ctx context.Context, base string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/metrics", nil)
	if err != nil {
		return 0, fmt.Errorf("--running %q: %w", base, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("cannot reach the running sensor's metrics (is it running with --metrics-addr?): %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s/metrics answered %s", base, resp.Status)
	}
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "escapewatch_findings_total{") && !strings.HasPrefix(line, "escapewatch_findings_suppressed_total{") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("unreadable metric line %q", line)
		}
		sum += v
	}
	return sum, sc.Err()
}

// selftestWrite runs this binary's hidden child in new mount and pid namespaces, where it mounts a private
// cgroup v1 hierarchy, writes its release_agent and unmounts it. started gets the child's pid before it acts.
func selftestWrite(started func(pid int)) (int, error) {
	dir, err := os.MkdirTemp("", "escapewatch-selftest-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(self, selftestChild, dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start the test process in new namespaces (needs root): %w", err)
	}
	started(cmd.Process.Pid)
	stdin.Close() // the child waits for this: its pid is known before it writes
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("the test write failed: %v: %s", err, strings.TrimSpace(out.String()))
	}
	return cmd.Process.Pid, nil
}

// runSelftestChild is the child: pid 1 of a new pid namespace, in a private copy of the mounts.
func runSelftestChild(args []string) error {
	if len(args) != 1 {
		return errors.New("selftest-child: internal use only")
	}
	io.Copy(io.Discard, os.Stdin)
	dir := args[0]
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make the mounts private: %w", err)
	}
	name := fmt.Sprintf("ewselftest%d", time.Now().UnixNano())
	if err := unix.Mount("cgroup", dir, "cgroup", 0, "none,name="+name); err != nil {
		return fmt.Errorf("mount a private cgroup v1 hierarchy: %w", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	return os.WriteFile(dir+"/release_agent", []byte(selftestValue), 0)
}
