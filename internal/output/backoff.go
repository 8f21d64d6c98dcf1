package output

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Default retry delays: quick enough that a receiver's restart costs little latency, slow enough that a
// receiver that is down is not hammered.
const (
	DefaultBackoffMin = 250 * time.Millisecond
	DefaultBackoffMax = 30 * time.Second
)

// Backoff is an exponential delay with jitter between retries. Zero fields take the defaults.
type Backoff struct {
	Min, Max time.Duration
}

// Delay is the wait before retry number retry (1 for the first): Min doubled per retry up to Max, of which up
// to half is taken away at random (never below Min) so that several senders do not retry in lockstep.
func (b Backoff) Delay(retry int) time.Duration {
	lo, hi := b.bounds()
	d := lo
	for i := 1; i < retry && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	floor := max(lo, d/2)
	return floor + rand.N(d-floor+1)
}

func (b Backoff) bounds() (time.Duration, time.Duration) {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = DefaultBackoffMin
	}
	if hi <= 0 {
		hi = DefaultBackoffMax
	}
	return lo, max(lo, hi)
}

// sleep waits d, or less if ctx ends first; it reports whether the full delay passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// MaxRetryAfter bounds how long a receiver's Retry-After may hold findings back: a receiver asking for hours
// (or a broken one) must not silence a security sensor.
const MaxRetryAfter = 5 * time.Minute

// retryAfterError is a retryable failure whose receiver said when to come back (HTTP 429 or 503 with
// Retry-After).
type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// retryDelay is the wait before retry number retry after err: the backoff, or the receiver's Retry-After when
// that is longer (at most MaxRetryAfter).
func retryDelay(b Backoff, retry int, err error) time.Duration {
	d := b.Delay(retry)
	var ra *retryAfterError
	if errors.As(err, &ra) {
		d = max(d, min(ra.after, MaxRetryAfter))
	}
	return d
}

// parseRetryAfter reads a Retry-After header: delay seconds or an HTTP date (RFC 9110, 10.2.3).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(0, t.Sub(now)), true
}
