package sensor

import (
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"escapewatch/internal/testutil"
)

// TestPrivilegedStatsAfterClose: Stats may run while the sensor closes and after (a metrics scrape during
// shutdown). It never reads the freed kernel maps, and the kernel's counters never go back: after Close they
// stay what they were when it closed.
func TestPrivilegedStatsAfterClose(t *testing.T) {
	h := testutil.MountHierarchy(t)
	s := openTestSensor(t)
	for range 3 {
		fd, err := unix.Open(h.Agent(), unix.O_WRONLY, 0) // opened for writing (reads send nothing), never written
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
	}
	before := s.Stats()
	if before.KernelEmitted == 0 {
		t.Fatalf("3 opens of the real release_agent, no record emitted: %+v", before)
	}

	stop := make(chan struct{})
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		lower []Stats
	)
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if st := s.Stats(); st.KernelEmitted < before.KernelEmitted {
					mu.Lock()
					lower = append(lower, st)
					mu.Unlock()
				}
			}
		})
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
	close(stop)
	wg.Wait()
	if len(lower) > 0 {
		t.Errorf("Stats while closing went below %+v: %d times, first %+v", before, len(lower), lower[0])
	}
	if after := s.Stats(); after.KernelEmitted < before.KernelEmitted || after.KernelDropped < before.KernelDropped {
		t.Errorf("Stats after Close = %+v, before Close %+v: the kernel's counters went back", after, before)
	}
}
