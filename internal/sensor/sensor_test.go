package sensor

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"escapewatch/internal/enrich"
	"escapewatch/internal/event"
	"escapewatch/internal/testutil"
)

func TestDecodeRecord(t *testing.T) {
	head := make([]byte, recordHeadSize)
	head[0] = byte(kernelEwKindEW_KIND_AGENT_WRITE)
	strs := func(s ...string) []byte { return []byte(strings.Join(s, "\x00") + "\x00") }
	tests := []struct {
		name    string
		raw     []byte
		wantErr string
		want    [recordStrings]string
	}{
		{name: "empty", raw: []byte{}, wantErr: "short record"},
		{name: "head only", raw: head, wantErr: "short record"},
		{name: "kind 0", raw: append(make([]byte, recordHeadSize), strs("", "", "", "", "")...), wantErr: "unknown record kind 0"},
		{name: "unknown kind", raw: append(append([]byte{9, 0, 0, 0}, make([]byte, recordHeadSize-4)...), strs("", "", "", "", "")...),
			wantErr: "unknown record kind 9"},
		{name: "four strings", raw: append(slices.Clone(head), strs("/c", "/p", "v", "")...), wantErr: "string 5 of 5 has no end"},
		{name: "unterminated", raw: append(slices.Clone(head), []byte("/c\x00/p\x00v\x00\x00base")...), wantErr: "string 5 of 5 has no end"},
		{name: "whole", raw: append(slices.Clone(head), strs("/docker/abc", "/sys/fs/cgroup/x/release_agent", "/payload", "", "x")...),
			want: [recordStrings]string{"/docker/abc", "/sys/fs/cgroup/x/release_agent", "/payload", "", "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := decodeRecord(tt.raw)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := [recordStrings]string{r.CgroupPath, r.Path, r.ArgPath, r.ArgPath2, r.BasePath}; got != tt.want {
				t.Errorf("strings %q, want %q", got, tt.want)
			}
		})
	}
}

// TestPrivilegedDropsAreCounted fills the ring buffer while nobody reads it: every open of the real
// release_agent for writing is either delivered or counted as dropped by the kernel, none vanishes.
func TestPrivilegedDropsAreCounted(t *testing.T) {
	h := testutil.MountHierarchy(t)
	s := openTestSensor(t)
	defer s.Close()

	// Records are as long as their strings: open until the ring is full, then a little more.
	opens, limit := 0, s.reader.BufferSize()/recordHeadSize
	for ; opens < limit && s.Stats().KernelDropped == 0; opens += 100 {
		for range 100 {
			fd, err := unix.Open(h.Agent(), unix.O_WRONLY, 0) // opened for writing (reads send nothing), never written
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(fd)
		}
	}
	if st := s.Stats(); st.KernelDropped == 0 {
		t.Fatalf("after %d opens into a buffer of %d bytes: no drops counted (emitted %d)", opens, s.reader.BufferSize(), st.KernelEmitted)
	}
	t.Logf("the %d-byte ring was full after about %d records", s.reader.BufferSize(), opens)

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

// TestPrivilegedReadsStayInKernel: opens of the real release_agent for reading never leave the kernel (a
// container reading it in a loop must not fill the ring); the one open for writing does.
func TestPrivilegedReadsStayInKernel(t *testing.T) {
	h := testutil.MountHierarchy(t)
	s := openTestSensor(t)
	defer s.Close()
	for _, flags := range append(slices.Repeat([]int{unix.O_RDONLY, unix.O_RDONLY | unix.O_TRUNC}, 100), unix.O_WRONLY) {
		fd, err := unix.Open(h.Agent(), flags, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Run detaches, then delivers what was emitted
	var mu sync.Mutex
	var ours []*event.Event
	if err := s.Run(ctx, func(ev *event.Event) {
		mu.Lock()
		defer mu.Unlock()
		if a, _ := ev.Arg("pathname"); a.Value == h.Agent() {
			ours = append(ours, ev)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if len(ours) != 1 {
		t.Fatalf("200 opens for reading and 1 for writing: %d records, want 1", len(ours))
	}
	if flags, _ := ours[0].Arg("flags"); flags.Value.(int32)&unix.O_ACCMODE != unix.O_WRONLY {
		t.Errorf("the record's flags %v, want O_WRONLY", flags.Value)
	}
}
