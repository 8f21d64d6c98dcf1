package rule

import (
	"testing"

	"escapewatch/internal/event"
)

func TestEW1003(t *testing.T) {
	tests := []struct {
		name    string
		enabled any
		ret     int
		fires   bool
		wantErr bool
	}{
		{"enabled", true, 2, true, false},
		{"enabled, write refused", true, -22, true, false},
		{"disabled", false, 2, false, false},
		{"missing", nil, 0, false, true},
		{"mistyped", "1", 0, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := event.Event{EventName: event.NotifyOnReleaseChanged, ReturnValue: tt.ret, Args: []event.Argument{
				arg("hierarchy", "const char*", "x"), arg("enabled", "bool", tt.enabled)}}
			f, err := EW1003{}.OnEvent(&ev)
			if (err != nil) != tt.wantErr || (f != nil) != tt.fires {
				t.Fatalf("finding %v error %v; want fires=%v err=%v", f, err, tt.fires, tt.wantErr)
			}
			if f != nil && (f.Data["hierarchy"] != "x" || f.Data["refused"] != (tt.ret < 0)) {
				t.Errorf("data %v, want hierarchy x, refused %v", f.Data, tt.ret < 0)
			}
		})
	}
}
