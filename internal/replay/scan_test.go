package replay

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"escapewatch/internal/event"
)

func nest(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }

// scanCases are TestScanEvent's table, and seeds of FuzzFastPath.
var scanCases = []struct {
	name    string
	line    string
	ok      bool   // the scanner is certain Decode accepts the line
	event   string // the name it then finds
	decodes bool   // Decode accepts the line (checked, so the table cannot claim what Decode does not do)
}{
	// Lines the scanner decides.
	{"empty object", `{}`, true, "", true},
	{"name", `{"eventName":"openat","args":[]}`, true, "openat", true},
	{"JSON whitespace around", " \t{ \"eventName\" : \"openat\" }\r\n", true, "openat", true},
	{"last key wins, case folded", `{"EVENTNAME":"a","eventname":"b"}`, true, "b", true},
	{"null keeps the name", `{"eventName":"a","eventName":null}`, true, "a", true},
	{"nested eventName keys are not the name", `{"a":{"eventName":"x"},"args":[{"value":{"eventName":"y"}}],"eventName":"z"}`, true, "z", true},
	{"name with non-name bytes", `{"eventName":" odd name!"}`, true, " odd name!", true},
	{"Tracee's kinds", `{"eventId":"732","processId":-5,"cgroupId":3,"threadEntityId":4294967295,"stackAddresses":[18446744073709551615,0],` +
		`"executable":{"path":"/bin/sh"},"container":{"id":"c","image":"i"},"kubernetes":{"podSandbox":true},` +
		`"contextFlags":{"containerStarted":true,"isCompat":false},"matchedPolicies":[""],"args":[{"name":"fd","type":"int","value":-100}]}`,
		true, "", true},
	{"int edges", `{"timestamp":-9223372036854775808,"userId":9223372036854775807,"argsNum":-0}`, true, "", true},
	{"eventId edges", `{"eventId":"-9223372036854775808"}`, true, "", true},
	{"null for every kind", `{"processId":null,"processName":null,"executable":null,"container":{"id":null},"eventId":null,` +
		`"matchedPolicies":[null],"stackAddresses":[null],"contextFlags":{"isCompat":null},"args":[null,{"name":null}],` +
		`"metadata":{"Tags":null,"Properties":null},"eventName":null}`, true, "", true},
	{"metadata by field names", `{"metadata":{"Version":"1","tags":["a"],"PROPERTIES":{"Severity":3,"big":1e999,"\u00e9":"\ud800"}}}`, true, "", true},
	{"argument values are anything", `{"args":[{"name":"x","type":"int","value":{"a":[1e999,"\u0000",true,null]}},{"value":"O_WRONLY"}]}`, true, "", true},
	{"unknown keys hold anything", `{"foo":[{"eventName":7,"a\"b":1}],"bar":-1.5e+3}`, true, "", true},
	{"invalid UTF-8 in a string field", "{\"processName\":\"\xff\xfe\",\"x\":\"\xc3\"}", true, "", true},
	{"depth 10000", `{"x":` + nest(9999) + `}`, true, "", true},

	// Lines Decode accepts that the scanner leaves to it.
	{"escaped key", `{"event\u004eame":"x"}`, false, "", true},
	{"escaped name", `{"eventName":"open\u0061t"}`, false, "", true},
	{"non-ASCII name", `{"eventName":"é"}`, false, "", true},
	{"Kelvin sign folds to k", "{\"\u212aubernetes\":{}}", false, "", true},
	{"eventId with a leading zero", `{"eventId":"0732"}`, false, "", true},
	{"eventId null in a string", `{"eventId":"null"}`, false, "", true},
	{"Unicode space after the object", "{}\u00a0", false, "", true},

	// Lines Decode rejects.
	{"string for int", `{"processId":"1"}`, false, "", false},
	{"fraction for int", `{"timestamp":1.0}`, false, "", false},
	{"exponent for int", `{"timestamp":1e3}`, false, "", false},
	{"int overflow", `{"timestamp":9223372036854775808}`, false, "", false},
	{"int underflow", `{"timestamp":-9223372036854775809}`, false, "", false},
	{"negative uint", `{"cgroupId":-1}`, false, "", false},
	{"minus zero uint", `{"cgroupId":-0}`, false, "", false},
	{"uint32 overflow", `{"threadEntityId":4294967296}`, false, "", false},
	{"uint64 overflow", `{"stackAddresses":[18446744073709551616]}`, false, "", false},
	{"huge uint64", `{"stackAddresses":[184467440737095516150]}`, false, "", false},
	{"unquoted eventId", `{"eventId":732}`, false, "", false},
	{"eventId not an integer", `{"eventId":"7.5"}`, false, "", false},
	{"eventId empty", `{"eventId":""}`, false, "", false},
	{"number for the name", `{"eventName":7}`, false, "", false},
	{"string for a struct", `{"executable":"/bin/sh"}`, false, "", false},
	{"number for a file's path", `{"executable":{"path":1}}`, false, "", false},
	{"bool for a container's id", `{"container":{"ID":true}}`, false, "", false},
	{"string for podSandbox", `{"kubernetes":{"podSandbox":"yes"}}`, false, "", false},
	{"number for a flag", `{"contextFlags":{"containerStarted":1}}`, false, "", false},
	{"array for a struct", `{"contextFlags":[]}`, false, "", false},
	{"string for tags", `{"metadata":{"Tags":"a"}}`, false, "", false},
	{"array for properties", `{"metadata":{"Properties":[]}}`, false, "", false},
	{"array for metadata", `{"metadata":[]}`, false, "", false},
	{"object for args", `{"args":{}}`, false, "", false},
	{"number as an argument", `{"args":[1]}`, false, "", false},
	{"number for an argument's name", `{"args":[{"name":1}]}`, false, "", false},
	{"bool for an argument's type, case folded", `{"args":[{"TYPE":false}]}`, false, "", false},
	{"number in matchedPolicies", `{"matchedPolicies":[1]}`, false, "", false},
	{"fraction in stackAddresses", `{"stackAddresses":[1.5]}`, false, "", false},
	{"long s folds to s", "{\"\u017fyscall\":1}", false, "", false},
	{"a mistyped duplicate", `{"processId":1,"processId":"2"}`, false, "", false},

	// Lines that are not one JSON object.
	{"blank", ``, false, "", false},
	{"array", `[]`, false, "", false},
	{"two objects", `{} {}`, false, "", false},
	{"unterminated", `{"eventName":"x"`, false, "", false},
	{"unterminated string", `{"eventName":"x`, false, "", false},
	{"trailing comma", `{"a":1,}`, false, "", false},
	{"missing colon", `{"a" 1}`, false, "", false},
	{"leading zero", `{"a":01}`, false, "", false},
	{"leading zero in an int field", `{"processId":01}`, false, "", false},
	{"lone minus", `{"processId":-}`, false, "", false},
	{"bare fraction dot", `{"a":1.}`, false, "", false},
	{"bare exponent", `{"a":1e}`, false, "", false},
	{"bad literal", `{"a":tru}`, false, "", false},
	{"control character", "{\"a\":\"\x01\"}", false, "", false},
	{"bad escape", `{"a":"\x"}`, false, "", false},
	{"bad unicode escape", `{"a":"\u12g4"}`, false, "", false},
	{"short unicode escape", `{"a":"\u12"}`, false, "", false},
	{"NUL", "{\"a\":1\x00}", false, "", false},
	{"depth 10001", `{"x":` + nest(10000) + `}`, false, "", false},
}

func TestScanEvent(t *testing.T) {
	for _, tt := range scanCases {
		t.Run(tt.name, func(t *testing.T) {
			name, ok := scanEvent([]byte(tt.line))
			if ok != tt.ok || ok && string(name) != tt.event {
				t.Errorf("scanEvent = %q, %v; want %q, %v", name, ok, tt.event, tt.ok)
			}
			ev, err := event.Decode([]byte(tt.line))
			if (err == nil) != tt.decodes {
				t.Fatalf("Decode error %v; the table says it decodes: %v", err, tt.decodes)
			}
			if ok && ev.EventName != string(name) {
				t.Errorf("Decode's EventName %q, scanned %q", ev.EventName, name)
			}
		})
	}
}

func TestScanEventAllocs(t *testing.T) {
	line := []byte(`{"eventName":"openat","args":[{"name":"pathname","type":"const char*","value":"/etc/passwd"}]}`)
	if n := testing.AllocsPerRun(100, func() { scanEvent(line) }); n != 0 {
		t.Errorf("scanEvent allocates %v times, want 0", n)
	}
}

// TestFieldKinds checks the scanner's field tables against event.Event's types, so a field added there or a
// type changed cannot go unnoticed: every field's JSON name must give the kind its Go type decodes from.
func TestFieldKinds(t *testing.T) {
	structs := map[reflect.Type]kind{
		reflect.TypeFor[event.Event]():        eventKind,
		reflect.TypeFor[event.File]():         fileKind,
		reflect.TypeFor[event.Container]():    containerKind,
		reflect.TypeFor[event.Kubernetes]():   kubernetesKind,
		reflect.TypeFor[event.ContextFlags](): contextFlagsKind,
		reflect.TypeFor[event.Metadata]():     metadataKind,
		reflect.TypeFor[event.Argument]():     argKind,
	}
	others := map[reflect.Type]kind{
		reflect.TypeFor[string]():           stringKind,
		reflect.TypeFor[bool]():             boolKind,
		reflect.TypeFor[int]():              intKind,
		reflect.TypeFor[uint]():             uintKind,
		reflect.TypeFor[uint32]():           uint32Kind,
		reflect.TypeFor[[]string]():         stringsKind,
		reflect.TypeFor[[]uint64]():         uint64sKind,
		reflect.TypeFor[[]event.Argument](): argsKind,
		reflect.TypeFor[*event.Metadata]():  metadataKind,
		reflect.TypeFor[map[string]any]():   propertiesKind,
		reflect.TypeFor[any]():              anyValue,
	}
	for st, sk := range structs {
		folded := map[string]bool{}
		typed := 0 // fields of a kind other than anyValue, which fieldKinds must list and only they
		for _, f := range jsonFields(st) {
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" {
				name = f.Name
			}
			want, ok := others[f.Type]
			if k, isStruct := structs[f.Type]; isStruct {
				want, ok = k, true
			}
			switch {
			case strings.Contains(opts, "string") && f.Type.Kind() == reflect.Int:
				want = quotedIntKind
			case st == reflect.TypeFor[event.Event]() && f.Name == "EventName":
				want = eventNameKind
			case !ok:
				t.Errorf("%s.%s: no scanner kind for %v", st.Name(), f.Name, f.Type)
				continue
			}
			if want != anyValue {
				typed++
			}
			lower := strings.ToLower(name)
			if folded[lower] {
				t.Errorf("%s: two fields fold to %q: encoding/json would pick by field order", st.Name(), lower)
			}
			folded[lower] = true
			if len(lower) > maxFieldName {
				t.Errorf("%s.%s: name %q is longer than maxFieldName", st.Name(), f.Name, name)
			}
			for _, key := range []string{name, lower, strings.ToUpper(name)} {
				if got, end := fieldKey([]byte(`"`+key+`"`), 0, sk); got != want || end != len(key)+2 {
					t.Errorf("%s.%s: key %q: kind %d, end %d; want %d, %d", st.Name(), f.Name, key, got, end, want, len(key)+2)
				}
			}
		}
		if typed != len(fieldKinds[sk]) {
			t.Errorf("%s has %d typed fields, fieldKinds lists %d", st.Name(), typed, len(fieldKinds[sk]))
		}
	}
}

// jsonFields lists the fields encoding/json decodes into, embedded structs' fields promoted.
func jsonFields(t reflect.Type) []reflect.StructField {
	var out []reflect.StructField
	for f := range t.Fields() {
		switch {
		case !f.IsExported() || f.Tag.Get("json") == "-":
		case f.Anonymous && f.Type.Kind() == reflect.Struct && f.Tag.Get("json") == "":
			out = append(out, jsonFields(f.Type)...)
		default:
			out = append(out, f)
		}
	}
	return out
}

// TestScanEventShortValues puts every string of up to four bytes from an alphabet of JSON's punctuation and
// look-alikes into a few places of a line: the scanner must be certain only of lines Decode accepts, with the
// name Decode finds, and where the value may be anything it must agree with encoding/json on which are JSON.
// Fuzzing finds such strings only by chance.
func TestScanEventShortValues(t *testing.T) {
	const alphabet = "{}[]:,\"\\ 01-+.eEtnua/\v\x01\xc3"
	places := []struct{ before, after string }{
		{`{"a":`, `}`}, // any value: exact
		{`{"processId":`, `}`},
		{`{"eventName":`, `}`},
		{`{"eventId":`, `}`},
		{`{"args":[`, `]}`},
		{`{"x":1,`, `:2}`}, // a key
		{``, ``},
	}
	var value []byte
	var try func(n int)
	try = func(n int) {
		for _, p := range places {
			line := []byte(p.before + string(value) + p.after)
			name, ok := scanEvent(line)
			if p.before == `{"a":` && ok != json.Valid(line) {
				t.Errorf("%q: scanEvent certain %v, encoding/json.Valid %v", line, ok, json.Valid(line))
			}
			if !ok {
				continue
			}
			if ev, err := event.Decode(line); err != nil || ev.EventName != string(name) {
				t.Errorf("%q: scanEvent is certain, with the name %q; Decode: %q, %v", line, name, ev.EventName, err)
			}
		}
		if n == 0 {
			return
		}
		for i := range len(alphabet) {
			value = append(value, alphabet[i])
			try(n - 1)
			value = value[:len(value)-1]
		}
	}
	try(4)
}
