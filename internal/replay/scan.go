package replay

import (
	"encoding/binary"
	"math"
	"math/bits"
)

// maxDepth is encoding/json's nesting limit; a deeper line is left to event.Decode, which rejects it.
const maxDepth = 10000

// scanEvent tells, in one pass over line and without allocating, whether event.Decode certainly accepts it,
// and if so the EventName it decodes (empty when the line has none). ok is false whenever that cannot be told
// cheaply: the line is not one JSON object, a known field at any depth holds a value Decode rejects, or it is
// unclear which field a key names or what the name is (escapes, non-ASCII bytes: encoding/json unescapes keys
// and folds their case by Unicode's rules, under which the Kelvin sign is a "k"). A false ok says nothing
// about the line: the caller decodes it, and Decode names the fault if there is one.
//
// The readers below take the index of a value's first byte and return the index after it, or -1 when they
// are not certain of it.
func scanEvent(line []byte) (name []byte, ok bool) {
	i := skipWS(line, 0)
	if i >= len(line) || line[i] != '{' {
		return nil, false
	}
	name = line[:0]
	if i = object(line, i, 0, eventKind, &name); i < 0 {
		return nil, false
	}
	return name, skipWS(line, i) == len(line)
}

// kind is what event.Decode accepts for a field or an array's element. null is accepted for every kind but
// anyValue's own: encoding/json leaves the field as it was (or sets a pointer, slice or map to nil).
type kind uint8

const (
	anyValue       kind = iota // any JSON value: unknown keys, argument values, properties' values
	stringKind                 // a string
	boolKind                   // true or false
	intKind                    // an integer within Go's int
	uintKind                   // a non-negative integer within Go's uint
	uint32Kind                 // ... within uint32
	uint64Kind                 // ... within uint64
	quotedIntKind              // an int field with the ",string" option: a string holding an integer
	eventNameKind              // a string, which is the event's name
	stringsKind                // []string: an array of strings
	uint64sKind                // []uint64: an array of uint64s
	argsKind                   // []event.Argument: an array of argument objects
	propertiesKind             // map[string]any: any object
	// Objects whose keys name the fields of a struct, matched as encoding/json matches them.
	eventKind        // event.Event
	fileKind         // event.File
	containerKind    // event.Container
	kubernetesKind   // event.Kubernetes
	contextFlagsKind // event.ContextFlags
	metadataKind     // event.Metadata (its keys are its field names)
	argKind          // event.Argument, as its UnmarshalJSON decodes it
	kinds
)

// fieldKinds are the fields of each struct kind, by name in lower case: encoding/json matches a key to a
// field's name exactly or else ignoring case. TestFieldKinds checks them against the event package's types.
var fieldKinds = map[kind]map[string]kind{
	eventKind: {
		"timestamp": intKind, "threadstarttime": intKind, "processorid": intKind, "processid": intKind,
		"cgroupid": uintKind, "threadid": intKind, "parentprocessid": intKind, "hostprocessid": intKind,
		"hostthreadid": intKind, "hostparentprocessid": intKind, "userid": intKind, "mountnamespace": intKind,
		"pidnamespace": intKind, "processname": stringKind, "executable": fileKind, "hostname": stringKind,
		"containerid": stringKind, "container": containerKind, "kubernetes": kubernetesKind,
		"eventid": quotedIntKind, "eventname": eventNameKind, "matchedpolicies": stringsKind, "argsnum": intKind,
		"returnvalue": intKind, "syscall": stringKind, "stackaddresses": uint64sKind,
		"contextflags": contextFlagsKind, "threadentityid": uint32Kind, "processentityid": uint32Kind,
		"parententityid": uint32Kind, "args": argsKind, "metadata": metadataKind, "origin": stringKind,
		"action": stringKind, "truncated": stringsKind,
	},
	fileKind:         {"path": stringKind},
	containerKind:    {"id": stringKind, "name": stringKind, "image": stringKind, "imagedigest": stringKind, "runtime": stringKind},
	kubernetesKind:   {"podname": stringKind, "podnamespace": stringKind, "poduid": stringKind, "podsandbox": boolKind},
	contextFlagsKind: {"containerstarted": boolKind, "iscompat": boolKind},
	metadataKind:     {"version": stringKind, "description": stringKind, "tags": stringsKind, "properties": propertiesKind},
	argKind:          {"name": stringKind, "type": stringKind},
}

// maxFieldName is the length of the longest field name (hostParentProcessId): no longer key names a field.
const maxFieldName = 19

// keyWords is a key of up to 24 bytes in lower case, eight bytes to a word, zero past its end.
type keyWords [3]uint64

type fieldEntry struct {
	key  keyWords
	kind kind
}

// fieldTable is fieldKinds by struct kind and name length, for a look-up that compares a few words.
var fieldTable = func() (t [kinds][maxFieldName + 1][]fieldEntry) {
	for sk, fields := range fieldKinds {
		for name, k := range fields {
			var w keyWords
			for j := range len(name) {
				w[j/8] |= uint64(name[j]) << (8 * (j % 8))
			}
			t[sk][len(name)] = append(t[sk][len(name)], fieldEntry{w, k})
		}
	}
	return t
}()

// Eight bytes at a time: most of a Tracee line is keys and strings (paths, IDs, digests).
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// load returns the eight bytes of b from i, zeros past its end.
func load(b []byte, i int) uint64 {
	if i+8 <= len(b) {
		return binary.LittleEndian.Uint64(b[i:])
	}
	var t [8]byte
	if i < len(b) {
		copy(t[:], b[i:])
	}
	return binary.LittleEndian.Uint64(t[:])
}

// stops has the high bit set in each byte of x that is a quote, a backslash or a control character, and
// maybe in bytes above the first such one (a subtraction's borrow), never below: the lowest is exact.
func stops(x uint64) uint64 {
	q := x ^ (ones * '"')
	bs := x ^ (ones * '\\')
	return ((q-ones)&^q | (bs-ones)&^bs | (x-ones*0x20)&^x) & highs
}

// lower puts the ASCII capitals of x in lower case.
func lower(x uint64) uint64 {
	h := x &^ highs // adding to seven bits cannot carry into the next byte
	capital := (h + ones*(0x80-'A')) &^ (h + ones*(0x80-'Z'-1)) &^ x & highs
	return x | capital>>2
}

// fieldKey reads the key at b[i] of an object of struct kind k, and returns the kind of the field it names
// (anyValue for none) and the index after it. It is not certain of a key with an escape or a non-ASCII byte,
// which could unescape or fold to a field's name.
func fieldKey(b []byte, i int, k kind) (kind, int) {
	start := i + 1
	var w keyWords
	for j := 0; ; j++ {
		x := load(b, start+8*j)
		if m := stops(x) | x&highs; m != 0 {
			n := bits.TrailingZeros64(m) / 8
			end := start + 8*j + n
			if end >= len(b) || b[end] != '"' {
				return 0, -1
			}
			if j < len(w) {
				w[j] = lower(x) & (1<<(8*n) - 1)
			}
			if end-start > maxFieldName {
				return anyValue, end + 1
			}
			for _, f := range fieldTable[k][end-start] {
				if f.key == w {
					return f.kind, end + 1
				}
			}
			return anyValue, end + 1
		}
		if j < len(w) {
			w[j] = lower(x)
		}
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && b[i] <= ' ' && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

func literal(b []byte, i int, lit string) int {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// value reads any JSON value.
func value(b []byte, i, depth int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{':
		return object(b, i, depth, anyValue, nil)
	case '[':
		return array(b, i, depth, anyValue)
	case 't':
		return literal(b, i, "true")
	case 'f':
		return literal(b, i, "false")
	case 'n':
		return literal(b, i, "null")
	}
	return number(b, i)
}

// typed reads a value of kind k (eventNameKind's strings are object's to read).
func typed(b []byte, i, depth int, k kind) int {
	if k == anyValue {
		return value(b, i, depth)
	}
	if i >= len(b) {
		return -1
	}
	c := b[i]
	if c == 'n' {
		return literal(b, i, "null")
	}
	switch k {
	case stringKind:
		if c == '"' {
			return skipString(b, i)
		}
	case boolKind:
		if c == 't' {
			return literal(b, i, "true")
		}
		return literal(b, i, "false")
	case intKind:
		return integer(b, i, math.MaxInt, true)
	case uintKind:
		return integer(b, i, math.MaxUint, false)
	case uint32Kind:
		return integer(b, i, math.MaxUint32, false)
	case uint64Kind:
		return integer(b, i, math.MaxUint64, false)
	case quotedIntKind:
		return quotedInt(b, i)
	case stringsKind:
		if c == '[' {
			return array(b, i, depth, stringKind)
		}
	case uint64sKind:
		if c == '[' {
			return array(b, i, depth, uint64Kind)
		}
	case argsKind:
		if c == '[' {
			return array(b, i, depth, argKind)
		}
	case propertiesKind:
		if c == '{' {
			return object(b, i, depth, anyValue, nil)
		}
	case fileKind, containerKind, kubernetesKind, contextFlagsKind, metadataKind, argKind:
		if c == '{' {
			return object(b, i, depth, k, nil)
		}
	}
	return -1
}

// object reads an object whose keys name fields of struct kind k, or any object for anyValue; name is set to
// the value of each eventName field (eventKind's objects only).
func object(b []byte, i, depth int, k kind, name *[]byte) int {
	if depth++; depth > maxDepth {
		return -1
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return -1
		}
		vk := anyValue
		if k == anyValue {
			i = skipString(b, i)
		} else {
			vk, i = fieldKey(b, i, k)
		}
		if i < 0 {
			return -1
		}
		if i = skipWS(b, i); i >= len(b) || b[i] != ':' {
			return -1
		}
		i = skipWS(b, i+1)
		if vk == eventNameKind && i < len(b) && b[i] == '"' {
			i = eventName(b, i, name)
		} else {
			i = typed(b, i, depth, vk)
		}
		if i < 0 {
			return -1
		}
		var done bool
		if i, done = separator(b, i, '}'); i < 0 || done {
			return i
		}
	}
}

// array reads an array whose elements are of kind elem.
func array(b []byte, i, depth int, elem kind) int {
	if depth++; depth > maxDepth {
		return -1
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1
	}
	for {
		if i = typed(b, i, depth, elem); i < 0 {
			return -1
		}
		var done bool
		if i, done = separator(b, i, ']'); i < 0 || done {
			return i
		}
	}
}

// separator reads what follows an object's member or an array's element: a comma (more follow: next is past it
// and its spaces) or closer (done: next is past it); next is -1 for anything else.
func separator(b []byte, i int, closer byte) (next int, done bool) {
	if i = skipWS(b, i); i >= len(b) {
		return -1, false
	}
	switch b[i] {
	case ',':
		return skipWS(b, i+1), false
	case closer:
		return i + 1, true
	}
	return -1, false
}

// eventName reads a string as the event's name into *name. It is not certain of one with an escape or a
// non-ASCII byte, whose decoded form could differ from its bytes (invalid UTF-8 becomes U+FFFD).
func eventName(b []byte, i int, name *[]byte) int {
	start := i + 1
	for i = start; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			*name = b[start:i:i]
			return i + 1
		case c == '\\' || c < 0x20 || c >= 0x80:
			return -1
		}
	}
	return -1
}

// integer reads an integer no greater than max in magnitude (max+1 when negative: signed is Go's int), with no
// sign unless signed. A fraction or an exponent is left where it starts, for the caller to fail on.
func integer(b []byte, i int, max uint64, signed bool) int {
	if i < len(b) && b[i] == '-' {
		if !signed {
			return -1
		}
		i++
		max++
	}
	start := i
	var v uint64
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		d := uint64(b[i] - '0')
		if v > math.MaxUint64/10 || v == math.MaxUint64/10 && d > math.MaxUint64%10 {
			return -1
		}
		v = v*10 + d
	}
	if i == start || b[start] == '0' && i-start > 1 || v > max { // no digits, a leading zero, out of range
		return -1
	}
	return i
}

// quotedInt reads an int field with the ",string" option: a string holding just an integer, as Tracee writes
// eventId. Other strings Decode may accept ("0732", "null") are left to it.
func quotedInt(b []byte, i int) int {
	if b[i] != '"' {
		return -1
	}
	if i = integer(b, i+1, math.MaxInt, true); i < 0 || i >= len(b) || b[i] != '"' {
		return -1
	}
	return i + 1
}

// number reads a JSON number.
func number(b []byte, i int) int {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(b, i)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		if i++; i >= len(b) || b[i] < '0' || b[i] > '9' {
			return -1
		}
		i = digits(b, i)
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		if i++; i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return -1
		}
		i = digits(b, i)
	}
	return i
}

// digits returns the index of the first non-digit at or after i.
func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// skipString reads a string. Like encoding/json it accepts any bytes but quotes, backslashes and control
// characters between escapes, invalid UTF-8 included.
func skipString(b []byte, i int) int {
	i++
	for {
		for i+8 <= len(b) {
			if m := stops(binary.LittleEndian.Uint64(b[i:])); m != 0 {
				i += bits.TrailingZeros64(m) / 8
				break
			}
			i += 8
		}
		if i >= len(b) {
			return -1
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1
		case c == '\\':
			if i = escape(b, i); i < 0 {
				return -1
			}
		case c < 0x20:
			return -1
		default:
			i++
		}
	}
}

// escape returns the index after the escape sequence at b[i] ('\\'), or -1 when it is not a valid one.
func escape(b []byte, i int) int {
	if i+1 >= len(b) {
		return -1
	}
	switch b[i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return i + 2
	case 'u':
		if i+6 > len(b) {
			return -1
		}
		for _, c := range b[i+2 : i+6] {
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return -1
			}
		}
		return i + 6
	}
	return -1
}
