package rule

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"reflect"
	"testing"

	"escapewatch/internal/event"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// Open flag values for the tests (Linux, x86-64).
const (
	oRdOnly = 0o0
	oWrOnly = 0o1
	oRdWr   = 0o2
	oCreat  = 0o100
	oTrunc  = 0o1000
	oAppend = 0o2000
	oLarge  = 0o100000
)

func arg(name, typ string, v any) event.Argument {
	return event.Argument{ArgMeta: event.ArgMeta{Name: name, Type: typ}, Value: v}
}

// openEvent is a security_file_open as Tracee decodes it: flags is int32.
func openEvent(pathname string, flags any) event.Event {
	return event.Event{EventName: event.SecurityFileOpen, Args: []event.Argument{
		arg("pathname", "const char*", pathname),
		arg("flags", "int", flags),
	}}
}

func renameEvent(newPath any) event.Event {
	return event.Event{EventName: event.SecurityInodeRename, Args: []event.Argument{
		arg("old_path", "const char*", "/tmp/cgrp/x"),
		arg("new_path", "const char*", newPath),
	}}
}

func TestTRC1010OnEvent(t *testing.T) {
	tests := []struct {
		name     string
		ev       event.Event
		wantFind bool
		wantErr  error
	}{
		// Tracee's published cases (cgroup_release_agent_modification_test.go).
		{"tracee: security_file_open", openEvent("/tmp/cgrp/release_agent", int32(oWrOnly)), true, nil},
		{"tracee: security_inode_rename", renameEvent("/tmp/cgrp/release_agent"), true, nil},
		{"tracee: wrong open flags", openEvent("/tmp/cgrp/release_agent", int32(oRdOnly)), false, nil},
		{"tracee: wrong open path", openEvent("/tmp/something", int32(oWrOnly)), false, nil},
		{"tracee: wrong rename path", renameEvent("/tmp/something"), false, nil},

		// Access modes: only O_WRONLY and O_RDWR write.
		{"O_RDWR", openEvent("/sys/fs/cgroup/rdma/release_agent", int32(oRdWr)), true, nil},
		{"O_RDONLY|O_TRUNC does not write", openEvent("/tmp/cgrp/release_agent", int32(oRdOnly|oTrunc)), false, nil},
		{"O_RDONLY|O_CREAT does not write", openEvent("/tmp/cgrp/release_agent", int32(oRdOnly|oCreat)), false, nil},
		{"O_WRONLY|O_APPEND", openEvent("/tmp/cgrp/release_agent", int32(oWrOnly|oAppend)), true, nil},
		{"shell redirection flags", openEvent("/tmp/cgrp/release_agent", int32(oWrOnly|oCreat|oTrunc|oLarge)), true, nil},
		{"access mode 3 is not a write", openEvent("/tmp/cgrp/release_agent", int32(3)), false, nil},

		// Flags in every form Tracee writes or decodes.
		{"flags as int", openEvent("/tmp/cgrp/release_agent", oWrOnly), true, nil},
		{"flags as int64", openEvent("/tmp/cgrp/release_agent", int64(oWrOnly)), true, nil},
		{"flags as json.Number", openEvent("/tmp/cgrp/release_agent", json.Number("577")), true, nil},
		{"flags as string", openEvent("/tmp/cgrp/release_agent", "O_WRONLY|O_TRUNC"), true, nil},
		{"flags as read-only string", openEvent("/tmp/cgrp/release_agent", "O_RDONLY|O_TRUNC"), false, nil},
		{"flags as O_RDWR|O_APPEND string", openEvent("/tmp/cgrp/release_agent", "O_RDWR|O_APPEND"), true, nil},

		// Names: path.Base must be exactly release_agent; the directory does
		// not matter at this level (the sensor's kernel filter handles it).
		{"release_agent.bak", openEvent("/tmp/cgrp/release_agent.bak", int32(oWrOnly)), false, nil},
		{"my_release_agent", openEvent("/tmp/cgrp/my_release_agent", int32(oWrOnly)), false, nil},
		{"/tmp/release_agent fires", openEvent("/tmp/release_agent", int32(oWrOnly)), true, nil},
		{"relative name fires", openEvent("release_agent", int32(oWrOnly)), true, nil},
		{"trailing slash is ignored by path.Base", openEvent("/tmp/cgrp/release_agent/", int32(oWrOnly)), true, nil},
		{"trailing /. is not", openEvent("/tmp/cgrp/release_agent/.", int32(oWrOnly)), false, nil},
		{"case matters", openEvent("/tmp/cgrp/RELEASE_AGENT", int32(oWrOnly)), false, nil},
		{"empty pathname", openEvent("", int32(oWrOnly)), false, nil},
		{"rename to a look-alike", renameEvent("/tmp/cgrp/release_agent.bak"), false, nil},
		{"rename to a directory called release_agent", renameEvent("/sys/fs/cgroup/rdma/child/release_agent/"), true, nil},

		// Missing and mistyped arguments: an error, never a finding.
		{"flags missing", event.Event{EventName: event.SecurityFileOpen, Args: []event.Argument{arg("pathname", "const char*", "/tmp/cgrp/release_agent")}}, false, ErrMissingArg},
		{"flags null", openEvent("/tmp/cgrp/release_agent", nil), false, ErrMissingArg},
		{"pathname missing on a write", event.Event{EventName: event.SecurityFileOpen, Args: []event.Argument{arg("flags", "int", int32(oWrOnly))}}, false, ErrMissingArg},
		{"pathname not needed on a read", event.Event{EventName: event.SecurityFileOpen, Args: []event.Argument{arg("flags", "int", int32(oRdOnly))}}, false, nil},
		{"new_path missing", event.Event{EventName: event.SecurityInodeRename}, false, ErrMissingArg},
		{"flags bool", openEvent("/tmp/cgrp/release_agent", true), false, ErrMistypedArg},
		{"flags unknown name", openEvent("/tmp/cgrp/release_agent", "O_WRONLY|O_BOGUS"), false, ErrMistypedArg},
		{"flags fraction", openEvent("/tmp/cgrp/release_agent", json.Number("1.5")), false, ErrMistypedArg},
		{"pathname not a string", event.Event{EventName: event.SecurityFileOpen, Args: []event.Argument{arg("pathname", "const char*", uint64(7)), arg("flags", "int", int32(oWrOnly))}}, false, ErrMistypedArg},
		{"new_path not a string", renameEvent([]string{"release_agent"}), false, ErrMistypedArg},

		{"other event", event.Event{EventName: "sched_process_exec"}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := TRC1010{}.OnEvent(&tt.ev)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if (f != nil) != tt.wantFind {
				t.Fatalf("finding = %v, want one: %v", f, tt.wantFind)
			}
			if f == nil {
				return
			}
			if f.SigMetadata.ID != "TRC-1010" || f.Data != nil {
				t.Errorf("finding metadata ID %q, data %v", f.SigMetadata.ID, f.Data)
			}
			if !reflect.DeepEqual(f.Event, tt.ev) {
				t.Errorf("finding carries %+v, want the triggering event %+v", f.Event, tt.ev)
			}
		})
	}
}

// TestTRC1010Golden locks the whole finding for a real Tracee line,
// metadata included, in testdata/trc1010_finding.golden.json.
func TestTRC1010Golden(t *testing.T) {
	line, err := os.ReadFile("testdata/trc1010_event.json")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := event.Decode(line)
	if err != nil {
		t.Fatal(err)
	}
	f, err := TRC1010{}.OnEvent(&ev)
	if err != nil || f == nil {
		t.Fatalf("OnEvent = %v, %v; want a finding", f, err)
	}
	got, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	const name = "testdata/trc1010_finding.golden.json"
	if *update {
		if err := os.WriteFile(name, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestTRC1010Metadata checks the published metadata against the spec,
// independently of the golden file.
func TestTRC1010Metadata(t *testing.T) {
	out, err := json.Marshal(TRC1010{}.Metadata())
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"ID":"TRC-1010","Version":"1","Name":"Cgroups release agent file modification",` +
		`"EventName":"cgroup_release_agent","Description":"The signature monitors the modification of the Cgroup release agent file. ` +
		`Unauthorized changes to this file may be indicative of an adversary trying to leverage Cgroup features for privilege ` +
		`escalation or container escaping techniques.","Properties":{"Category":"privilege-escalation","Kubernetes_Technique":"",` +
		`"Severity":3,"Technique":"Escape to Host","external_id":"T1611","id":"attack-pattern--4a5b7ade-8bb5-4853-84ed-23f262002665"}}`
	if string(out) != want {
		t.Errorf("metadata:\n got %s\nwant %s", out, want)
	}
}
