package e2e

import (
	"bufio"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"escapewatch/internal/event"
	"escapewatch/internal/testutil"
)

// TestPrivilegedAgentChanged: EW-1001 reports the value the kernel stores after any write to a real
// release_agent, including the evasions TRC-1010 cannot see: a descriptor opened before the sensor started, a
// bind mount of the file under another name, and a write the kernel refuses.
func TestPrivilegedAgentChanged(t *testing.T) {
	h := testutil.MountHierarchy(t)

	// Opened before the sensor starts; written after.
	argv := inNamespace("sh", "-c", shellAct+"exec 3> "+h.Agent()+"; read go; echo /early-fd-payload >&3")
	early := exec.Command(argv[0], argv[1:]...)
	stdin, err := early.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := early.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := early.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	earlyAct := parseActor(t, line)

	s := startSensor(t)
	stdin.Write([]byte("go\n"))
	if err := early.Wait(); err != nil {
		t.Fatalf("the early writer: %v", err)
	}
	f := s.waitFor(t, "the write through an early descriptor", changedBy(earlyAct.HostPID))
	checkChanged(t, f, h.Agent(), h.Name, "/early-fd-payload", "")
	if got := s.matching(byPID(earlyAct.HostPID)); len(got) != 0 {
		t.Errorf("TRC-1010 cannot see this open (it happened before the sensor started), yet: %s", s.summary())
	}

	// A bind mount of the file under a harmless name.
	notes := filepath.Join(t.TempDir(), "notes.txt")
	bind := runAct(t, inNamespace("sh", "-c", "touch "+notes+" && mount --bind "+h.Agent()+" "+notes+" && "+
		shellAct+"echo /bind-payload > "+notes)...)
	f = s.waitFor(t, "the write through a bind mount", changedBy(bind.HostPID))
	checkChanged(t, f, notes, h.Name, "/bind-payload", "/early-fd-payload")

	// Without CAP_SYS_ADMIN the kernel refuses the write: reported, marked refused, value unchanged.
	refusedOut, _ := runExpectFailure(t, inNamespace("setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin",
		"sh", "-c", shellAct+"echo /refused-payload > "+h.Agent())...)
	refused := parseActor(t, refusedOut)
	f = s.waitFor(t, "the refused write", changedBy(refused.HostPID))
	if f.Event.ReturnValue >= 0 || f.Data["refused"] != true || f.Data["value"] != "/bind-payload" {
		t.Errorf("refused write: returnValue %d data %v; want < 0, refused, value unchanged", f.Event.ReturnValue, f.Data)
	}
}

func checkChanged(t *testing.T, f finding, pathname, hierarchy, value, oldValue string) {
	t.Helper()
	ev := f.Event
	if ev.EventName != event.ReleaseAgentChanged || f.arg("pathname") != pathname || f.arg("hierarchy") != hierarchy ||
		f.Data["value"] != value || ev.Origin != event.OriginNamespaced || ev.ReturnValue <= 0 || f.Data["refused"] != false {
		t.Errorf("EW-1001: event %s pathname %v hierarchy %v data %v origin %s returnValue %d; want %s %s %s value %s",
			ev.EventName, f.arg("pathname"), f.arg("hierarchy"), f.Data, ev.Origin, ev.ReturnValue,
			event.ReleaseAgentChanged, pathname, hierarchy, value)
	}
	if old, _ := f.Data["oldValue"].(string); oldValue != "" && strings.TrimSpace(old) != oldValue {
		t.Errorf("oldValue %q, want %q", old, oldValue)
	}
}

// TestPrivilegedAgentChangedWriteFamily: every write-family call into release_agent is EW-1001 with the value.
func TestPrivilegedAgentChangedWriteFamily(t *testing.T) {
	s := startSensor(t)
	h := testutil.MountHierarchy(t)
	for _, method := range []string{"writev", "pwrite", "sendfile", "splice"} {
		t.Run(method, func(t *testing.T) {
			value := "/" + method + "-payload"
			act := runAct(t, inNamespace(triggerBin, method, h.Agent(), value)...)
			f := s.waitFor(t, method, changedBy(act.HostPID))
			if f.Data["value"] != value || f.Data["refused"] != false {
				t.Errorf("%s: data %v, want value %s", method, f.Data, value)
			}
		})
	}
}
