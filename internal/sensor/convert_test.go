package sensor

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"escapewatch/internal/enrich"
)

// TestEventTruncated: the arguments whose path the kernel cut are named in the event's "truncated", in argument
// order, and nothing else is; the key is left out when nothing was cut.
func TestEventTruncated(t *testing.T) {
	classifier, err := enrich.NewClassifier("/proc")
	if err != nil {
		t.Fatal(err)
	}
	conv, err := newConverter(classifier)
	if err != nil {
		t.Fatal(err)
	}
	const (
		pathCut = kernelEwFactEW_FACT_PATH_TRUNCATED
		baseCut = kernelEwFactEW_FACT_BASE_PATH_TRUNCATED
	)
	tests := []struct {
		name     string
		kind     kernelEwKind
		facts    kernelEwFact
		want     []string
		wantJSON string // substring of the encoded event; "" for no "truncated" key at all
	}{
		{"open, whole", kernelEwKindEW_KIND_FILE_OPEN, kernelEwFactEW_FACT_CGROUP1AGENT, nil, ""},
		{"open, path cut", kernelEwKindEW_KIND_FILE_OPEN, kernelEwFactEW_FACT_CGROUP1AGENT | pathCut,
			[]string{"pathname"}, `"truncated":["pathname"]`},
		{"agent write, path cut", kernelEwKindEW_KIND_AGENT_WRITE, pathCut, []string{"pathname"}, `"truncated":["pathname"]`},
		{"notify write, path cut", kernelEwKindEW_KIND_NOTIFY_WRITE, pathCut, []string{"pathname"}, `"truncated":["pathname"]`},
		{"rename, new name's directory cut", kernelEwKindEW_KIND_INODE_RENAME, pathCut, []string{"new_path"}, `"truncated":["new_path"]`},
		{"rename, old name's directory cut", kernelEwKindEW_KIND_INODE_RENAME, baseCut, []string{"old_path"}, `"truncated":["old_path"]`},
		{"rename, both cut", kernelEwKindEW_KIND_INODE_RENAME, pathCut | baseCut, []string{"old_path", "new_path"},
			`"truncated":["old_path","new_path"]`},
		{"rename, whole", kernelEwKindEW_KIND_INODE_RENAME, kernelEwFactEW_FACT_DIR_RESOLVED, nil, ""},
		// Only opens, writes and renames carry walked paths; other kinds never report a cut.
		{"mount option", kernelEwKindEW_KIND_MOUNT_OPTION, pathCut | baseCut, nil, ""},
		{"helper exec", kernelEwKindEW_KIND_HELPER_EXEC, pathCut, nil, ""},
		{"cut cgroup path is no argument", kernelEwKindEW_KIND_FILE_OPEN, kernelEwFactEW_FACT_CGROUP_CUT, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Record{Kind: tt.kind, Facts: tt.facts, Path: "/d/d/release_agent", ArgPath: "x", BasePath: "/d/d"}
			ev := conv.event(&r)
			if !slices.Equal(ev.Truncated, tt.want) {
				t.Fatalf("truncated = %q, want %q", ev.Truncated, tt.want)
			}
			for _, name := range ev.Truncated {
				if _, ok := ev.Arg(name); !ok {
					t.Errorf("truncated names %q, not an argument of %s", name, ev.EventName)
				}
			}
			out, err := json.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			if has := strings.Contains(string(out), `"truncated"`); tt.wantJSON == "" && has ||
				tt.wantJSON != "" && !strings.Contains(string(out), tt.wantJSON) {
				t.Errorf("encoded %s, want %s", out, tt.wantJSON)
			}
		})
	}
}

// TestRenameTargetsAgentCutDirectory: a refused rename whose new name's directory is known only by its cut lower
// part is kept, never resolved from that part; the same rename with its directory whole is resolved (here: not
// a cgroup v1 root, so dropped).
func TestRenameTargetsAgentCutDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := &converter{procRoot: "/proc"}
	r := Record{Kind: kernelEwKindEW_KIND_INODE_RENAME, Path: dir, ArgPath: "sub/release_agent",
		Task: Task{HostPID: uint32(os.Getpid())}}
	if c.renameTargetsAgent(&r) {
		t.Fatalf("a rename into %s/sub (not a cgroup v1 root) was kept", dir)
	}
	r.Facts |= kernelEwFactEW_FACT_PATH_TRUNCATED
	if !c.renameTargetsAgent(&r) {
		t.Error("a rename into a cut directory was dropped")
	}
}
