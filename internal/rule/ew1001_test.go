package rule

import (
	"errors"
	"testing"

	"escapewatch/internal/event"
)

func agentChanged(ret int, args ...event.Argument) event.Event {
	return event.Event{EventName: event.ReleaseAgentChanged, ReturnValue: ret, Args: args}
}

func TestEW1001(t *testing.T) {
	path := arg("pathname", "const char*", "/tmp/notes.txt")
	tests := []struct {
		name     string
		ev       event.Event
		severity int
		data     map[string]any
		wantErr  error
	}{
		{"value set", agentChanged(9, path, arg("hierarchy", "const char*", "x"), arg("value", "const char*", "/payload")),
			3, map[string]any{"hierarchy": "x", "value": "/payload", "refused": false}, nil},
		{"value replaced", agentChanged(9, path, arg("hierarchy", "const char*", "x"), arg("value", "const char*", "/b"),
			arg("old_value", "const char*", "/a")), 3, map[string]any{"hierarchy": "x", "value": "/b", "oldValue": "/a", "refused": false}, nil},
		{"cleared is low severity", agentChanged(1, path, arg("hierarchy", "const char*", "x"), arg("value", "const char*", "")),
			1, map[string]any{"hierarchy": "x", "value": "", "refused": false}, nil},
		{"refused write", agentChanged(-22, path, arg("hierarchy", "const char*", "x"), arg("value", "const char*", "/old")),
			3, map[string]any{"hierarchy": "x", "value": "/old", "refused": true}, nil},
		{"missing value", agentChanged(1, path, arg("hierarchy", "const char*", "x")), 0, nil, ErrMissingArg},
		{"mistyped hierarchy", agentChanged(1, path, arg("hierarchy", "const char*", 7), arg("value", "const char*", "/p")), 0, nil, ErrMistypedArg},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := EW1001{}.OnEvent(&tt.ev)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || f == nil {
				t.Fatalf("finding %v, error %v", f, err)
			}
			if f.SigMetadata.ID != "EW-1001" || f.SigMetadata.Properties["Severity"] != tt.severity {
				t.Errorf("metadata %+v, want EW-1001 severity %d", f.SigMetadata, tt.severity)
			}
			if len(f.Data) != len(tt.data) {
				t.Errorf("data %v, want %v", f.Data, tt.data)
			}
			for k, v := range tt.data {
				if f.Data[k] != v {
					t.Errorf("data[%s] = %v, want %v", k, f.Data[k], v)
				}
			}
		})
	}
	// Severity 1 on one finding must not leak into the rule's metadata.
	if (EW1001{}).Metadata().Properties["Severity"] != 3 {
		t.Fatal("metadata shared between findings")
	}
}
