package event

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseOpenFlags(t *testing.T) {
	tests := []struct {
		name    string
		in      any
		want    int
		wantErr string // substring of the error; empty for success
	}{
		{"int", 0o101, 0o101, ""},
		{"int32 as Tracee decodes int", int32(0o100101), 0o100101, ""},
		{"int64", int64(2), 2, ""},
		{"uint32", uint32(1), 1, ""},
		{"uint64", uint64(0o2000001), 0o2000001, ""},
		{"uint8", uint8(2), 2, ""},
		{"json.Number", json.Number("33345"), 33345, ""},
		{"json.Number integral float", json.Number("1.0"), 1, ""},
		{"float64 integral", float64(1), 1, ""},
		{"float32 integral", float32(2), 2, ""},
		{"O_RDONLY", "O_RDONLY", 0, ""},
		{"O_WRONLY|O_CREAT|O_TRUNC", "O_WRONLY|O_CREAT|O_TRUNC", 0o1101, ""},
		{"O_RDWR|O_APPEND", "O_RDWR|O_APPEND", 0o2002, ""},
		{"Tracee's O_LARGEFILE is the kernel value", "O_RDONLY|O_LARGEFILE", 0o100000, ""},
		{"FASYNC as Tracee prints it", "O_WRONLY|FASYNC", 0o20001, ""},
		{"spaces around names", "O_WRONLY | O_TRUNC", 0o1001, ""},
		{"unknown name", "O_WRONLY|O_BOGUS", 0, `unknown open flag "O_BOGUS"`},
		{"lowercase is unknown", "o_wronly", 0, `unknown open flag "o_wronly"`},
		{"numeric string", "1", 0, `unknown open flag "1"`},
		{"empty name", "O_WRONLY|", 0, `unknown open flag ""`},
		{"empty string", "", 0, "empty string"},
		{"fraction", 1.5, 0, "1.5 is not an integer"},
		{"json.Number fraction", json.Number("0.5"), 0, "0.5 is not an integer"},
		{"uint64 overflow", uint64(1) << 63, 0, "out of range"},
		{"bool", true, 0, "value of type bool"},
		{"nil", nil, 0, "value of type <nil>"},
		{"slice", []string{"O_WRONLY"}, 0, "value of type []string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseOpenFlags(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrNotOpenFlags) {
					t.Fatalf("ParseOpenFlags(%#v) = %d, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseOpenFlags(%#v) = %#o, %v; want %#o", tt.in, got, err, tt.want)
			}
		})
	}
}
