package rule

import (
	"testing"

	"escapewatch/internal/event"
)

func TestEW1004(t *testing.T) {
	helper := func(path string, escape bool, extra ...event.Argument) *event.Event {
		args := append([]event.Argument{arg("pathname", "const char*", path), arg("escape", "bool", escape)}, extra...)
		return &event.Event{EventName: event.UsermodeHelperExec, Origin: event.OriginHost, Args: args}
	}
	written := []event.Argument{arg("hierarchy", "const char*", "h"), arg("set_how", "const char*", event.SetWrite),
		arg("set_trust", "const char*", event.TrustOutside), arg("set_by_pid", "int", int32(42)),
		arg("set_by_comm", "const char*", "sh")}
	cases := []struct {
		name     string
		exec     *event.Event
		want     bool
		wantHow  string
		wantLink string
	}{
		{name: "written from a container, linked", exec: helper("/payload", true, written...), want: true,
			wantHow: event.SetWrite, wantLink: "EW-1001"},
		{name: "mount option, linked", exec: helper("/mounted", true, arg("hierarchy", "const char*", "h"),
			arg("set_how", "const char*", event.SetMount), arg("set_trust", "const char*", event.TrustOutside)),
			want: true, wantHow: event.SetMount, wantLink: "EW-1002"},
		{name: "unwatched path", exec: helper("/aio", true, arg("hierarchy", "const char*", "h"),
			arg("set_how", "const char*", event.SetUnwatched), arg("set_trust", "const char*", event.TrustOutside)),
			want: true, wantHow: event.SetUnwatched},
		{name: "changed before the exec: no hierarchy holds it", exec: helper("/gone", true), want: true,
			wantHow: event.SetUnknown},
		{name: "the host's own agent", exec: helper("/lib/systemd/systemd-cgroups-agent", false), want: false},
		{name: "modprobe", exec: helper("/sbin/modprobe", false), want: false},
		{name: "no verdict (an older event)", exec: &event.Event{EventName: event.UsermodeHelperExec,
			Args: []event.Argument{arg("pathname", "const char*", "/payload")}}, want: false},
	}
	r := NewEW1004()
	plant := func(name, value string, ret int) {
		ev := event.Event{EventName: name, Origin: event.OriginContainer, ReturnValue: ret, HostProcessID: 42,
			ContainerID: "c1", Args: []event.Argument{arg("hierarchy", "const char*", "h"), arg("value", "const char*", value)}}
		if f, err := r.OnEvent(&ev); f != nil || err != nil {
			t.Fatalf("a planting is not itself an EW-1004 finding: %v %v", f, err)
		}
	}
	plant(event.ReleaseAgentChanged, "/payload", 9)
	plant(event.ReleaseAgentMountOption, "/mounted", 0)
	plant(event.ReleaseAgentChanged, "/aio-refused", -1)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := r.OnEvent(c.exec)
			if err != nil {
				t.Fatal(err)
			}
			if (f != nil) != c.want {
				t.Fatalf("fired %v, want %v", f != nil, c.want)
			}
			if f == nil {
				return
			}
			setBy := f.Data["setBy"].(map[string]any)
			if setBy["how"] != c.wantHow {
				t.Errorf("setBy.how %v, want %s", setBy["how"], c.wantHow)
			}
			if link, _ := f.Data["linkedRule"].(string); link != c.wantLink {
				t.Errorf("linkedRule %q, want %q", link, c.wantLink)
			}
			if c.wantLink != "" {
				wb := f.Data["writtenBy"].(map[string]any)
				if wb["hostProcessId"] != 42 || wb["containerId"] != "c1" {
					t.Errorf("writtenBy %v", wb)
				}
			}
			_, investigate := f.Data["investigate"]
			if want := c.wantHow == event.SetUnwatched || c.wantHow == event.SetUnknown; investigate != want {
				t.Errorf("investigate note present %v, want %v", investigate, want)
			}
		})
	}
}
