package sensor

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"escapewatch/internal/enrich"
	"escapewatch/internal/event"
	"escapewatch/internal/testutil"
)

func TestDecodeRecordRejectsBadSamples(t *testing.T) {
	size := int(unsafe.Sizeof(kernelEwRecord{}))
	tests := []struct {
		name string
		raw  []byte
	}{
		{"empty", []byte{}},
		{"short", make([]byte, size-1)},
		{"kind 0", make([]byte, size)},
		{"unknown kind", append([]byte{9, 0, 0, 0}, make([]byte, size-4)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeRecord(tt.raw); err == nil {
				t.Fatal("want an error")
			}
		})
	}
}

// TestPrivilegedDropsAreCounted fills the ring buffer while nobody reads it: every open of the real
// release_agent is either delivered or counted as dropped by the kernel, none vanishes.
func TestPrivilegedDropsAreCounted(t *testing.T) {
	h := testutil.MountHierarchy(t)
	s := openTestSensor(t)
	defer s.Close()

	capacity := s.reader.BufferSize() / int(unsafe.Sizeof(kernelEwRecord{}))
	opens := capacity + 100
	for range opens {
		fd, err := unix.Open(h.Agent(), unix.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
	}
	if st := s.Stats(); st.KernelDropped == 0 {
		t.Fatalf("after %d opens into a buffer for about %d records: no drops counted (emitted %d)", opens, capacity, st.KernelEmitted)
	}

	// Run detaches, then delivers every record that was emitted. Other tests may open release_agents at the
	// same time (the kernel counters are global), so ours are told apart by path.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var mu sync.Mutex
	ours := 0
	if err := s.Run(ctx, func(ev *event.Event) {
		mu.Lock()
		defer mu.Unlock()
		if a, _ := ev.Arg("pathname"); a.Value == h.Agent() {
			ours++
		}
	}); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Records != st.KernelEmitted {
		t.Errorf("delivered %d records, the kernel emitted %d", st.Records, st.KernelEmitted)
	}
	if uint64(ours)+st.KernelDropped < uint64(opens) {
		t.Errorf("%d opens: %d delivered + %d dropped: some vanished", opens, ours, st.KernelDropped)
	}
}

func TestReleaseAgentOption(t *testing.T) {
	tests := []struct {
		data, want string
		ok         bool
	}{
		{"none,name=x,release_agent=/p", "/p", true},
		{"release_agent=/a/b,name=x", "/a/b", true},
		{"release_agent=", "", true},
		{"none,name=x", "", false},
		{"xrelease_agent=/p", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		if got, ok := releaseAgentOption(tt.data); got != tt.want || ok != tt.ok {
			t.Errorf("releaseAgentOption(%q) = %q, %v; want %q, %v", tt.data, got, ok, tt.want, tt.ok)
		}
	}
}

// openTestSensor opens the sensor on the backend the test run asks for (ESCAPEWATCH_BACKEND, auto when unset),
// with the real origin classifier and a silent log.
func openTestSensor(tb testing.TB) *Sensor {
	tb.Helper()
	classifier, err := enrich.NewClassifier("/proc")
	if err != nil {
		tb.Fatal(err)
	}
	s, err := Open(Config{Backend: os.Getenv("ESCAPEWATCH_BACKEND"), Classifier: classifier, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}
