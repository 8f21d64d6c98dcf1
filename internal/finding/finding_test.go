package finding

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"testing"

	"escapewatch/internal/event"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func sample(data map[string]any) Finding {
	return Finding{
		SigMetadata: Metadata{
			ID:          "TEST-1",
			Version:     "1",
			Name:        "Test rule",
			EventName:   "test_rule",
			Description: "A rule for tests.",
			Properties: map[string]any{
				"Severity":    2,
				"Category":    "test",
				"external_id": "T0000",
			},
		},
		Event: event.Event{
			Timestamp:   1750942312094527411,
			ProcessID:   27,
			ProcessName: "sh",
			ContainerID: "3f2b9c1e",
			Container:   event.Container{ID: "3f2b9c1e", Name: "lab"},
			EventID:     event.SecurityInodeRenameID,
			EventName:   event.SecurityInodeRename,
			ArgsNum:     2,
			Syscall:     "renameat2",
			ContextFlags: event.ContextFlags{
				ContainerStarted: true,
			},
			Args: []event.Argument{
				{ArgMeta: event.ArgMeta{Name: "old_path", Type: "const char*"}, Value: "/tmp/a"},
				{ArgMeta: event.ArgMeta{Name: "new_path", Type: "const char*"}, Value: "/tmp/cgrp/release_agent"},
			},
		},
		Data: data,
	}
}

func TestMarshalGolden(t *testing.T) {
	tests := []struct {
		name   string
		golden string
		f      Finding
	}{
		{"nil data", "testdata/finding_nil_data.golden.json", sample(nil)},
		{"empty data is null too", "testdata/finding_nil_data.golden.json", sample(map[string]any{})},
		{"data", "testdata/finding_data.golden.json", sample(map[string]any{"hierarchy": "rdma", "old": "", "new": "/payload"})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.MarshalIndent(tt.f, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			if *update {
				if err := os.WriteFile(tt.golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(tt.golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// TestShape checks the contract independently of the golden files: exactly
// three top-level keys, the metadata keys, and an integer severity.
func TestShape(t *testing.T) {
	out, err := json.Marshal(sample(nil))
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(out, &top); err != nil {
		t.Fatal(err)
	}
	if len(top) != 3 || string(top["Data"]) != "null" || top["Event"] == nil || top["SigMetadata"] == nil {
		t.Fatalf("top level = %s", out)
	}
	var meta map[string]json.RawMessage
	if err := json.Unmarshal(top["SigMetadata"], &meta); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ID", "Version", "Name", "EventName", "Description", "Properties"} {
		if _, ok := meta[k]; !ok {
			t.Errorf("SigMetadata lacks %q", k)
		}
	}
	if len(meta) != 6 {
		t.Errorf("SigMetadata has %d keys, want 6: %s", len(meta), top["SigMetadata"])
	}
	if !bytes.Contains(meta["Properties"], []byte(`"Severity":2`)) {
		t.Errorf("Severity is not the integer 2: %s", meta["Properties"])
	}
}
