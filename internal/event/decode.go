package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Decode errors; the error Decode returns wraps one of them and the cause.
var (
	ErrInvalidJSON  = errors.New("invalid JSON")
	ErrNotObject    = errors.New("not a JSON object")
	ErrInvalidEvent = errors.New("invalid event")
)

// Decode parses one Tracee JSON line. It rejects anything that is not a
// single JSON object, and objects whose known fields have the wrong JSON
// type (Tracee's own decoder rejects those too); unknown fields are ignored.
// Argument values never cause an error: see Argument.UnmarshalJSON.
func Decode(line []byte) (Event, error) {
	var ev Event
	trimmed := bytes.TrimSpace(line)
	if len(trimmed) == 0 {
		return ev, fmt.Errorf("%w: empty input", ErrInvalidJSON)
	}
	if trimmed[0] != '{' {
		// Tell "valid JSON, wrong kind" from "not JSON at all".
		var v any
		if err := json.Unmarshal(trimmed, &v); err != nil {
			return ev, fmt.Errorf("%w: %w", ErrInvalidJSON, err)
		}
		return ev, fmt.Errorf("%w: found %s", ErrNotObject, kindOf(v))
	}

	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber() // keeps metadata numbers exact
	if err := dec.Decode(&ev); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) || errors.Is(err, io.ErrUnexpectedEOF) {
			return Event{}, fmt.Errorf("%w: %w", ErrInvalidJSON, err)
		}
		return Event{}, fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	if rest := bytes.TrimSpace(trimmed[dec.InputOffset():]); len(rest) > 0 {
		return Event{}, fmt.Errorf("%w: trailing data after the object", ErrInvalidJSON)
	}
	return ev, nil
}

func kindOf(v any) string {
	switch v.(type) {
	case []any:
		return "array"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "boolean"
	default:
		return "null"
	}
}

// numericKind is the Go type a JSON number becomes for a given argument type.
type numericKind int

const (
	kindInt32 numericKind = iota + 1
	kindInt64
	kindUint32
	kindUint64
	kindFloat32
	kindFloat64
	kindUint16
	kindInt16
	kindInt8
	kindUint8
)

// numericKinds is Tracee v0.24's trace.Argument.UnmarshalJSON table, plus the
// Go-style type names ("int32", "uint64", ...) that later Tracee versions
// write, so that their events decode to the same Go types.
var numericKinds = map[string]numericKind{
	"int": kindInt32, "pid_t": kindInt32, "uid_t": kindInt32, "gid_t": kindInt32,
	"mqd_t": kindInt32, "clockid_t": kindInt32, "const clockid_t": kindInt32,
	"key_t": kindInt32, "key_serial_t": kindInt32, "timer_t": kindInt32,
	"landlock_rule_type": kindInt32, "int32": kindInt32,
	"long": kindInt64, "int64": kindInt64,
	"unsigned int": kindUint32, "u32": kindUint32, "mode_t": kindUint32,
	"dev_t": kindUint32, "uint32": kindUint32,
	"unsigned long": kindUint64, "u64": kindUint64, "off_t": kindUint64,
	"size_t": kindUint64, "uint64": kindUint64,
	"float":   kindFloat32,
	"float64": kindFloat64, "double": kindFloat64,
	"unsigned short": kindUint16, "old_uid_t": kindUint16, "old_gid_t": kindUint16,
	"umode_t": kindUint16, "u16": kindUint16, "uint16": kindUint16,
	"int16": kindInt16,
	"int8":  kindInt8,
	"u8":    kindUint8, "uint8": kindUint8,
}

// UnmarshalJSON decodes an argument the way Tracee does: numbers become the
// Go type its "type" names (int32 for "int", uint64 for pointers and
// "unsigned long", ...) and string arrays become []string. Unlike Tracee it
// never fails on a value that does not fit its type: the value is kept as
// decoded (json.Number for numbers) so a rule can report it as mistyped and
// re-encoding reproduces the input.
func (a *Argument) UnmarshalJSON(b []byte) error {
	type argument Argument // no UnmarshalJSON method, so no recursion
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode((*argument)(a)); err != nil {
		return fmt.Errorf("args: %w", err)
	}
	switch v := a.Value.(type) {
	case json.Number:
		a.Value = typedNumber(a.Type, v)
	case []any:
		if a.Type == "const char*const*" || a.Type == "const char**" {
			a.Value = stringSlice(v)
		}
	}
	return nil
}

func typedNumber(argType string, n json.Number) any {
	s := n.String()
	if strings.HasSuffix(argType, "*") {
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return u
		}
		return n
	}
	kind, ok := numericKinds[argType]
	if !ok {
		return n
	}
	var (
		v   any
		err error
	)
	switch kind {
	case kindInt32:
		var i int64
		i, err = strconv.ParseInt(s, 10, 32)
		v = int32(i)
	case kindInt64:
		v, err = strconv.ParseInt(s, 10, 64)
	case kindUint32:
		var u uint64
		u, err = strconv.ParseUint(s, 10, 32)
		v = uint32(u)
	case kindUint64:
		v, err = strconv.ParseUint(s, 10, 64)
	case kindFloat32:
		var f float64
		f, err = strconv.ParseFloat(s, 32)
		v = float32(f)
	case kindFloat64:
		v, err = strconv.ParseFloat(s, 64)
	case kindUint16:
		var u uint64
		u, err = strconv.ParseUint(s, 10, 16)
		v = uint16(u)
	case kindInt16:
		var i int64
		i, err = strconv.ParseInt(s, 10, 16)
		v = int16(i)
	case kindInt8:
		var i int64
		i, err = strconv.ParseInt(s, 10, 8)
		v = int8(i)
	case kindUint8:
		var u uint64
		u, err = strconv.ParseUint(s, 10, 8)
		v = uint8(u)
	}
	if err != nil {
		return n
	}
	return v
}

// stringSlice gives Tracee's []string for a string array. An array holding
// anything else is kept as is: Tracee would stringify its elements, which
// would change what re-encoding writes.
func stringSlice(vs []any) any {
	out := make([]string, len(vs))
	for i, v := range vs {
		s, ok := v.(string)
		if !ok {
			return vs
		}
		out[i] = s
	}
	return out
}
