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
func scanEvent(line []byte) (name []byte, ok bool) {
	s := scanner{b: line, name: line[:0]}
	s.ws()
	if s.peek() != '{' || !s.object(0, eventKind) {
		return nil, false
	}
	s.ws()
	return s.name, s.i == len(s.b)
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
)

// maxFieldName is the length of the longest field name (hostParentProcessId): no longer key names a field.
const maxFieldName = 19

// field returns the kind of the field of struct kind k that key names, or anyValue when it names none. key is
// in lower case; encoding/json matches keys to field names exactly or else ignoring ASCII case.
func field(k kind, key []byte) kind {
	switch k {
	case eventKind:
		return eventField(key)
	case fileKind:
		if string(key) == "path" {
			return stringKind
		}
	case containerKind:
		switch string(key) {
		case "id", "name", "image", "imagedigest", "runtime":
			return stringKind
		}
	case kubernetesKind:
		switch string(key) {
		case "podname", "podnamespace", "poduid":
			return stringKind
		case "podsandbox":
			return boolKind
		}
	case contextFlagsKind:
		switch string(key) {
		case "containerstarted", "iscompat":
			return boolKind
		}
	case metadataKind:
		switch string(key) {
		case "version", "description":
			return stringKind
		case "tags":
			return stringsKind
		case "properties":
			return propertiesKind
		}
	case argKind:
		switch string(key) {
		case "name", "type":
			return stringKind
		}
	}
	return anyValue
}

func eventField(key []byte) kind {
	switch string(key) {
	case "timestamp", "threadstarttime", "processorid", "processid", "threadid", "parentprocessid",
		"hostprocessid", "hostthreadid", "hostparentprocessid", "userid", "mountnamespace", "pidnamespace",
		"argsnum", "returnvalue":
		return intKind
	case "cgroupid":
		return uintKind
	case "threadentityid", "processentityid", "parententityid":
		return uint32Kind
	case "processname", "hostname", "containerid", "syscall", "origin", "action":
		return stringKind
	case "eventid":
		return quotedIntKind
	case "eventname":
		return eventNameKind
	case "matchedpolicies", "truncated":
		return stringsKind
	case "stackaddresses":
		return uint64sKind
	case "args":
		return argsKind
	case "executable":
		return fileKind
	case "container":
		return containerKind
	case "kubernetes":
		return kubernetesKind
	case "contextflags":
		return contextFlagsKind
	case "metadata":
		return metadataKind
	}
	return anyValue
}

// scanner reads b from i on; name is the last eventName string seen at the top level.
type scanner struct {
	b    []byte
	i    int
	name []byte
}

// peek returns the byte at i, or 0 at the end: NUL is no JSON outside a string, so it fails like the end.
func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) literal(lit string) bool {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}

// value reads any JSON value.
func (s *scanner) value(depth int) bool {
	switch s.peek() {
	case '"':
		return s.skipString()
	case '{':
		return s.object(depth, anyValue)
	case '[':
		return s.array(depth, anyValue)
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	}
	return s.number()
}

// typed reads a value of kind k.
func (s *scanner) typed(k kind, depth int) bool {
	if k == anyValue {
		return s.value(depth)
	}
	c := s.peek()
	if c == 'n' {
		return s.literal("null")
	}
	switch k {
	case stringKind:
		return c == '"' && s.skipString()
	case eventNameKind:
		return c == '"' && s.eventName()
	case boolKind:
		return s.literal("true") || s.literal("false")
	case intKind:
		return s.integer(math.MaxInt, true)
	case uintKind:
		return s.integer(math.MaxUint, false)
	case uint32Kind:
		return s.integer(math.MaxUint32, false)
	case uint64Kind:
		return s.integer(math.MaxUint64, false)
	case quotedIntKind:
		return s.quotedInt()
	case stringsKind:
		return c == '[' && s.array(depth, stringKind)
	case uint64sKind:
		return c == '[' && s.array(depth, uint64Kind)
	case argsKind:
		return c == '[' && s.array(depth, argKind)
	case propertiesKind:
		return c == '{' && s.object(depth, anyValue)
	}
	return c == '{' && s.object(depth, k)
}

// object reads an object at i; k is the struct kind its keys name fields of, or anyValue for any object.
func (s *scanner) object(depth int, k kind) bool {
	if depth++; depth > maxDepth {
		return false
	}
	s.i++ // '{'
	s.ws()
	if s.peek() == '}' {
		s.i++
		return true
	}
	for {
		if s.peek() != '"' {
			return false
		}
		vk := anyValue
		if k == anyValue {
			if !s.skipString() {
				return false
			}
		} else if fk, ok := s.fieldKey(k); ok {
			vk = fk
		} else {
			return false
		}
		s.ws()
		if s.peek() != ':' {
			return false
		}
		s.i++
		s.ws()
		if !s.typed(vk, depth) {
			return false
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
			s.ws()
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

// array reads an array at i whose elements are of kind elem.
func (s *scanner) array(depth int, elem kind) bool {
	if depth++; depth > maxDepth {
		return false
	}
	s.i++ // '['
	s.ws()
	if s.peek() == ']' {
		s.i++
		return true
	}
	for {
		if !s.typed(elem, depth) {
			return false
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
			s.ws()
		case ']':
			s.i++
			return true
		default:
			return false
		}
	}
}

// fieldKey reads the key at i of an object of struct kind k and returns the kind of the field it names. ok is
// false for a key with an escape or a non-ASCII byte, which could unescape or case-fold to a field's name.
func (s *scanner) fieldKey(k kind) (fk kind, ok bool) {
	var lower [maxFieldName]byte
	b := s.b
	start := s.i + 1
	for i := start; i < len(b); i++ {
		c := b[i]
		switch {
		case c == '"':
			s.i = i + 1
			if n := i - start; n <= len(lower) {
				return field(k, lower[:n]), true
			}
			return anyValue, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return 0, false
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		if n := i - start; n < len(lower) {
			lower[n] = c
		}
	}
	return 0, false
}

// eventName reads a string at i as the event's name; ok is false when it has an escape or a non-ASCII byte,
// whose decoded form could differ from the bytes (invalid UTF-8 becomes U+FFFD).
func (s *scanner) eventName() bool {
	b := s.b
	start := s.i + 1
	for i := start; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			s.name = b[start:i:i]
			s.i = i + 1
			return true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return false
		}
	}
	return false
}

// integer reads an integer no greater than max in magnitude (max+1 when negative, as Go's integers are), with
// no sign unless signed: a fraction or an exponent leaves i before it, where the caller fails.
func (s *scanner) integer(max uint64, signed bool) bool {
	b, i := s.b, s.i
	neg := i < len(b) && b[i] == '-'
	if neg {
		if !signed {
			return false
		}
		i++
	}
	start := i
	var v uint64
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		d := uint64(b[i] - '0')
		if v > math.MaxUint64/10 || v == math.MaxUint64/10 && d > math.MaxUint64%10 {
			return false
		}
		v = v*10 + d
	}
	if i == start || b[start] == '0' && i-start > 1 { // no digits, or a leading zero
		return false
	}
	if neg && max < math.MaxUint64 {
		max++
	}
	s.i = i
	return v <= max
}

// quotedInt reads an int field with the ",string" option: a string holding just an integer, as Tracee writes
// eventId. Other strings Decode may accept ("0732", "null") are left to it.
func (s *scanner) quotedInt() bool {
	if s.peek() != '"' {
		return false
	}
	s.i++
	if !s.integer(math.MaxInt, true) || s.peek() != '"' {
		return false
	}
	s.i++
	return true
}

// number reads a JSON number.
func (s *scanner) number() bool {
	b, i := s.b, s.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(b, i)
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		if i++; i >= len(b) || b[i] < '0' || b[i] > '9' {
			return false
		}
		i = digits(b, i)
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		if i++; i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return false
		}
		i = digits(b, i)
	}
	s.i = i
	return true
}

// digits returns the index of the first non-digit at or after i.
func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// Eight bytes at a time: most of a Tracee line is inside strings (paths, IDs, digests).
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// stops has the high bit set in each byte of x that is a quote, a backslash or a control character, and
// maybe in bytes above the first such one (a subtraction's borrow), never below: the lowest is exact.
func stops(x uint64) uint64 {
	q := x ^ (ones * '"')
	bs := x ^ (ones * '\\')
	return ((q-ones)&^q | (bs-ones)&^bs | (x-ones*0x20)&^x) & highs
}

// skipString reads a string at i. Like encoding/json it accepts any bytes but quotes, backslashes and
// control characters between escapes, invalid UTF-8 included.
func (s *scanner) skipString() bool {
	b := s.b
	i := s.i + 1
	for {
		for i+8 <= len(b) {
			if m := stops(binary.LittleEndian.Uint64(b[i:])); m != 0 {
				i += bits.TrailingZeros64(m) / 8
				break
			}
			i += 8
		}
		if i >= len(b) {
			return false
		}
		switch c := b[i]; {
		case c == '"':
			s.i = i + 1
			return true
		case c == '\\':
			if i = escape(b, i); i < 0 {
				return false
			}
		case c < 0x20:
			return false
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
