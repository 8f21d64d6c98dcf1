package rule

import (
	"testing"

	"escapewatch/internal/event"
)

func TestEW1005(t *testing.T) {
	lossOf := func(args ...event.Argument) *event.Event {
		return &event.Event{EventName: event.RecordsLost, Origin: event.OriginContainer, Args: args}
	}
	base := []event.Argument{arg("lost", "unsigned long", uint64(1234)), arg("repeated", "unsigned long", uint64(7)),
		arg("last_lost", "const char*", event.ReleaseAgentChanged), arg("cgroup", "const char*", "/docker/abc")}
	repeatsOnly := []event.Argument{arg("lost", "unsigned long", uint64(0)), arg("repeated", "unsigned long", uint64(7)),
		arg("last_lost", "const char*", event.SecurityFileOpen), arg("cgroup", "const char*", "/docker/abc")}
	planted := append(append([]event.Argument{}, base...), arg("hierarchy", "const char*", "h"),
		arg("release_agent", "const char*", "/payload"), arg("set_how", "const char*", event.SetWrite),
		arg("set_trust", "const char*", event.TrustOutside), arg("set_by_pid", "int", int32(42)), arg("set_by_comm", "const char*", "sh"))
	tests := []struct {
		name         string
		ev           *event.Event
		wantErr      error
		wantSeverity int
		wantAgent    any
		wantLost     uint64
	}{
		{name: "no hierarchy", ev: lossOf(base...), wantSeverity: 2, wantLost: 1234},
		{name: "a hierarchy planted from outside", ev: lossOf(planted...), wantSeverity: 3, wantAgent: "/payload", wantLost: 1234},
		{name: "repeats only", ev: lossOf(repeatsOnly...), wantSeverity: 1},
		{name: "mistyped count", ev: lossOf(arg("lost", "unsigned long", "many")), wantErr: ErrMistypedArg},
		{name: "no repeat count", ev: lossOf(arg("lost", "unsigned long", uint64(1))), wantErr: ErrMistypedArg},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := EW1005{}.OnEvent(tt.ev)
			if err != tt.wantErr {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if got := f.SigMetadata.Properties["Severity"]; got != tt.wantSeverity {
				t.Errorf("severity %v, want %d", got, tt.wantSeverity)
			}
			if f.Data["lost"] != tt.wantLost || f.Data["repeated"] != uint64(7) || f.Data["cgroup"] != "/docker/abc" || f.Data["releaseAgent"] != tt.wantAgent {
				t.Errorf("data %v", f.Data)
			}
		})
	}
}
