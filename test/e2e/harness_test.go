package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"escapewatch/internal/event"
	"escapewatch/internal/testutil"
)

// The binaries under test, built once by TestMain.
var (
	sensorBin  string
	triggerBin string
)

// suiteTools are the programs the suite's actors run, besides its own binaries and the shell.
var suiteTools = []struct{ name, debianPackage string }{
	{"unshare", "util-linux"}, {"setpriv", "util-linux"}, {"python3", "python3"},
}

// Environment of the suite. Inside the kernel-matrix VMs there is no Go toolchain: the binaries come prebuilt.
const (
	binDirEnv  = "ESCAPEWATCH_E2E_BIN_DIR" // holds escapewatch and trigger, prebuilt
	backendEnv = "ESCAPEWATCH_BACKEND"     // the --backend every sensor of the suite runs with (default auto)
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(binDirEnv); dir != "" {
		sensorBin, triggerBin = filepath.Join(dir, "escapewatch"), filepath.Join(dir, "trigger")
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "escapewatch-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sensorBin, triggerBin = filepath.Join(dir, "escapewatch"), filepath.Join(dir, "trigger")
	if err := buildBinaries(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildBinaries builds the sensor and the trigger helper into dir: static, or the sensor with the race
// detector (which needs cgo) when the suite runs under it. The trigger stays static: it runs in containers.
func buildBinaries(dir string) error {
	builds := []struct {
		bin, pkg string
		race     bool
	}{
		{"escapewatch", "escapewatch/cmd/escapewatch", raceDetector},
		{"trigger", "escapewatch/test/e2e/trigger", false},
	}
	for _, b := range builds {
		args, env := []string{"build", "-o", filepath.Join(dir, b.bin)}, "CGO_ENABLED=0"
		if b.race {
			args, env = append(args, "-race"), "CGO_ENABLED=1"
		}
		cmd := exec.Command("go", append(args, b.pkg)...)
		cmd.Env = append(os.Environ(), env)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w\n%s", b.pkg, err, out)
		}
	}
	return nil
}

// backend is the backend under test.
func backend() string {
	if b := os.Getenv(backendEnv); b != "" {
		return b
	}
	return "auto"
}

// waitLimit bounds every wait for the sensor; it is a hang guard, not a performance assertion.
const waitLimit = 20 * time.Second

// readyLimit bounds the wait for the sensor to start (and a backend's load, backend_test.go).
const readyLimit = 3 * waitLimit

// finding is one decoded line of the sensor's stdout.
type finding struct {
	SigMetadata struct {
		ID   string
		Name string
	}
	Event event.Event
	Data  map[string]any
	// aggregate is Aggregate.Count: the repeats this finding stands for (0 for an ordinary finding).
	aggregate int
}

func (f finding) arg(name string) any {
	a, _ := f.Event.Arg(name)
	return a.Value
}

// sensor is a running escapewatch process.
type sensor struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr syncBuffer
	exited chan error

	mu       sync.Mutex
	findings []finding
	changed  chan struct{} // closed and replaced whenever a finding arrives
	badLines []string
}

// startSensor runs escapewatch with args and returns once it logged "sensor ready". It is stopped with SIGINT
// when the test ends, and must then exit 0.
func startSensor(t *testing.T, args ...string) *sensor {
	t.Helper()
	s := launchSensor(t, args...)
	s.waitReady(t)
	return s
}

// launchSensor runs escapewatch with args like startSensor, but returns at once, before it is ready.
func launchSensor(t *testing.T, args ...string) *sensor {
	t.Helper()
	testutil.RequirePrivileged(t)
	for _, tool := range suiteTools {
		testutil.RequireTool(t, tool.name, tool.debianPackage)
	}
	// A free port each: sensors of concurrent test runs must not collide on the default metrics port.
	args = append([]string{"run", "--backend", backend(), "--metrics-addr", "127.0.0.1:0"}, args...)
	s := &sensor{t: t, cmd: exec.Command(sensorBin, args...), exited: make(chan error, 1), changed: make(chan struct{})}
	s.cmd.Stderr = &s.stderr
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		s.readFindings(stdout)
		close(done)
	}()
	go func() {
		<-done
		s.exited <- s.cmd.Wait()
	}()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			if code := s.stop(syscall.SIGINT); code != 0 {
				t.Errorf("sensor exited with %d on SIGINT; stderr:\n%s", code, s.stderr.String())
			}
		}
		if strings.Contains(s.stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("the race detector found a data race in the sensor")
		}
		if t.Failed() {
			t.Logf("sensor %v stderr:\n%s", args, s.stderr.String())
		}
	})
	return s
}

// waitReady returns once the sensor logged "sensor ready", failing the test if it exits or takes too long:
// loading and verifying the programs takes seconds on an emulated CPU (the kernel matrix), more when the test
// keeps that CPU busy meanwhile, so the guard is readyLimit.
func (s *sensor) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(readyLimit)
	for !strings.Contains(s.stderr.String(), "sensor ready") {
		select {
		case err := <-s.exited:
			t.Fatalf("sensor exited before it was ready: %v\n%s", err, s.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sensor not ready after %s:\n%s", readyLimit, s.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *sensor) readFindings(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var f finding
		line := sc.Bytes()
		var raw struct {
			SigMetadata json.RawMessage
			Event       json.RawMessage
			Data        map[string]any
			Aggregate   *struct{ Count int }
		}
		err := json.Unmarshal(line, &raw)
		if err == nil {
			err = json.Unmarshal(raw.SigMetadata, &f.SigMetadata)
		}
		if err == nil {
			f.Event, err = event.Decode(raw.Event)
		}
		s.mu.Lock()
		if err != nil {
			s.badLines = append(s.badLines, fmt.Sprintf("%s (%v)", line, err))
		} else {
			f.Data = raw.Data
			if raw.Aggregate != nil {
				f.aggregate = raw.Aggregate.Count
			}
			s.findings = append(s.findings, f)
		}
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}
}

// backend returns the backend the sensor reported in its "sensor ready" line.
func (s *sensor) backend() string {
	m := regexp.MustCompile(`msg="sensor ready" backend=(\w+)`).FindStringSubmatch(s.stderr.String())
	if m == nil {
		s.t.Fatalf("no backend in the sensor's log:\n%s", s.stderr.String())
	}
	return m[1]
}

// refuses reports whether the sensor's backend refuses operations under --enforce rather than killing.
func (s *sensor) refuses() bool { return s.backend() == "lsm" || s.backend() == "fentry" }

// stop sends sig and returns the exit code.
func (s *sensor) stop(sig os.Signal) int {
	s.cmd.Process.Signal(sig)
	select {
	case <-s.exited:
	case <-time.After(waitLimit):
		s.cmd.Process.Kill()
		<-s.exited
		s.t.Errorf("sensor did not exit within %s of SIGINT", waitLimit)
	}
	return s.cmd.ProcessState.ExitCode()
}

// waitFor returns the first finding that match accepts, failing the test after waitLimit.
func (s *sensor) waitFor(t *testing.T, what string, match func(finding) bool) finding {
	t.Helper()
	return s.waitForWithin(t, what, waitLimit, match)
}

// waitForWithin is waitFor with its own limit, for a finding behind a storm of others.
func (s *sensor) waitForWithin(t *testing.T, what string, limit time.Duration, match func(finding) bool) finding {
	t.Helper()
	deadline := time.After(limit)
	for {
		s.mu.Lock()
		for _, f := range s.findings {
			if match(f) {
				s.mu.Unlock()
				return f
			}
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no finding for %s within %s; findings so far: %s", what, limit, s.summary())
		}
	}
}

// matching returns the findings so far that match accepts.
func (s *sensor) matching(match func(finding) bool) []finding {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []finding
	for _, f := range s.findings {
		if match(f) {
			out = append(out, f)
		}
	}
	return out
}

func (s *sensor) summary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, f := range s.findings {
		fmt.Fprintf(&b, "\n  %s pid=%d comm=%s %s %v origin=%s", f.SigMetadata.ID, f.Event.HostProcessID, f.Event.ProcessName,
			f.Event.EventName, f.Event.Args, f.Event.Origin)
	}
	for _, l := range s.badLines {
		fmt.Fprintf(&b, "\n  undecodable: %s", l)
	}
	return b.String()
}

// actor is the process that acted, as it reported itself.
type actor struct {
	HostPID, NSPID int
	Comm           string
}

// trc1010By matches the TRC-1010 findings of process pid.
func trc1010By(pid int) func(finding) bool {
	return func(f finding) bool { return f.Event.HostProcessID == pid && f.SigMetadata.ID == "TRC-1010" }
}

// anyBy matches the findings of any rule for process pid: what must-not-alert cases check.
func anyBy(pid int) func(finding) bool {
	return func(f finding) bool { return f.Event.HostProcessID == pid }
}

// changedBy matches the EW-1001 (release_agent changed) findings of process pid.
func changedBy(pid int) func(finding) bool {
	return func(f finding) bool { return f.Event.HostProcessID == pid && f.SigMetadata.ID == "EW-1001" }
}

// runAct runs argv, whose first output line is "HOSTPID NSPID COMM" of the process that acts, and returns that
// process. The command must succeed.
func runAct(t *testing.T, argv ...string) actor {
	t.Helper()
	return parseActor(t, runActOutput(t, argv...))
}

// runActOutput runs argv, which must succeed, and returns its standard output.
func runActOutput(t *testing.T, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%q: %v\nstdout: %s\nstderr: %s", argv, err, out, stderr.String())
	}
	return string(out)
}

// runExpectFailure runs argv, which must fail, and returns its stdout and stderr.
func runExpectFailure(t *testing.T, argv ...string) (string, string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err == nil {
		t.Fatalf("%q succeeded, want a failure\nstdout: %s", argv, out)
	}
	return string(out), stderr.String()
}

func parseActor(t *testing.T, out string) actor {
	t.Helper()
	line, _, _ := strings.Cut(out, "\n")
	fields := strings.Fields(line)
	if len(fields) != 3 {
		t.Fatalf("want \"HOSTPID NSPID COMM\" as the first output line, got %q", out)
	}
	host, err1 := strconv.Atoi(fields[0])
	ns, err2 := strconv.Atoi(fields[1])
	if err1 != nil || err2 != nil {
		t.Fatalf("want \"HOSTPID NSPID COMM\" as the first output line, got %q", out)
	}
	return actor{HostPID: host, NSPID: ns, Comm: fields[2]}
}

// earlyWriter is a namespaced shell that opened a file for writing before the caller started a sensor, and
// writes value through that descriptor (then prints "written") when told to.
type earlyWriter struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   syncBuffer
	actor
}

// startEarlyWriter returns once the shell has opened path.
func startEarlyWriter(t *testing.T, path, value string) *earlyWriter {
	t.Helper()
	w := &earlyWriter{}
	argv := inNamespace("sh", "-c", shellAct+"exec 3> "+path+"; echo opened; read go; echo "+value+" >&3 && echo written")
	w.cmd = exec.Command(argv[0], argv[1:]...)
	w.cmd.Stdout = &w.out
	var err error
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(waitLimit); !strings.Contains(w.out.String(), "opened\n"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the early writer did not open %s: %q", path, w.out.String())
		}
	}
	w.actor = parseActor(t, w.out.String())
	return w
}

// write lets the shell write and returns how it exited.
func (w *earlyWriter) write() error {
	w.stdin.Write([]byte("go\n"))
	return w.cmd.Wait()
}

// wrote reports whether the write returned to the shell.
func (w *earlyWriter) wrote() bool { return strings.Contains(w.out.String(), "written") }

// inNamespace wraps argv to run in new mount and pid namespaces, like `unshare -mpf` from a shell. /proc
// stays the host's, so a process there can tell its host pid.
func inNamespace(argv ...string) []string {
	return append([]string{"unshare", "--mount", "--pid", "--fork", "--"}, argv...)
}

// shellAct is a shell script prefix that prints the shell's own "HOSTPID NSPID COMM" using builtins only, so
// the process that prints is the one that then acts.
const shellAct = `read -r hp rest < /proc/self/stat; read -r comm < /proc/self/comm; echo "$hp $$ $comm"; `

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
