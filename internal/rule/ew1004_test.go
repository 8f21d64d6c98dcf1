package rule

import (
	"testing"
	"time"

	"escapewatch/internal/event"
)

func TestEW1004(t *testing.T) {
	now := time.Unix(1000, 0)
	r := NewEW1004()
	r.now = func() time.Time { return now }
	write := func(value, origin string, ret int) {
		ev := event.Event{EventName: event.ReleaseAgentChanged, Origin: origin, ReturnValue: ret, HostProcessID: 42,
			ContainerID: "c1", Args: []event.Argument{arg("hierarchy", "const char*", "h"), arg("value", "const char*", value)}}
		if f, err := r.OnEvent(&ev); f != nil || err != nil {
			t.Fatalf("a write is not itself an EW-1004 finding: %v %v", f, err)
		}
	}
	exec := func(path string) bool {
		ev := event.Event{EventName: event.UsermodeHelperExec, Origin: event.OriginHost,
			Args: []event.Argument{arg("pathname", "const char*", path)}}
		f, err := r.OnEvent(&ev)
		if err != nil {
			t.Fatal(err)
		}
		if f != nil {
			wb := f.Data["writtenBy"].(map[string]any)
			if wb["hostProcessId"] != 42 || wb["containerId"] != "c1" || f.Data["linkedRule"] != "EW-1001" {
				t.Errorf("link: %v", f.Data)
			}
		}
		return f != nil
	}
	write("/payload", event.OriginContainer, 9)
	write("/lib/systemd/systemd-cgroups-agent", event.OriginHost, 35)
	write("/refused", event.OriginContainer, -1)
	cases := []struct {
		path string
		want bool
	}{
		{"/payload", true},
		{"/lib/systemd/systemd-cgroups-agent", false}, // the host's own agent
		{"/refused", false},                           // the kernel refused that write
		{"/sbin/modprobe", false},                     // never written
	}
	for _, c := range cases {
		if got := exec(c.path); got != c.want {
			t.Errorf("exec %s: fired %v, want %v", c.path, got, c.want)
		}
	}
	now = now.Add(DefaultAgentWindow + time.Second)
	if exec("/payload") {
		t.Error("a write older than the window must not be linked")
	}
}
