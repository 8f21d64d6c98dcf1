package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"escapewatch/internal/event"
	"escapewatch/internal/testutil"
)

// stormWrites is how many times the storm reads release_agent and opens it for writing: many times the storming
// cgroup's budget (500 at once, 100 a second) in the time it takes, even on an emulated CPU.
const stormWrites = 2000

// stormFor is how long the storm then writes new values (two records each): long enough for the budget's
// steady rate, not only its burst, to be what holds the storm back.
const stormFor = 20 * time.Second

// maxSensorRSS bounds the sensor's resident memory after the storm (the race detector multiplies it).
func maxSensorRSS() int {
	if raceDetector {
		return 400 << 20
	}
	return 100 << 20
}

// TestPrivilegedStormCannotHideEscape: a namespaced process in one cgroup reads release_agent in a loop, opens it
// for writing in a loop, then writes changing values into it for stormFor; meanwhile a process in another cgroup runs the whole escape. The
// escape's findings all arrive (TRC-1010, EW-1001, EW-1004), the storm shows as EW-1005 summaries that count
// what was repeated and what was lost and give the hierarchy's release_agent as the kernel has it, and the sensor's memory stays
// bounded.
func TestPrivilegedStormCannotHideEscape(t *testing.T) {
	s := startSensor(t)
	noise := testutil.MountHierarchy(t)
	h := testutil.MountHierarchy(t)
	stormDirs := testutil.CgroupDirs(t, "ewstorm"+randomHex(t, 4))
	escapeDirs := testutil.CgroupDirs(t, "ewescape"+randomHex(t, 4))

	argv := inNamespace("sh", "-c", testutil.JoinCgroups(stormDirs)+shellAct+fmt.Sprintf(
		`i=0; while [ $i -lt 2000 ]; do read -r v < %[1]s; i=$((i+1)); done
i=0; while [ $i -lt %[2]d ]; do i=$((i+1)); exec 3>>%[1]s; done
read -r up rest < /proc/uptime; end=$((${up%%.*}+%[3]d))
i=0; while :; do i=$((i+1)); echo /storm-$i > %[1]s
  if [ $((i%%50)) -eq 0 ]; then read -r up rest < /proc/uptime; [ ${up%%.*} -lt $end ] || break; fi; done
echo /storm-final > %[1]s; echo "values $i"`, noise.Agent(), stormWrites, int(stormFor.Seconds())))
	storm := exec.Command(argv[0], argv[1:]...)
	stormOut := &syncBuffer{}
	storm.Stdout = stormOut
	if err := storm.Start(); err != nil {
		t.Fatal(err)
	}
	// The escape runs once the storm has exhausted its budget.
	for start := time.Now(); len(s.matching(func(f finding) bool { return f.SigMetadata.ID == "EW-1005" })) == 0; {
		if time.Since(start) > waitLimit {
			t.Fatal("no EW-1005: the storm never exceeded its budget")
		}
		time.Sleep(50 * time.Millisecond)
	}

	marker := filepath.Join(t.TempDir(), "escaped")
	agent := agentScript(t, marker)
	escape := runAct(t, inNamespace("sh", "-c", testutil.JoinCgroups(escapeDirs)+shellAct+fmt.Sprintf(
		`echo %[2]s > %[1]s/release_agent; mkdir -p %[1]s/x; echo 1 > %[1]s/x/notify_on_release
sh -c 'echo $$ > %[1]s/x/cgroup.procs'`, h.Dir, agent))...)
	if err := storm.Wait(); err != nil {
		t.Fatalf("the storm: %v", err)
	}
	stormer := parseActor(t, stormOut.String())

	s.waitForWithin(t, "the escape's TRC-1010", readyLimit, trc1010By(escape.HostPID))
	s.waitForWithin(t, "the escape's EW-1001", readyLimit, changedBy(escape.HostPID))
	executedAgent(t, s, agent)
	if !waitForFile(marker, waitLimit) {
		t.Fatal("the agent never ran: the escape did not work")
	}

	// The storm's last value is known: its write was delivered (the budget had refilled a little), or the losses
	// that followed it are summarised with it, from the kernel's state.
	// The storm's findings come first: on an emulated CPU, printing and reading them takes a while.
	s.waitForWithin(t, "the storm's final value", readyLimit, func(f finding) bool {
		return (f.SigMetadata.ID == "EW-1005" && f.Data["releaseAgent"] == "/storm-final") ||
			(f.SigMetadata.ID == "EW-1001" && f.Data["value"] == "/storm-final")
	})
	// The values the storm lost are summarised with its hierarchy (within a second of the loss: the final value's
	// own finding may come first).
	s.waitForWithin(t, "an EW-1005 for the storm's hierarchy", readyLimit, func(f finding) bool {
		return f.SigMetadata.ID == "EW-1005" && f.Data["hierarchy"] == noise.Name
	})
	summaries := s.matching(func(f finding) bool { return f.SigMetadata.ID == "EW-1005" && f.Data["hierarchy"] == noise.Name })
	summary := summaries[len(summaries)-1]
	var lost, repeated float64
	for _, f := range s.matching(func(f finding) bool { return f.SigMetadata.ID == "EW-1005" }) {
		if strings.HasSuffix(fmt.Sprint(f.Data["cgroup"]), filepath.Base(stormDirs[0])) {
			n, _ := f.Data["lost"].(float64)
			lost += n
			n, _ = f.Data["repeated"].(float64)
			repeated += n
		}
	}
	if repeated == 0 {
		t.Errorf("storm summaries: no repeats counted, after %d opens of the same file by the same process", stormWrites)
	}
	setBy, _ := summary.Data["setBy"].(map[string]any)
	if lost == 0 || summary.Data["hierarchy"] != noise.Name || setBy["trust"] != event.TrustOutside {
		t.Errorf("storm summaries: %v lost in all; last %v; want losses counted, hierarchy %s set from outside",
			lost, summary.Data, noise.Name)
	}
	changed := len(s.matching(func(f finding) bool {
		return f.SigMetadata.ID == "EW-1001" && f.Event.HostProcessID == stormer.HostPID
	}))
	outLines := strings.Split(strings.TrimSpace(stormOut.String()), "\n")
	values := outLines[len(outLines)-1] // "values N"
	t.Logf("storm (%s written in %s): %d EW-1001 findings delivered, %v records reported lost, %v repeated",
		values, stormFor, changed, lost, repeated)

	rss := procStatusKiB(t, s.cmd.Process.Pid, "VmRSS")
	if rss<<10 > maxSensorRSS() {
		t.Errorf("sensor RSS %d KiB after the storm, want at most %d MiB", rss, maxSensorRSS()>>20)
	}
	t.Logf("sensor RSS after the storm: %d KiB", rss)

	// Every record the storm made is accounted for: delivered (its findings, with the repeats their aggregates
	// stand for, written when the sensor stops), or counted by the kernel as lost or repeated (EW-1005).
	if code := s.stop(syscall.SIGINT); code != 0 {
		t.Fatalf("sensor exited with %d on SIGINT", code)
	}
	n, err := strconv.Atoi(strings.TrimPrefix(values, "values "))
	if err != nil {
		t.Fatalf("the storm printed %q", values)
	}
	made := stormWrites + 2*(n+1) // the opens, then an open and a value for each write and the final one
	delivered := 0
	for _, f := range s.matching(func(f finding) bool {
		return (f.SigMetadata.ID == "TRC-1010" || f.SigMetadata.ID == "EW-1001") && f.Event.HostProcessID == stormer.HostPID
	}) {
		delivered += max(1, f.aggregate) // an aggregate stands for the repeats after the finding written first
	}
	lost, repeated = 0, 0
	for _, f := range s.matching(func(f finding) bool { return f.SigMetadata.ID == "EW-1005" }) {
		if strings.HasSuffix(fmt.Sprint(f.Data["cgroup"]), filepath.Base(stormDirs[0])) {
			l, _ := f.Data["lost"].(float64)
			r, _ := f.Data["repeated"].(float64)
			lost, repeated = lost+l, repeated+r
		}
	}
	if got := delivered + int(lost) + int(repeated); got != made {
		t.Errorf("the storm made %d records: %d delivered + %v lost + %v repeated = %d", made, delivered, lost, repeated, got)
	}
}
