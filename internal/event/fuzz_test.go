package event

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzDecode checks that Decode never panics and that what it accepts
// re-encodes to JSON that decodes again to the same encoding.
func FuzzDecode(f *testing.F) {
	for _, line := range readLines(f, traceeLines) {
		f.Add(line)
	}
	for _, s := range []string{
		``, `null`, `[]`, `{`, `{"args":[{"type":"int","value":1e99}]}`,
		`{"eventId":"732","args":[{"name":"flags","type":"int","value":"O_WRONLY"}]}`,
		`{"args":[{"type":"const char**","value":["a",{"b":1}]}]}`,
		`{"args":[{"type":"float","value":1e-50}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		ev, err := Decode(line)
		if err != nil {
			return
		}
		first, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("Marshal of a decoded event: %v", err)
		}
		again, err := Decode(first)
		if err != nil {
			t.Fatalf("Decode of our own encoding %s: %v", first, err)
		}
		second, err := json.Marshal(again)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, second) {
			t.Fatalf("encoding is not stable:\n%s\n%s", first, second)
		}
	})
}
