package event

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const traceeLines = "testdata/tracee_v0.24.jsonl"

// readLines returns the non-blank lines of a testdata file.
func readLines(t testing.TB, name string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var lines [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) > 0 {
			lines = append(lines, bytes.Clone(sc.Bytes()))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// TestRoundTrip is the replay-exactness guarantee: re-encoding a decoded
// Tracee line gives back the same JSON value (key order and number spelling
// aside).
func TestRoundTrip(t *testing.T) {
	for i, line := range readLines(t, traceeLines) {
		t.Run(fmt.Sprintf("line%d", i+1), func(t *testing.T) {
			ev, err := Decode(line)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			out, err := json.Marshal(ev)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			want, got := jsonValue(t, line), jsonValue(t, out)
			if !reflect.DeepEqual(want, got) {
				t.Errorf("re-encoded event differs from the input\n in: %s\nout: %s", line, out)
			}
		})
	}
}

// jsonValue decodes JSON generically, with every number in a canonical
// exact form so that 1.0 and 1 compare equal and big integers stay exact.
func jsonValue(t *testing.T, data []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decoding %s: %v", data, err)
	}
	return canonical(t, v)
}

func canonical(t *testing.T, v any) any {
	switch v := v.(type) {
	case json.Number:
		r, ok := new(big.Rat).SetString(v.String())
		if !ok {
			t.Fatalf("bad number %q", v)
		}
		return r.RatString()
	case []any:
		for i := range v {
			v[i] = canonical(t, v[i])
		}
	case map[string]any:
		for k := range v {
			v[k] = canonical(t, v[k])
		}
	}
	return v
}

// TestArgTypes locks the Go types argument values decode to (Tracee's
// unmarshaller's choices), in testdata/arg_types.golden.
func TestArgTypes(t *testing.T) {
	var b strings.Builder
	for i, line := range readLines(t, traceeLines) {
		ev, err := Decode(line)
		if err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		for _, a := range ev.Args {
			fmt.Fprintf(&b, "%d %s %s (%s): %T\n", i+1, ev.EventName, a.Name, a.Type, a.Value)
		}
	}
	golden(t, "testdata/arg_types.golden", []byte(b.String()))
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(name, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n got:\n%s\nwant:\n%s", filepath.Base(name), got, want)
	}
}

func TestDecodeFields(t *testing.T) {
	ev, err := Decode(readLines(t, traceeLines)[0])
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"eventId from its JSON string", ev.EventID, SecurityFileOpenID},
		{"eventName", ev.EventName, SecurityFileOpen},
		{"timestamp", ev.Timestamp, 1750942312094527411},
		{"containerStarted", ev.ContextFlags.ContainerStarted, true},
		{"container image", ev.Container.ImageName, "docker.io/library/ubuntu:22.04"},
		{"processEntityId", ev.ProcessEntityId, uint32(2391648121)},
		{"no origin from Tracee", ev.Origin, ""},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v (%T), want %v (%T)", c.name, c.got, c.got, c.want, c.want)
		}
	}
}

func TestArgumentValues(t *testing.T) {
	tests := []struct {
		name string
		json string
		want any
	}{
		{"int is int32", `{"name":"flags","type":"int","value":33345}`, int32(33345)},
		{"negative int", `{"name":"fd","type":"int","value":-100}`, int32(-100)},
		{"dev_t is uint32", `{"name":"dev","type":"dev_t","value":49}`, uint32(49)},
		{"unsigned long is uint64", `{"name":"ctime","type":"unsigned long","value":1750942298712004513}`, uint64(1750942298712004513)},
		{"pointer is uint64", `{"name":"addr","type":"void*","value":140733193388032}`, uint64(140733193388032)},
		{"long is int64", `{"name":"off","type":"long","value":-5}`, int64(-5)},
		{"umode_t is uint16", `{"name":"mode","type":"umode_t","value":33261}`, uint16(33261)},
		{"u8 is uint8", `{"name":"proto","type":"u8","value":17}`, uint8(17)},
		{"int8", `{"name":"x","type":"int8","value":-3}`, int8(-3)},
		{"float is float32", `{"name":"r","type":"float","value":0.5}`, float32(0.5)},
		{"double is float64", `{"name":"r","type":"double","value":0.25}`, 0.25},
		{"Go-style int32", `{"name":"flags","type":"int32","value":1}`, int32(1)},
		{"Go-style uint64", `{"name":"inode","type":"uint64","value":4}`, uint64(4)},
		{"string stays string", `{"name":"pathname","type":"const char*","value":"/a"}`, "/a"},
		{"parsed flags stay a string", `{"name":"flags","type":"string","value":"O_WRONLY"}`, "O_WRONLY"},
		{"string array", `{"name":"argv","type":"const char**","value":["sh","-c"]}`, []string{"sh", "-c"}},
		{"null", `{"name":"env","type":"const char**","value":null}`, nil},
		// Mistyped values are kept as decoded, never an error.
		{"int overflow kept raw", `{"name":"flags","type":"int","value":4294967296}`, json.Number("4294967296")},
		{"fraction for int kept raw", `{"name":"flags","type":"int","value":1.5}`, json.Number("1.5")},
		{"negative pointer kept raw", `{"name":"p","type":"void*","value":-1}`, json.Number("-1")},
		{"unknown numeric type kept raw", `{"name":"x","type":"trace.Pointer","value":7}`, json.Number("7")},
		{"string for int kept", `{"name":"flags","type":"int","value":"abc"}`, "abc"},
		{"bool for int kept", `{"name":"flags","type":"int","value":true}`, true},
		{"mixed array kept", `{"name":"argv","type":"const char**","value":["a",1]}`, []any{"a", json.Number("1")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a Argument
			if err := json.Unmarshal([]byte(tt.json), &a); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !reflect.DeepEqual(a.Value, tt.want) {
				t.Errorf("value = %#v (%T), want %#v (%T)", a.Value, a.Value, tt.want, tt.want)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		wantErr error
		wantMsg string
	}{
		{"not JSON", `hello`, ErrInvalidJSON, "invalid JSON: invalid character 'h' looking for beginning of value"},
		{"truncated object", `{"eventName":"security_file_open"`, ErrInvalidJSON, "invalid JSON: unexpected EOF"},
		{"syntax error inside", `{"eventName":}`, ErrInvalidJSON, "invalid JSON: invalid character '}' looking for beginning of value"},
		{"trailing data", `{} {}`, ErrInvalidJSON, "invalid JSON: trailing data after the object"},
		{"empty", `  `, ErrInvalidJSON, "invalid JSON: empty input"},
		{"array", `[{"eventName":"x"}]`, ErrNotObject, "not a JSON object: found array"},
		{"string", `"x"`, ErrNotObject, "not a JSON object: found string"},
		{"number", `42`, ErrNotObject, "not a JSON object: found number"},
		{"null", `null`, ErrNotObject, "not a JSON object: found null"},
		{"mistyped field", `{"processId":"27"}`, ErrInvalidEvent, "invalid event: json: cannot unmarshal string into Go struct field Event.processId of type int"},
		{"unquoted eventId", `{"eventId":732}`, ErrInvalidEvent, "invalid event: json: invalid use of ,string struct tag, trying to unmarshal unquoted value into int"},
		{"args not an array", `{"args":{}}`, ErrInvalidEvent, "invalid event: json: cannot unmarshal object into Go struct field Event.args of type []event.Argument"},
		{"argument not an object", `{"args":[5]}`, ErrInvalidEvent, "invalid event: args: json: cannot unmarshal number into Go value of type event.argument"},
		{"argument name not a string", `{"args":[{"name":1}]}`, ErrInvalidEvent, "invalid event: args: json: cannot unmarshal number into Go struct field argument.ArgMeta.name of type string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.line))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Decode(%q) error = %v, want %v", tt.line, err, tt.wantErr)
			}
			if err.Error() != tt.wantMsg {
				t.Errorf("message = %q, want %q", err.Error(), tt.wantMsg)
			}
		})
	}
}

func TestDecodeTolerance(t *testing.T) {
	tests := []struct {
		name string
		line string
	}{
		{"unknown fields", `{"eventName":"x","somethingNew":{"a":[1,2]},"podName":"old-style"}`},
		{"empty object", `{}`},
		{"surrounding whitespace and CR", " {\"eventName\":\"x\"}\r\n"},
		{"mistyped argument value", `{"eventName":"x","args":[{"name":"flags","type":"int","value":"O_WRONLY"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode([]byte(tt.line)); err != nil {
				t.Errorf("Decode(%q): %v", tt.line, err)
			}
		})
	}
}

func TestEncodeOrigin(t *testing.T) {
	tests := []struct {
		name   string
		origin string
		want   string // substring expected, or absent when empty
	}{
		{"set by the sensor", OriginNamespaced, `,"origin":"namespaced"}`},
		{"empty is omitted", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := json.Marshal(Event{EventName: "x", Origin: tt.origin})
			if err != nil {
				t.Fatal(err)
			}
			has := strings.Contains(string(out), `"origin"`)
			if tt.want == "" && has || tt.want != "" && !strings.HasSuffix(string(out), tt.want) {
				t.Errorf("encoded %s, want origin %q", out, tt.origin)
			}
		})
	}
}

// TestTruncatedRoundTrip: "truncated" is left out when nothing was cut, and decodes back to the names written.
func TestTruncatedRoundTrip(t *testing.T) {
	out, err := json.Marshal(Event{EventName: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), `"truncated"`) {
		t.Errorf("encoded %s: want no truncated key when nothing was cut", out)
	}
	out, err = json.Marshal(Event{EventName: "x", Truncated: []string{"pathname"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(out), `,"truncated":["pathname"]}`) {
		t.Errorf("encoded %s, want it to end with the truncated argument names", out)
	}
	ev, err := Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Truncated) != 1 || ev.Truncated[0] != "pathname" {
		t.Errorf("decoded truncated = %q, want [pathname]", ev.Truncated)
	}
}
