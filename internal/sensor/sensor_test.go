package sensor

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"escapewatch/internal/enrich"
	"escapewatch/internal/event"
	"escapewatch/internal/testutil"
)

func TestDecodeRecord(t *testing.T) {
	head := make([]byte, recordHeadSize)
	head[0] = byte(kernelEwKindEW_KIND_AGENT_WRITE)
	strs := func(s ...string) []byte { return []byte(strings.Join(s, "\x00") + "\x00") }
	tests := []struct {
		name    string
		raw     []byte
		wantErr string
		want    [recordStrings]string
	}{
		{name: "empty", raw: []byte{}, wantErr: "short record"},
		{name: "head only", raw: head, wantErr: "short record"},
		{name: "kind 0", raw: append(make([]byte, recordHeadSize), strs("", "", "", "", "")...), wantErr: "unknown record kind 0"},
		{name: "unknown kind", raw: append(append([]byte{9, 0, 0, 0}, make([]byte, recordHeadSize-4)...), strs("", "", "", "", "")...),
			wantErr: "unknown record kind 9"},
		{name: "four strings", raw: append(slices.Clone(head), strs("/c", "/p", "v", "")...), wantErr: "string 5 of 5 has no end"},
		{name: "unterminated", raw: append(slices.Clone(head), []byte("/c\x00/p\x00v\x00\x00base")...), wantErr: "string 5 of 5 has no end"},
		{name: "whole", raw: append(slices.Clone(head), strs("/docker/abc", "/sys/fs/cgroup/x/release_agent", "/payload", "", "x")...),
			want: [recordStrings]string{"/docker/abc", "/sys/fs/cgroup/x/release_agent", "/payload", "", "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := decodeRecord(tt.raw)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := [recordStrings]string{r.CgroupPath, r.Path, r.ArgPath, r.ArgPath2, r.BasePath}; got != tt.want {
				t.Errorf("strings %q, want %q", got, tt.want)
			}
		})
	}
}

// floodScript is a shell script that joins the cgroups dirs, prints its pid, and opens path for writing n times
// (never writing).
func floodScript(dirs []string, path string, n int) string {
	return testutil.JoinCgroups(dirs) + fmt.Sprintf(`echo $$; i=0; while [ $i -lt %d ]; do exec 3>>%s; i=$((i+1)); done`, n, path)
}

// valueFloodScript is floodScript writing a different value each time: two records a write (the open, the value).
func valueFloodScript(dirs []string, path string, n int) string {
	return testutil.JoinCgroups(dirs) + fmt.Sprintf(`echo $$; i=0; while [ $i -lt %d ]; do echo /v$i > %s; i=$((i+1)); done`, n, path)
}

// runFlood runs floodScript in a new cgroup named name and returns the shell's pid.
func runFlood(t *testing.T, name, path string, n int) int {
	t.Helper()
	return runScript(t, name, floodScript(testutil.CgroupDirs(t, name), path, n))
}

// runScript runs a script that prints its pid first, and returns that pid.
func runScript(t *testing.T, name, script string) int {
	t.Helper()
	out, err := exec.Command("sh", "-c", script).Output()
	if err != nil {
		t.Fatalf("flood from %s: %v", name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("flood from %s printed %q", name, out)
	}
	return pid
}

// drain detaches the sensor and returns every event it delivers, the losses it reports included.
func drain(t *testing.T, s *Sensor) []event.Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Run detaches, then delivers what was emitted and reports what was lost
	var mu sync.Mutex
	var evs []event.Event
	if err := s.Run(ctx, func(ev *event.Event) {
		mu.Lock()
		defer mu.Unlock()
		evs = append(evs, *ev)
	}); err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestPrivilegedLossesPerOrigin: a storm from one cgroup is limited to that cgroup's budget in the kernel, and
// every record it does not send is counted against it and reported (records_lost): as repeated when it said what
// the last record sent said, else as lost; another cgroup's one record gets through.
func TestPrivilegedLossesPerOrigin(t *testing.T) {
	const storm = 3000
	tests := []struct {
		name    string
		script  func(dirs []string, path string, n int) string
		records int  // records the storm makes
		lost    bool // whether some are lost (else all that are not sent are repeats)
	}{
		{name: "the same open", script: floodScript, records: storm},
		{name: "new values", script: valueFloodScript, records: 2 * storm, lost: true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := testutil.MountHierarchy(t)
			s := openTestSensor(t)
			defer s.Close()
			stormName := fmt.Sprintf("ewstorm%d_%d", os.Getpid(), i)
			quietName := fmt.Sprintf("ewquiet%d_%d", os.Getpid(), i)
			stormPID := runScript(t, stormName, tt.script(testutil.CgroupDirs(t, stormName), h.Agent(), storm))
			quietPID := runFlood(t, quietName, h.Agent(), 1)

			delivered := map[int]int{}
			var lost, repeated uint64
			for _, ev := range drain(t, s) {
				if a, _ := ev.Arg("pathname"); ev.EventName == event.SecurityFileOpen && a.Value == h.Agent() {
					delivered[ev.HostProcessID]++
				}
				if a, _ := ev.Arg("hierarchy"); ev.EventName == event.ReleaseAgentChanged && a.Value == h.Name {
					delivered[ev.HostProcessID]++
				}
				if c, _ := ev.Arg("cgroup"); ev.EventName == event.RecordsLost && strings.HasSuffix(c.Value.(string), "/"+stormName) {
					n, _ := ev.Arg("lost")
					lost += n.Value.(uint64)
					n, _ = ev.Arg("repeated")
					repeated += n.Value.(uint64)
					if ev.HostProcessID != stormPID {
						t.Errorf("records_lost attributed to pid %d, want the storm's %d", ev.HostProcessID, stormPID)
					}
				}
			}
			if delivered[quietPID] != 1 {
				t.Errorf("the quiet cgroup's one open: %d records, want 1", delivered[quietPID])
			}
			if uint64(delivered[stormPID])+lost+repeated != uint64(tt.records) {
				t.Errorf("the storm's %d records: %d delivered + %d lost + %d repeated, want every one accounted for",
					tt.records, delivered[stormPID], lost, repeated)
			}
			if tt.lost && lost == 0 {
				t.Errorf("a storm of new values: none lost (%d delivered, %d repeated), want some", delivered[stormPID], repeated)
			}
			if !tt.lost && (lost != 0 || repeated == 0) {
				t.Errorf("a storm of the same record: %d lost, %d repeated, want only repeats", lost, repeated)
			}
			t.Logf("storm: %d delivered, %d lost, %d repeated", delivered[stormPID], lost, repeated)
		})
	}
}

// TestPrivilegedPlantingOverBudget: a cgroup that spent its budget on a flood still gets the first value it plants
// in a hierarchy through: the planting is never one of the records a storm hides.
func TestPrivilegedPlantingOverBudget(t *testing.T) {
	flooded, planted := testutil.MountHierarchy(t), testutil.MountHierarchy(t)
	s := openTestSensor(t)
	defer s.Close()
	name := fmt.Sprintf("ewplant%d", os.Getpid())
	script := floodScript(testutil.CgroupDirs(t, name), flooded.Agent(), 3000) +
		fmt.Sprintf("; echo /planted-first > %[1]s; echo /planted-second > %[1]s", planted.Agent())
	pid := runScript(t, name, script)
	var values []any
	repeats := uint64(0)
	for _, ev := range drain(t, s) {
		if h, _ := ev.Arg("hierarchy"); ev.EventName == event.ReleaseAgentChanged && h.Value == planted.Name && ev.HostProcessID == pid {
			v, _ := ev.Arg("value")
			values = append(values, v.Value)
		}
		if c, _ := ev.Arg("cgroup"); ev.EventName == event.RecordsLost && strings.HasSuffix(c.Value.(string), "/"+name) {
			n, _ := ev.Arg("repeated")
			repeats += n.Value.(uint64)
		}
	}
	if repeats == 0 {
		t.Fatalf("the flood of 3000 opens stayed within the budget: nothing to prove")
	}
	if len(values) == 0 || values[0] != "/planted-first" {
		t.Errorf("values planted over budget, as delivered: %v; want /planted-first first", values)
	}
	t.Logf("over budget (%d repeats counted), delivered: %v", repeats, values)
}

// TestPrivilegedDropsAreCounted fills the ring buffer while nobody reads it, from many cgroups (each within its
// budget at first): every open of the real release_agent for writing is either delivered or counted as lost
// (ring full, or over budget), none vanishes; and a new cgroup's first record still gets through.
func TestPrivilegedDropsAreCounted(t *testing.T) {
	h := testutil.MountHierarchy(t)
	s := openTestSensor(t)
	defer s.Close()
	const origins, each = 50, 600
	for i := range origins {
		runFlood(t, fmt.Sprintf("ewring%d_%d", os.Getpid(), i), h.Agent(), each)
	}
	if st := s.Stats(); st.KernelDropped == 0 {
		t.Fatalf("after %d opens into a buffer of %d bytes: no drops counted (emitted %d)", origins*each, s.reader.BufferSize(), st.KernelEmitted)
	}
	// The ring is full for everyone but a new cgroup's first record, which has room kept for it.
	newcomer := runFlood(t, fmt.Sprintf("ewnew%d", os.Getpid()), h.Agent(), 2)
	ours, newcomers := 0, 0
	for _, ev := range drain(t, s) {
		if a, _ := ev.Arg("pathname"); a.Value == h.Agent() {
			ours++
			if ev.HostProcessID == newcomer {
				newcomers++
			}
		}
	}
	if newcomers != 1 {
		t.Errorf("a new cgroup's 2 opens into a full ring: %d delivered, want its first", newcomers)
	}
	// Other tests may open release_agents at the same time (the kernel counters are global).
	st := s.Stats()
	if st.Records != st.KernelEmitted {
		t.Errorf("delivered %d records, the kernel emitted %d", st.Records, st.KernelEmitted)
	}
	if uint64(ours)+st.KernelDropped+st.KernelOverBudget+st.KernelRepeated < origins*each+2 {
		t.Errorf("%d opens: %d delivered + %d dropped + %d over budget + %d repeated: some vanished", origins*each+2, ours,
			st.KernelDropped, st.KernelOverBudget, st.KernelRepeated)
	}
}

func TestReleaseAgentOption(t *testing.T) {
	tests := []struct {
		data, want string
		ok         bool
	}{
		{"none,name=x,release_agent=/p", "/p", true},
		{"release_agent=/a/b,name=x", "/a/b", true},
		{"release_agent=", "", true},
		{"none,name=x", "", false},
		{"xrelease_agent=/p", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		if got, ok := releaseAgentOption(tt.data); got != tt.want || ok != tt.ok {
			t.Errorf("releaseAgentOption(%q) = %q, %v; want %q, %v", tt.data, got, ok, tt.want, tt.ok)
		}
	}
}

// openTestSensor opens the sensor on the backend the test run asks for (ESCAPEWATCH_BACKEND, auto when unset),
// with the real origin classifier and a silent log.
func openTestSensor(tb testing.TB) *Sensor {
	tb.Helper()
	return openSensorOn(tb, os.Getenv("ESCAPEWATCH_BACKEND"))
}

// openSensorOn is openTestSensor on backend.
func openSensorOn(tb testing.TB, backend string) *Sensor {
	tb.Helper()
	return openSensorWith(tb, backend, func(*Config) {})
}

// openSensorWith is openSensorOn with the configuration changed by set.
func openSensorWith(tb testing.TB, backend string, set func(*Config)) *Sensor {
	tb.Helper()
	classifier, err := enrich.NewClassifier("/proc")
	if err != nil {
		tb.Fatal(err)
	}
	cfg := Config{Backend: backend, Classifier: classifier, Logger: slog.New(slog.DiscardHandler)}
	set(&cfg)
	s, err := Open(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// TestPrivilegedReadsStayInKernel: opens of the real release_agent for reading never leave the kernel (a
// container reading it in a loop must not fill the ring); the one open for writing does.
func TestPrivilegedReadsStayInKernel(t *testing.T) {
	h := testutil.MountHierarchy(t)
	s := openTestSensor(t)
	defer s.Close()
	for _, flags := range append(slices.Repeat([]int{unix.O_RDONLY, unix.O_RDONLY | unix.O_TRUNC}, 100), unix.O_WRONLY) {
		fd, err := unix.Open(h.Agent(), flags, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
	}
	var ours []event.Event
	for _, ev := range drain(t, s) {
		if a, _ := ev.Arg("pathname"); a.Value == h.Agent() {
			ours = append(ours, ev)
		}
	}
	if len(ours) != 1 {
		t.Fatalf("200 opens for reading and 1 for writing: %d records, want 1", len(ours))
	}
	if flags, _ := ours[0].Arg("flags"); flags.Value.(int32)&unix.O_ACCMODE != unix.O_WRONLY {
		t.Errorf("the record's flags %v, want O_WRONLY", flags.Value)
	}
	// The kernel reports how often it skipped each program (KernelMissed sums it): readable for every one, and
	// none skipped by this quiet workload.
	for _, h := range s.hooks() {
		if _, err := h.prog.Stats(); err != nil {
			t.Errorf("%s: the kernel's run statistics: %v", h.point, err)
		}
	}
	if missed := s.Stats().KernelMissed; missed != 0 {
		t.Errorf("the kernel skipped the programs %d times", missed)
	}
}

// TestPrivilegedHelperExecSurvivesFullRing: with the main ring full (many cgroups' records, nobody reading), the
// kernel's helper exec still reaches user space: it has a ring of its own.
func TestPrivilegedHelperExecSurvivesFullRing(t *testing.T) {
	h := testutil.MountHierarchy(t)
	s := openTestSensor(t)
	defer s.Close()
	for i := 0; s.Stats().KernelDropped == 0; i++ {
		if i == 100 {
			t.Fatalf("the ring never filled: %+v", s.Stats())
		}
		runFlood(t, fmt.Sprintf("ewfill%d_%d", os.Getpid(), i), h.Agent(), 600)
	}
	marker := filepath.Join(t.TempDir(), "ran")
	agent := filepath.Join(t.TempDir(), "agent.sh")
	if err := os.WriteFile(agent, []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`echo %[2]s > %[1]s/release_agent; mkdir -p %[1]s/x; echo 1 > %[1]s/x/notify_on_release
sh -c 'echo $$ > %[1]s/x/cgroup.procs'`, h.Dir, agent)
	if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("release: %v\n%s", err, out)
	}
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatal("the agent never ran")
		}
	}
	found := false
	for _, ev := range drain(t, s) {
		if a, _ := ev.Arg("pathname"); ev.EventName == event.UsermodeHelperExec && a.Value == agent {
			found = true
		}
	}
	if !found {
		t.Errorf("the helper's exec was lost with the main ring full (%+v)", s.Stats())
	}
}

// TestPrivilegedWritesAfterKernfsLearned (the tracepoint backend): once the kernel side has learned kernfs files'
// operations from a cgroup file's write, and so lets every other file's write leave at one read, writes to the real
// release_agent are still seen, through a descriptor opened before the sensor and through a duplicate.
func TestPrivilegedWritesAfterKernfsLearned(t *testing.T) {
	h := testutil.MountHierarchy(t)
	agent, err := os.OpenFile(h.Agent(), os.O_WRONLY, 0) // before the sensor: no open was seen
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	// The tracepoint backend whatever ESCAPEWATCH_BACKEND says: the others see writes in the agent's write
	// handler and learn nothing.
	s := openSensorOn(t, BackendTracepoint)
	defer s.Close()
	tp := s.objs.(*tracepointObjects)
	if err := os.WriteFile(filepath.Join(h.Dir, "notify_on_release"), []byte("0"), 0); err != nil {
		t.Fatal(err)
	}
	var fops uint64
	if err := tp.EwKernfsFops.Lookup(uint32(0), &fops); err != nil {
		t.Fatal(err)
	}
	if fops == 0 {
		t.Fatal("a write to a cgroup file: the kernfs file operations are still unknown")
	}
	for i := range 100 { // unrelated writes, which take the short path now
		if err := os.WriteFile(filepath.Join(t.TempDir(), "unrelated"), []byte{byte(i)}, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dup, err := unix.Dup(int(agent.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dup)
	for _, w := range []struct {
		fd    int
		value string
	}{{int(agent.Fd()), "/learned-1"}, {dup, "/learned-2"}} {
		if _, err := unix.Write(w.fd, []byte(w.value)); err != nil {
			t.Fatal(err)
		}
	}
	var values []string
	for _, ev := range drain(t, s) {
		if ev.EventName == event.ReleaseAgentChanged {
			v, _ := ev.Arg("value")
			values = append(values, fmt.Sprint(v.Value))
		}
	}
	if !slices.Equal(values, []string{"/learned-1", "/learned-2"}) {
		t.Errorf("release_agent values reported %q, want both writes", values)
	}
}
