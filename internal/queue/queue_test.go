package queue

import (
	"fmt"
	"slices"
	"sync"
	"testing"
)

// push is an item named by a letter, with its rank.
type push struct {
	name string
	rank int
}

func TestShedByRank(t *testing.T) {
	tests := []struct {
		name     string
		limit    int
		pushes   []push
		wantKept []string // in the order Take gives them
		wantShed []string // in the order they were shed
	}{
		{
			name: "room for all", limit: 3,
			pushes:   []push{{"a", 0}, {"b", 5}, {"c", 1}},
			wantKept: []string{"a", "b", "c"},
		},
		{
			name: "full of equals: the newest is shed, the oldest kept", limit: 2,
			pushes:   []push{{"a", 1}, {"b", 1}, {"c", 1}, {"d", 1}},
			wantKept: []string{"a", "b"}, wantShed: []string{"c", "d"},
		},
		{
			name: "a lower rank never pushes out a higher one", limit: 2,
			pushes:   []push{{"a", 3}, {"b", 3}, {"c", 1}},
			wantKept: []string{"a", "b"}, wantShed: []string{"c"},
		},
		{
			name: "a higher rank pushes out the oldest of the lowest", limit: 3,
			pushes:   []push{{"a", 1}, {"b", 0}, {"c", 0}, {"escape", 9}},
			wantKept: []string{"a", "c", "escape"}, wantShed: []string{"b"},
		},
		{
			name: "a flood of noise, then the escape: it is kept", limit: 4,
			pushes:   []push{{"n1", 1}, {"n2", 1}, {"n3", 1}, {"n4", 1}, {"n5", 1}, {"escape", 4}, {"n6", 1}},
			wantKept: []string{"n2", "n3", "n4", "escape"}, wantShed: []string{"n5", "n1", "n6"},
		},
		{
			name: "escapes fill it: the next escape is shed, never one kept", limit: 2,
			pushes:   []push{{"e1", 4}, {"e2", 4}, {"e3", 4}, {"noise", 1}},
			wantKept: []string{"e1", "e2"}, wantShed: []string{"e3", "noise"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := New[string](tt.limit)
			var shed []string
			for _, p := range tt.pushes {
				if lost, _, ok := q.Push(p.name, p.rank); ok {
					shed = append(shed, lost)
				}
			}
			kept, open := q.Take(nil, 100)
			if !open || !slices.Equal(kept, tt.wantKept) || !slices.Equal(shed, tt.wantShed) {
				t.Errorf("kept %v, shed %v (open %v); want kept %v, shed %v", kept, shed, open, tt.wantKept, tt.wantShed)
			}
			if st := q.Stats(); st.Len != 0 || st.Pushed != uint64(len(tt.pushes)) || st.Shed != uint64(len(tt.wantShed)) {
				t.Errorf("stats %+v, want empty, %d pushed, %d shed", st, len(tt.pushes), len(tt.wantShed))
			}
		})
	}
}

// Take gives at most n, oldest first, and the queue keeps working after it (the taken front is reused, never
// grown past the limit).
func TestTakeInBatches(t *testing.T) {
	q := New[int](4)
	var got []int
	next := 0
	for round := range 50 {
		for range round%4 + 1 {
			if _, _, shed := q.Push(next, 0); shed {
				t.Fatalf("push %d shed with room left", next)
			}
			next++
		}
		batch, _ := q.Take(nil, 3)
		got = append(got, batch...)
		if cap(q.items) > 8 {
			t.Fatalf("the queue's storage grew to %d items for a limit of 4", cap(q.items))
		}
	}
	rest, _ := q.Take(nil, 100)
	got = append(got, rest...)
	for i, v := range got {
		if v != i {
			t.Fatalf("taken %v, want 0..%d in order", got, next-1)
		}
	}
}

func TestCloseDrainsThenEnds(t *testing.T) {
	q := New[string](2)
	q.Push("a", 0)
	q.Close()
	if _, _, shed := q.Push("late", 9); !shed {
		t.Error("a push after Close was kept")
	}
	select {
	case <-q.Ready():
	default:
		t.Error("Close did not wake the taker")
	}
	if got, open := q.Take(nil, 10); !open || !slices.Equal(got, []string{"a"}) {
		t.Errorf("Take after Close = %v, %v; want the item left, open", got, open)
	}
	if got, open := q.Take(nil, 10); open || len(got) != 0 {
		t.Errorf("Take of a closed, empty queue = %v, %v; want nothing, done", got, open)
	}
}

// Several pushers and one taker (run with -race): every item pushed is either taken or reported shed, once.
func TestConcurrentPushers(t *testing.T) {
	q := New[string](16)
	const pushers, each = 4, 2000
	var wg sync.WaitGroup
	var mu sync.Mutex
	shed := map[string]bool{}
	for p := range pushers {
		wg.Go(func() {
			for i := range each {
				if lost, _, ok := q.Push(fmt.Sprint(p, "-", i), i%3); ok {
					mu.Lock()
					shed[lost] = true
					mu.Unlock()
				}
			}
		})
	}
	taken := map[string]bool{}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		q.Close()
		close(done)
	}()
	var buf []string
	for {
		var open bool
		buf, open = q.Take(buf[:0], 8)
		for _, v := range buf {
			taken[v] = true
		}
		if !open {
			break
		}
		if len(buf) == 0 {
			<-q.Ready()
		}
	}
	<-done
	for k := range taken {
		if shed[k] {
			t.Fatalf("%s was both taken and shed", k)
		}
	}
	if len(taken)+len(shed) != pushers*each {
		t.Fatalf("%d taken + %d shed, want %d", len(taken), len(shed), pushers*each)
	}
}

// BenchmarkPushFull: a flood into a full queue of equals costs no scan of the queue.
func BenchmarkPushFull(b *testing.B) {
	q := New[int](4096)
	for i := range 4096 {
		q.Push(i, 1)
	}
	for i := 0; b.Loop(); i++ {
		q.Push(i, 1)
	}
}
