package rule

import (
	"testing"

	"escapewatch/internal/event"
)

func TestEW1002(t *testing.T) {
	for _, tt := range []struct {
		name    string
		ev      event.Event
		refused any
		wantErr bool
	}{
		{"accepted", event.Event{EventName: event.ReleaseAgentMountOption, Args: []event.Argument{arg("value", "const char*", "/p")}}, false, false},
		{"refused", event.Event{EventName: event.ReleaseAgentMountOption, ReturnValue: -1, Args: []event.Argument{arg("value", "const char*", "/p")}}, true, false},
		{"missing value", event.Event{EventName: event.ReleaseAgentMountOption}, nil, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, err := EW1002{}.OnEvent(&tt.ev)
			if tt.wantErr {
				if err == nil {
					t.Fatal("want an error")
				}
				return
			}
			if err != nil || f.Data["value"] != "/p" || f.Data["refused"] != tt.refused {
				t.Fatalf("finding %v error %v", f, err)
			}
		})
	}
}
