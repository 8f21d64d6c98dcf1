package deploy

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"escapewatch/internal/testutil"
)

const (
	unitPath    = "systemd/escapewatch.service"
	unitBinary  = "/usr/local/bin/escapewatch"
	unitSandbox = 31 // systemd-analyze security's exposure (0-100) of the unit today; lower is safer
)

// unitCapabilities: the pod's set less CAP_SYS_RESOURCE, which LimitMEMLOCK=infinity makes unnecessary.
var unitCapabilities = []string{"CAP_BPF", "CAP_DAC_READ_SEARCH", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE"}

// unit is a parsed unit file: section -> key -> values in order (a key may repeat).
type unit map[string]map[string][]string

func parseUnit(data []byte) (unit, error) {
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		case section == "":
			return nil, fmt.Errorf("line %d: %q before any [section]", n, line)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || strings.HasSuffix(line, `\`) {
				return nil, fmt.Errorf("line %d: %q: want KEY=VALUE on one line", n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u, sc.Err()
}

// get is the last value of a key, the one systemd uses for single-valued settings.
func (u unit) get(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

func loadUnit(t *testing.T) unit {
	t.Helper()
	data, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	u, err := parseUnit(data)
	if err != nil {
		t.Fatalf("%s: %v", unitPath, err)
	}
	return u
}

func TestSystemdUnit(t *testing.T) {
	u := loadUnit(t)
	cmdline := strings.Fields(u.get("Service", "ExecStart"))
	if len(cmdline) == 0 || cmdline[0] != unitBinary {
		t.Fatalf("ExecStart %q: want %s first", cmdline, unitBinary)
	}
	flags, err := runArgs(cmdline[1:])
	if err != nil {
		t.Fatal(err)
	}
	host, _, err := net.SplitHostPort(flags["--metrics-addr"])
	if err != nil || !net.ParseIP(host).IsLoopback() {
		t.Errorf("--metrics-addr %q: want a loopback address (the endpoint is unauthenticated)", flags["--metrics-addr"])
	}
	// The spool must be inside a state directory: the only writable place under ProtectSystem=strict.
	stateDirs := strings.Fields(strings.Join(u["Service"]["StateDirectory"], " "))
	if spool := flags["--spool-dir"]; !slices.ContainsFunc(stateDirs, func(d string) bool {
		return spool == "/var/lib/"+d || strings.HasPrefix(spool, "/var/lib/"+d+"/")
	}) {
		t.Errorf("--spool-dir %q is in no StateDirectory= (%q): ProtectSystem=strict leaves it read-only", spool, stateDirs)
	}

	caps := strings.Fields(strings.Join(u["Service"]["CapabilityBoundingSet"], " "))
	slices.Sort(caps)
	if !slices.Equal(caps, unitCapabilities) {
		t.Errorf("CapabilityBoundingSet = %q, want exactly %q", caps, unitCapabilities)
	}

	for _, tc := range []struct{ key, want string }{
		{"Restart", "on-failure"},
		{"LimitMEMLOCK", "infinity"},
		{"NoNewPrivileges", "yes"},
		{"ProtectSystem", "strict"},
		{"ProtectHome", "yes"},
		{"PrivateTmp", "yes"},
		{"ProtectKernelTunables", "yes"},
		{"MemoryDenyWriteExecute", "yes"},
		{"LockPersonality", "yes"},
		{"RestrictRealtime", "yes"},
		{"SystemCallArchitectures", "native"},
		// Not running as another user: the runtime sockets are root-only (and the capabilities would need to be
		// ambient).
		{"User", ""},
		// hidepid would hide exactly the processes the sensor must see.
		{"ProtectProc", ""},
	} {
		if got := u.get("Service", tc.key); got != tc.want {
			t.Errorf("%s=%q, want %q", tc.key, got, tc.want)
		}
	}
	filter := u.get("Service", "SystemCallFilter")
	for _, call := range []string{"@system-service", "bpf", "perf_event_open"} {
		if !slices.Contains(strings.Fields(filter), call) {
			t.Errorf("SystemCallFilter=%s lacks %s", filter, call)
		}
	}
}

// TestSystemdAnalyze has systemd check the unit as it would load it: unknown keys, bad values and a missing
// binary are only warnings at boot, so any output fails the test. Then its security report must not get worse.
func TestSystemdAnalyze(t *testing.T) {
	analyze := testutil.RequireTool(t, "systemd-analyze", "systemd")
	data, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	// verify requires ExecStart's binary to exist; any executable does, so this test's own binary stands in.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	from, to := "ExecStart="+unitBinary+" ", "ExecStart="+self+" "
	if !bytes.Contains(data, []byte(from)) {
		t.Fatalf("%s has no line starting %q", unitPath, from)
	}
	unitFile := filepath.Join(t.TempDir(), "escapewatch.service")
	if err := os.WriteFile(unitFile, bytes.Replace(data, []byte(from), []byte(to), 1), 0o644); err != nil {
		t.Fatal(err)
	}

	out, err := exec.Command(analyze, "verify", "--man=no", unitFile).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unitPath, err, out)
	}

	// Offline analysis of a unit file needs systemd 250 or later.
	out, err = exec.Command(analyze, "security", "--offline=true", fmt.Sprintf("--threshold=%d", unitSandbox), unitFile).CombinedOutput()
	if bytes.Contains(out, []byte("unrecognized option")) {
		msg := fmt.Sprintf("systemd-analyze security --offline needs systemd 250 or later (Debian 12 has 252): %s", bytes.TrimSpace(out))
		if os.Getenv(testutil.RequirePrivilegedEnv) == "1" {
			t.Fatalf("%s, and %s=1 forbids skipping", msg, testutil.RequirePrivilegedEnv)
		}
		t.Skip(msg)
	}
	if err != nil {
		t.Errorf("systemd-analyze security: the unit's exposure rose above %d (a sandboxing setting was weakened or dropped; restore it, or raise unitSandbox with the reason): %v\n%s",
			unitSandbox, err, out)
	}
}
