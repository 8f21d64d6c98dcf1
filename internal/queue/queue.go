// Package queue is the hand-off between two stages of the sensor: bounded, and never blocking the stage that
// pushes. The kernel's ring buffer is read by one goroutine that must never wait for a slower stage behind it
// (enrichment asks a container runtime, an output writes to a disk or a pipe): if it did, the ring would fill
// and the kernel would lose records it cannot rank. So a full queue sheds instead, by rank: a pushed item of a
// higher rank than the lowest one waiting takes the place of the oldest of those; otherwise the pushed item is
// the one shed. Pop then sees the items kept in the order they were pushed.
package queue

import (
	"sync"
)

// Queue is a bounded FIFO of items of type T, safe for any number of pushers and one taker.
type Queue[T any] struct {
	limit int
	ready chan struct{} // holds a value after a push or Close, for a taker waiting on an empty queue

	mu     sync.Mutex
	items  []item[T] // oldest first; items[:head] are taken and cleared
	head   int
	ranks  map[int]int // how many items of each rank wait: a flood of equal ranks is shed without a scan
	closed bool
	// Counters, for the stage's stats.
	pushed, shed uint64
}

type item[T any] struct {
	v    T
	rank int
}

// New returns a queue that holds at most limit items (at least 1).
func New[T any](limit int) *Queue[T] {
	return &Queue[T]{limit: max(limit, 1), ready: make(chan struct{}, 1), ranks: map[int]int{}}
}

// Push adds v with its rank and never blocks. When the queue is full, or closed, something is shed: the oldest
// of the lowest-ranked items waiting if that is ranked below v (v takes its place at the back), or else v
// itself. shed reports whether anything was; lost and lostRank are then what was shed.
func (q *Queue[T]) Push(v T, rank int) (lost T, lostRank int, shed bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pushed++
	if q.closed {
		q.shed++
		return v, rank, true
	}
	if q.len() >= q.limit {
		low, ok := q.lowestRank()
		if !ok || low >= rank {
			q.shed++
			return v, rank, true
		}
		victim := q.oldest(low)
		lost, lostRank, shed = q.items[victim].v, low, true
		q.shed++
		q.ranks[low]--
		// Shift the newer items down over the victim: O(limit), paid only when a flood meets a more important item.
		copy(q.items[victim:], q.items[victim+1:])
		q.items[len(q.items)-1] = item[T]{}
		q.items = q.items[:len(q.items)-1]
	}
	if q.head > 0 && len(q.items) == cap(q.items) {
		// Reuse the taken front instead of growing: the queue never holds more than limit items.
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	q.items = append(q.items, item[T]{v: v, rank: rank})
	q.ranks[rank]++
	select {
	case q.ready <- struct{}{}:
	default: // a wake-up is already pending
	}
	return lost, lostRank, shed
}

// lowestRank is the lowest rank waiting; ok is false when none is.
func (q *Queue[T]) lowestRank() (low int, ok bool) {
	for r, n := range q.ranks {
		if n > 0 && (!ok || r < low) {
			low, ok = r, true
		}
	}
	return low, ok
}

// oldest is the index of the oldest item of rank, which waits.
func (q *Queue[T]) oldest(rank int) int {
	for i := q.head; ; i++ {
		if q.items[i].rank == rank {
			return i
		}
	}
}

func (q *Queue[T]) len() int { return len(q.items) - q.head }

// Take appends up to n of the oldest items to dst and returns it, without waiting. open is false once the queue
// is closed and empty: the taker is done.
func (q *Queue[T]) Take(dst []T, n int) (out []T, open bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for ; n > 0 && q.head < len(q.items); n-- {
		dst = append(dst, q.items[q.head].v)
		q.ranks[q.items[q.head].rank]--
		q.items[q.head] = item[T]{} // let the taker's copy be the only reference
		q.head++
	}
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
	return dst, !q.closed || len(dst) > 0
}

// Ready has a value after a push (or Close) since the last receive from it: a taker that found the queue empty
// waits on it, and then takes again.
func (q *Queue[T]) Ready() <-chan struct{} { return q.ready }

// Close ends the queue: pushes are shed from now on, and Take reports the end once the items left are taken.
func (q *Queue[T]) Close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// Stats are a queue's counts.
type Stats struct {
	Len          int    // items waiting now
	Pushed, Shed uint64 // items pushed, and items shed (pushed ones refused or waiting ones pushed out)
}

// Stats returns the queue's counts.
func (q *Queue[T]) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return Stats{Len: q.len(), Pushed: q.pushed, Shed: q.shed}
}
