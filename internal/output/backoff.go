package output

import (
	"context"
	"math/rand/v2"
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
