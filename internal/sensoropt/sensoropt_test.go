package sensoropt

import (
	"strings"
	"testing"
)

func TestCheckAllowedCgroup(t *testing.T) {
	tests := []struct {
		path, wantErr string // wantErr "" = accepted
	}{
		{"/lxc.payload.web", ""},
		{"/machine.slice/libpod-abc.scope", ""},
		{"/" + strings.Repeat("x", MaxEnforceAllowLen-2), ""},
		{"/" + strings.Repeat("x", MaxEnforceAllowLen-1), "at most 127"},
		{"", "want an absolute cgroup path"},
		{"lxc.payload.web", "want an absolute cgroup path"},
		{"/", "would allow every process"},
		{"/machine.slice/", "remove the trailing slash"},
		{"/a\x00b", "NUL"},
	}
	for _, tt := range tests {
		err := CheckAllowedCgroup(tt.path)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("CheckAllowedCgroup(%q) = %v, want %q", tt.path, err, tt.wantErr)
		}
	}
}
