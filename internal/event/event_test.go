package event

import "testing"

func TestOriginOf(t *testing.T) {
	tests := []struct {
		name string
		ev   Event
		want string
	}{
		{"sensor origin wins", Event{Origin: OriginNamespaced, ContextFlags: ContextFlags{ContainerStarted: true}}, OriginNamespaced},
		{"container started", Event{ContainerID: "abc", Container: Container{ID: "abc"}, ContextFlags: ContextFlags{ContainerStarted: true}}, OriginContainer},
		{"container not started yet", Event{ContainerID: "abc", Container: Container{ID: "abc"}}, OriginContainerInit},
		{"host", Event{}, OriginHost},
		// Tracee's Origin() reads container.id, not containerId.
		{"containerId alone is host", Event{ContainerID: "abc"}, OriginHost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := OriginOf(&tt.ev); got != tt.want {
				t.Errorf("OriginOf = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestArg(t *testing.T) {
	ev := Event{Args: []Argument{
		{ArgMeta: ArgMeta{Name: "pathname", Type: "const char*"}, Value: "/first"},
		{ArgMeta: ArgMeta{Name: "flags", Type: "int"}, Value: int32(1)},
		{ArgMeta: ArgMeta{Name: "pathname", Type: "const char*"}, Value: "/second"},
	}}
	tests := []struct {
		name   string
		arg    string
		want   any
		wantOK bool
	}{
		{"first of duplicates, as Tracee", "pathname", "/first", true},
		{"present", "flags", int32(1), true},
		{"absent", "dev", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, ok := ev.Arg(tt.arg)
			if ok != tt.wantOK || a.Value != tt.want {
				t.Errorf("Arg(%q) = %v, %v; want %v, %v", tt.arg, a.Value, ok, tt.want, tt.wantOK)
			}
		})
	}
}
