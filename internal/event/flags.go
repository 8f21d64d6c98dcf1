package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Access-mode bits of open(2) flags (Linux, every architecture).
const (
	OpenAccMode = 0o3
	OpenRdOnly  = 0o0
	OpenWrOnly  = 0o1
	OpenRdWr    = 0o2
)

// openFlagNames are the names Tracee prints for open flags with
// parse-arguments (libbpfgo's helpers), valued as in the kernel's
// asm-generic/fcntl.h, which is x86-64's layout. The kernel value of
// O_LARGEFILE is used: golang.org/x/sys/unix has 0 for it on amd64 because
// userspace never needs to pass it there, but Tracee reports the kernel's.
var openFlagNames = map[string]int{
	"O_RDONLY":    OpenRdOnly,
	"O_WRONLY":    OpenWrOnly,
	"O_RDWR":      OpenRdWr,
	"O_CREAT":     0o100,
	"O_EXCL":      0o200,
	"O_NOCTTY":    0o400,
	"O_TRUNC":     0o1000,
	"O_APPEND":    0o2000,
	"O_NONBLOCK":  0o4000,
	"O_DSYNC":     0o10000,
	"FASYNC":      0o20000,
	"O_ASYNC":     0o20000,
	"O_DIRECT":    0o40000,
	"O_LARGEFILE": 0o100000,
	"O_DIRECTORY": 0o200000,
	"O_NOFOLLOW":  0o400000,
	"O_NOATIME":   0o1000000,
	"O_CLOEXEC":   0o2000000,
	"O_SYNC":      0o4010000,
	"O_PATH":      0o10000000,
	"O_TMPFILE":   0o20200000,
}

// ErrNotOpenFlags is wrapped by every error of ParseOpenFlags.
var ErrNotOpenFlags = errors.New("not open flags")

// ParseOpenFlags reads an open flags argument in either form Tracee writes
// it: an integer (any Go integer type, or a json.Number or float with an
// integral value) or, with parse-arguments, names joined by "|" such as
// "O_WRONLY|O_CREAT|O_TRUNC". An unknown name is an error naming it.
func ParseOpenFlags(v any) (int, error) {
	switch v := v.(type) {
	case int:
		return v, nil
	case int8:
		return int(v), nil
	case int16:
		return int(v), nil
	case int32:
		return int(v), nil
	case int64:
		return int(v), nil
	case uint8:
		return int(v), nil
	case uint16:
		return int(v), nil
	case uint32:
		return int(v), nil
	case uint:
		return fromUint64(uint64(v))
	case uint64:
		return fromUint64(v)
	case float32:
		return fromFloat(float64(v))
	case float64:
		return fromFloat(v)
	case json.Number:
		if i, err := strconv.ParseInt(v.String(), 10, 64); err == nil {
			return int(i), nil
		}
		f, err := v.Float64()
		if err != nil {
			return 0, fmt.Errorf("%w: number %s: %w", ErrNotOpenFlags, v, err)
		}
		return fromFloat(f)
	case string:
		return parseFlagNames(v)
	default:
		return 0, fmt.Errorf("%w: value of type %T", ErrNotOpenFlags, v)
	}
}

func fromUint64(u uint64) (int, error) {
	if u > math.MaxInt {
		return 0, fmt.Errorf("%w: %d is out of range", ErrNotOpenFlags, u)
	}
	return int(u), nil
}

func fromFloat(f float64) (int, error) {
	// The bounds are exact powers of two, so the comparison is exact.
	if f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, fmt.Errorf("%w: %v is not an integer", ErrNotOpenFlags, f)
	}
	return int(f), nil
}

func parseFlagNames(s string) (int, error) {
	if strings.TrimSpace(s) == "" {
		return 0, fmt.Errorf("%w: empty string", ErrNotOpenFlags)
	}
	flags := 0
	for _, name := range strings.Split(s, "|") {
		bits, ok := openFlagNames[strings.TrimSpace(name)]
		if !ok {
			return 0, fmt.Errorf("%w: unknown open flag %q", ErrNotOpenFlags, name)
		}
		flags |= bits
	}
	return flags, nil
}
