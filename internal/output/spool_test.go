package output

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"escapewatch/internal/event"
	"escapewatch/internal/finding"
)

// rec is a record named by its line (what it holds, plus a newline), with a rank.
func rec(name string, rank finding.Rank) Record {
	return Record{Line: []byte(name + "\n"), Rank: rank, Rule: "R" + strconv.Itoa(int(rank))}
}

// commit commits records named with their ranks and returns the names shed.
func commit(t *testing.T, sp *Spool, recs ...Record) []string {
	t.Helper()
	shed, err := sp.Commit(recs)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range shed {
		names = append(names, fmt.Sprintf("%s@%d", s.Rule, s.Index))
	}
	return names
}

// drain peeks and removes every entry, returning their lines without newlines, in order.
func drain(t *testing.T, sp *Spool) []string {
	t.Helper()
	var got []string
	for {
		e, ok, err := sp.Peek()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return got
		}
		got = append(got, strings.TrimSuffix(string(e.Line), "\n"))
		sp.Remove(e.Seq)
	}
}

// lines is what the spool holds, in order, read without taking it: from a copy of its directory.
func lines(t *testing.T, dir string) []string {
	t.Helper()
	cp := memDir(t)
	for _, f := range spoolFiles(t, dir) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cp, filepath.Base(f)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sp, err := OpenSpool(cp, SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	return drain(t, sp)
}

func TestSpoolOrderAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	sp, err := OpenSpool(dir, SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	commit(t, sp, rec("a", 1), rec("bb", 1))
	commit(t, sp, rec("ccc", 1))
	e, _, _ := sp.Peek()
	sp.Remove(e.Seq)
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	// What a crash in the middle of a commit leaves, and what an operator might put there.
	for _, name := range []string{entryName(9) + tmpSuffix, "README"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	sp, err = OpenSpool(dir, SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	// "a" was delivered, but its segment held "bb" too: a crash before both were delivered sends "a" again.
	if n, size := sp.Len(); n != 3 || size != int64(len("a\nbb\nccc\n")) {
		t.Fatalf("reopened spool: %d entries, %d bytes; want 3, 9", n, size)
	}
	commit(t, sp, rec("dddd", 1))
	var seqs []uint64
	for {
		e, ok, err := sp.Peek()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		seqs = append(seqs, e.Seq)
		sp.Remove(e.Seq)
	}
	if want := []uint64{1, 2, 3, 4}; !slices.Equal(seqs, want) {
		t.Errorf("sequence numbers %v, want %v (continuing after the highest on disk)", seqs, want)
	}
	if err := sp.Tidy(); err != nil {
		t.Fatal(err)
	}
	if files := spoolFiles(t, dir); len(files) != 0 {
		t.Errorf("delivered segments not removed: %v", files)
	}
	if _, err := os.Stat(filepath.Join(dir, entryName(9)+tmpSuffix)); err == nil {
		t.Errorf("interrupted commit not cleaned up")
	}
	mustExist(t, filepath.Join(dir, "README"))
}

func TestSpoolLocked(t *testing.T) {
	dir := t.TempDir()
	sp, err := OpenSpool(dir, SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	_, err = OpenSpool(dir, SpoolOptions{})
	if err == nil {
		t.Fatal("a second OpenSpool of the same directory succeeded")
	}
	contains(t, err.Error(), "give each instance its own spool directory")
}

// A full spool keeps the most important findings: a record pushes out the oldest of the lowest rank below its
// own, or is shed itself. What it keeps is what the disk holds, across a reopen.
func TestSpoolShedsByRank(t *testing.T) {
	tests := []struct {
		name     string
		opts     SpoolOptions
		commits  [][]Record
		inFlight bool // the oldest entry is being delivered when the last commit comes
		wantShed []string
		wantKept []string
	}{
		{
			name: "room for all", opts: SpoolOptions{MaxEntries: 3},
			commits:  [][]Record{{rec("a", 1), rec("b", 1)}, {rec("c", 2)}},
			wantKept: []string{"a", "b", "c"},
		},
		{
			name: "full of equals: the new ones are shed, the oldest kept", opts: SpoolOptions{MaxEntries: 2},
			commits:  [][]Record{{rec("a", 1), rec("b", 1)}, {rec("c", 1), rec("d", 1)}},
			wantShed: []string{"R1@0", "R1@1"}, wantKept: []string{"a", "b"},
		},
		{
			name: "bounded by bytes", opts: SpoolOptions{MaxBytes: 10},
			commits:  [][]Record{{rec("1234", 1), rec("5678", 1)}, {rec("9", 1)}},
			wantShed: []string{"R1@0"}, wantKept: []string{"1234", "5678"},
		},
		{
			name: "the escape after a flood of noise pushes out the oldest noise", opts: SpoolOptions{MaxEntries: 3},
			commits:  [][]Record{{rec("n1", 1), rec("n2", 1), rec("n3", 1)}, {rec("n4", 1), rec("escape", 17), rec("n5", 1)}},
			wantShed: []string{"R1@0", "R1@-1", "R1@2"}, wantKept: []string{"n2", "n3", "escape"},
		},
		{
			name: "the lowest rank goes first, whatever its age", opts: SpoolOptions{MaxEntries: 3},
			commits:  [][]Record{{rec("hi", 15), rec("lo", 13), rec("mid", 14)}, {rec("escape", 17)}},
			wantShed: []string{"R13@-1"}, wantKept: []string{"hi", "mid", "escape"},
		},
		{
			name: "a record pushes out one of its own commit", opts: SpoolOptions{MaxEntries: 2},
			commits:  [][]Record{{rec("a", 5)}, {rec("n", 1), rec("escape", 17)}},
			wantShed: []string{"R1@0"}, wantKept: []string{"a", "escape"},
		},
		{
			name: "bytes: as many as it takes are pushed out", opts: SpoolOptions{MaxBytes: 12},
			commits:  [][]Record{{rec("n1", 1), rec("n2", 1), rec("n3", 1), rec("n4", 1)}, {rec("escape", 17)}},
			wantShed: []string{"R1@-1", "R1@-1", "R1@-1"}, wantKept: []string{"n4", "escape"},
		},
		{
			name: "never the one being delivered", opts: SpoolOptions{MaxEntries: 2}, inFlight: true,
			commits:  [][]Record{{rec("n1", 1), rec("n2", 1)}, {rec("escape", 17)}},
			wantShed: []string{"R1@-1"}, wantKept: []string{"n1", "escape"},
		},
		{
			name: "not enough below it: nothing is pushed out for nothing", opts: SpoolOptions{MaxBytes: 10},
			commits:  [][]Record{{rec("e1", 17), rec("n1", 1), rec("e2", 17)}, {rec("escape", 17)}},
			wantShed: []string{"R17@0"}, wantKept: []string{"e1", "n1", "e2"},
		},
		{
			name: "summaries have their own room", opts: SpoolOptions{MaxEntries: 1},
			commits: [][]Record{{rec("a", 1)}, {{Line: []byte("summary\n"), Summary: true, Rule: ShedRuleID}, rec("escape", 17)},
				{rec("lower", 1)}},
			wantShed: []string{"R1@-1", "R1@0"}, wantKept: []string{"summary", "escape"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			sp, err := OpenSpool(dir, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer sp.Close()
			var shed []string
			for i, c := range tt.commits {
				if i == len(tt.commits)-1 && tt.inFlight {
					if _, ok, err := sp.Peek(); !ok || err != nil {
						t.Fatalf("peek: %v %v", ok, err)
					}
				}
				shed = append(shed, commit(t, sp, c...)...)
			}
			slices.Sort(shed)
			slices.Sort(tt.wantShed)
			if !slices.Equal(shed, tt.wantShed) {
				t.Errorf("shed %v, want %v", shed, tt.wantShed)
			}
			if got := lines(t, dir); !slices.Equal(got, tt.wantKept) {
				t.Errorf("on disk %v, want %v", got, tt.wantKept)
			}
			if got := drain(t, sp); !slices.Equal(got, tt.wantKept) {
				t.Errorf("delivered %v, want %v", got, tt.wantKept)
			}
		})
	}
}

// A crash in the middle of rewriting a segment without its shed lines leaves the segment and some of its runs:
// the next start keeps the segment (its shed lines come back, nothing kept is lost) and removes the runs.
func TestSpoolInterruptedRewrite(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{
		entryName(1):             "a\nshed\nc\nd\n", // the segment being rewritten
		entryName(3):             "c\nd\n",          // its second run, renamed before the crash
		entryName(5):             "e\n",             // a later segment
		entryName(1) + tmpSuffix: "a\n",             // its first run, not yet in place
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sp, err := OpenSpool(dir, SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if got, want := drain(t, sp), []string{"a", "shed", "c", "d", "e"}; !slices.Equal(got, want) {
		t.Errorf("entries %v, want %v", got, want)
	}
	for _, name := range []string{entryName(3), entryName(1) + tmpSuffix} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("%s not removed", name)
		}
	}
}

// findingOf is a finding of rule id and severity, from a container, carrying n.
func findingOf(id string, severity, n int) finding.Finding {
	f := numbered(n)
	f.SigMetadata.ID = id
	f.SigMetadata.Properties = map[string]any{"Severity": severity}
	return f
}

// A flood into a full spool while the receiver is down: the escape that follows it is kept, noise is shed,
// every loss is counted, the log has one line for the flood and one at the end, and the receiver, once up, gets
// the escape and summaries that count every finding it lost.
func TestSpoolFullShedsNoiseKeepsEscape(t *testing.T) {
	const flood = 2000
	addr := freeAddr(t)
	dir := t.TempDir()
	logger, logs := newLogger()
	wh, err := NewWebhook(WebhookOptions{URL: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	sp, err := OpenSpool(dir, SpoolOptions{MaxEntries: 10})
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDispatcher(Options{Logger: logger, Spooled: []Spooled{{wh, sp}}, Backoff: fast, LogEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for n := range flood {
		if err := d.Dispatch(findingOf("TRC-1010", 3, n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Dispatch(findingOf("EW-1004", 4, flood)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every finding spooled or shed", func() bool {
		s := stats(d, "webhook")
		return s.Dropped+uint64(s.SpoolEntries) >= flood+1
	})
	closeNow(t, d, 10*time.Millisecond)
	s := stats(d, "webhook")
	if c := strings.Count(logs.String(), "findings lost"); c != 2 {
		t.Errorf("%d lines about lost findings, want 2 (the first loss, the rest at the end):\n%s", c, logs)
	}
	contains(t, logs.String(), "lost_total="+strconv.FormatUint(s.Dropped, 10))

	rc := &receiver{}
	serveOn(t, addr, rc)
	sp, err = OpenSpool(dir, SpoolOptions{MaxEntries: 10})
	if err != nil {
		t.Fatal(err)
	}
	d, err = NewDispatcher(Options{Spooled: []Spooled{{wh, sp}}, Backoff: fast})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the spool delivered", func() bool { n, _ := sp.Len(); return n == 0 })
	closeNow(t, d, time.Second)
	got := rc.got()
	if !slices.Contains(got, flood) {
		t.Errorf("received %v: the escape (%d) is missing", got, flood)
	}
	var summarised uint64
	for _, b := range rc.bodies() {
		var f struct {
			SigMetadata finding.Metadata
			Data        struct {
				Rule   string
				Count  uint64
				Output string
			}
		}
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatal(err)
		}
		if f.SigMetadata.ID == ShedRuleID {
			if f.Data.Rule != "TRC-1010" || f.Data.Output != "webhook" || f.SigMetadata.Properties["Severity"] != float64(3) {
				t.Errorf("summary %s: want TRC-1010 shed by the webhook, severity 3", b)
			}
			summarised += f.Data.Count
		}
	}
	if summarised != s.Dropped || s.Dropped != flood+1-10 {
		t.Errorf("summaries count %d shed, the stats %d; want both %d", summarised, s.Dropped, flood+1-10)
	}
}

// An entry that cannot be decoded is moved aside and counted; the entries behind it are still delivered.
func TestSpoolCorruptEntryQuarantined(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, entryName(1)), []byte("{not json\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rc := &receiver{}
	srv := startHTTP(t, rc)
	logger, logs := newLogger()
	d := webhookDispatcher(t, dir, WebhookOptions{URL: srv}, SpoolOptions{}, logger)
	dispatchN(t, d, 0, 2)
	waitFor(t, "the good findings", func() bool { return len(rc.got()) >= 2 })
	closeNow(t, d, time.Second)
	allOf(t, rc.got(), 2)
	if s := stats(d, "webhook"); s.Dropped != 1 || s.Delivered != 2 {
		t.Errorf("stats %+v, want 1 dropped, 2 delivered", s)
	}
	mustExist(t, filepath.Join(dir, entryName(1)+badSuffix))
	contains(t, logs.String(), "unreadable spool entry 1 dropped")
}

// Leftovers of a previous run go out before new findings.
func TestSpoolLeftoversFirst(t *testing.T) {
	dir := t.TempDir()
	d := webhookDispatcher(t, dir, WebhookOptions{URL: "http://" + freeAddr(t)}, SpoolOptions{}, nil)
	dispatchN(t, d, 0, 3)
	closeNow(t, d, 10*time.Millisecond)

	rc := &receiver{}
	d = webhookDispatcher(t, dir, WebhookOptions{URL: startHTTP(t, rc)}, SpoolOptions{}, nil)
	dispatchN(t, d, 3, 5)
	waitFor(t, "every finding", func() bool { return len(rc.got()) >= 5 })
	closeNow(t, d, time.Second)
	allOf(t, rc.got(), 5)
}

// Environment of TestHelperProcess, the child of TestSpoolSurvivesKill.
const (
	helperSpoolEnv = "ESCAPEWATCH_OUTPUT_HELPER_SPOOL"
	helperURLEnv   = "ESCAPEWATCH_OUTPUT_HELPER_URL"
	helperCountEnv = "ESCAPEWATCH_OUTPUT_HELPER_COUNT"
)

// TestHelperProcess is not a test: run by TestSpoolSurvivesKill, it dispatches findings for a webhook that is
// down as fast as it can, with stdout as a direct sink (which shows a finding only once the spool has it), until
// it is killed.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperSpoolEnv)
	if dir == "" {
		t.Skip("helper process of TestSpoolSurvivesKill")
	}
	n, err := strconv.Atoi(os.Getenv(helperCountEnv))
	if err != nil {
		t.Fatal(err)
	}
	wh, err := NewWebhook(WebhookOptions{URL: os.Getenv(helperURLEnv)})
	if err != nil {
		t.Fatal(err)
	}
	sp, err := OpenSpool(dir, SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := NewStdout(os.Stdout, FormatJSON, false)
	if err != nil {
		t.Fatal(err)
	}
	// A queue that holds every finding: on a loaded machine the commits fall behind, and what the queue would shed
	// is never shown, so the parent could wait forever for its share (CI saw that). Shedding has tests of its own.
	d, err := NewDispatcher(Options{Direct: []Sink{out}, Spooled: []Spooled{{wh, sp}}, Backoff: fast, QueueLen: n})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := d.Dispatch(numbered(i)); err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 {
			time.Sleep(time.Millisecond) // a stream, not one burst: the kill lands between and within commits
		}
	}
	time.Sleep(time.Minute) // killed long before
}

// A process killed with SIGKILL in the middle of a stream of findings loses none it had shown: every finding on
// its stdout (shown only once the spool committed it) is delivered by the next process, in order, and nothing
// it had not been given.
func TestSpoolSurvivesKill(t *testing.T) {
	const n = 5000
	dir := t.TempDir()
	child := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	child.Env = append(os.Environ(), helperSpoolEnv+"="+dir, helperURLEnv+"=http://"+freeAddr(t), helperCountEnv+"="+strconv.Itoa(n))
	child.Stderr = os.Stderr
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill() })
	shown := map[int]bool{}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() && len(shown) < n/4 {
		var f struct{ Data struct{ N int } }
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			t.Fatalf("helper's stdout: %q: %v", sc.Text(), err)
		}
		shown[f.Data.N] = true
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for sc.Scan() { // what it wrote before the kill, still in the pipe
		var f struct{ Data struct{ N int } }
		if json.Unmarshal(sc.Bytes(), &f) == nil {
			shown[f.Data.N] = true
		}
	}
	if err := child.Wait(); err == nil {
		t.Fatal("the helper exited cleanly; want it killed")
	}
	if len(shown) == 0 || len(shown) >= n {
		t.Fatalf("the helper showed %d of %d findings before the kill; want it killed in the middle", len(shown), n)
	}

	rc := &receiver{}
	sp, err := OpenSpool(dir, SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spooled, _ := sp.Len()
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	d := webhookDispatcher(t, dir, WebhookOptions{URL: startHTTP(t, rc)}, SpoolOptions{}, nil)
	waitFor(t, "every spooled finding", func() bool { return len(rc.got()) >= spooled })
	closeNow(t, d, time.Second)
	got := rc.got()
	t.Logf("killed after showing %d findings; %d spooled, delivered by the next process", len(shown), spooled)
	delivered := map[int]bool{}
	last := -1
	for _, i := range got {
		if delivered[i] {
			continue // a duplicate: at least once allows it
		}
		if i <= last || i >= n {
			t.Fatalf("delivered %v: want findings of 0..%d in the order dispatched", got, n-1)
		}
		delivered[i], last = true, i
	}
	for i := range shown {
		if !delivered[i] {
			t.Errorf("finding %d was shown before the kill but not delivered after it", i)
		}
	}
}

// live reads every live entry of the spool's index from its segment file, as Peek would, without marking any in
// flight: the index, its offsets and the files must agree.
func live(t *testing.T, sp *Spool) []string {
	t.Helper()
	sp.files.RLock()
	defer sp.files.RUnlock()
	sp.mu.Lock()
	defer sp.mu.Unlock()
	var out []string
	for _, e := range sp.entries[sp.head:] {
		if e.dead {
			continue
		}
		b, err := os.ReadFile(sp.path(e.seg.first))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, strings.TrimSuffix(string(b[e.off:e.off+e.size]), "\n"))
	}
	return out
}

// memDir is a temporary directory in memory (tmpfs) when the system has one: for tests of the spool's logic
// that commit hundreds of times, where the fsyncs' latency is all there would be to wait for.
func memDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "spool-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// The spool against a model of what it keeps, over random commits of random ranks and sizes, with an entry in
// flight at times, and reopens: the index, the files and the model agree at every step.
func TestSpoolAgainstModel(t *testing.T) {
	type entry struct {
		name string
		rank finding.Rank
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 6 {
		opts := SpoolOptions{MaxBytes: int64(5000 + rng.IntN(20000))}
		if round%2 == 0 {
			opts.MaxEntries = 2 + rng.IntN(10)
		}
		dir := memDir(t)
		sp, err := OpenSpool(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		var model []entry
		inflight := ""
		size := func() (n int, b int64) {
			for _, e := range model {
				n, b = n+1, b+int64(len(e.name)+1)
			}
			return n, b
		}
		fits := func(name string) bool {
			n, b := size()
			return b+int64(len(name)+1) <= opts.MaxBytes && (opts.MaxEntries == 0 || n < opts.MaxEntries)
		}
		admit := func(name string, rank finding.Rank) {
			for !fits(name) {
				victim := -1
				for i, e := range model {
					if e.rank < rank && e.name != inflight && (victim < 0 || e.rank < model[victim].rank) {
						victim = i
					}
				}
				model = slices.Delete(model, victim, victim+1)
			}
			model = append(model, entry{name, rank})
		}
		// canAdmit: whether shedding every lower rank (but the one in flight) makes room.
		canAdmit := func(name string, rank finding.Rank) bool {
			saved := model
			model = slices.DeleteFunc(slices.Clone(model), func(e entry) bool { return e.rank < rank && e.name != inflight })
			ok := fits(name)
			model = saved
			return ok
		}
		for step := range 50 {
			switch op := rng.IntN(10); {
			case op < 7:
				var recs []Record
				for i := range 1 + rng.IntN(6) {
					// A finding's line, so that its rank is the same when a reopen reads it back.
					f := findingOf("R", 1+rng.IntN(4), 0)
					if rng.IntN(2) == 0 {
						f.Event.Origin = event.OriginHost
					}
					f.Data = map[string]any{"name": fmt.Sprintf("%d.%d.%d%s", round, step, i, strings.Repeat("x", rng.IntN(300)))}
					line, err := jsonLine(f)
					if err != nil {
						t.Fatal(err)
					}
					name, rank := strings.TrimSuffix(string(line), "\n"), finding.RankOf(&f)
					recs = append(recs, Record{Line: line, Rank: rank, Rule: "R"})
					if fits(name) || canAdmit(name, rank) {
						admit(name, rank)
					}
				}
				if _, err := sp.Commit(recs); err != nil {
					t.Fatal(err)
				}
			case op < 9:
				if e, ok, err := sp.Peek(); err != nil {
					t.Fatal(err)
				} else if ok {
					inflight = strings.TrimSuffix(string(e.Line), "\n")
				}
			default:
				if err := sp.Close(); err != nil {
					t.Fatal(err)
				}
				if sp, err = OpenSpool(dir, opts); err != nil {
					t.Fatal(err)
				}
				inflight = ""
			}
			var want []string
			for _, e := range model {
				want = append(want, e.name)
			}
			if got := live(t, sp); !slices.Equal(got, want) {
				t.Fatalf("round %d step %d: the index holds %q, the model %q", round, step, got, want)
			}
			if step%5 == 4 { // what a reopen would find: costlier, so not at every step
				if got := lines(t, dir); !slices.Equal(got, want) {
					t.Fatalf("round %d step %d: the disk holds %q, the model %q", round, step, got, want)
				}
			}
			if n, b := sp.Len(); n != len(want) {
				t.Fatalf("round %d step %d: Len %d, %d bytes; the model holds %d", round, step, n, b, len(want))
			}
		}
		sp.Close()
	}
}

// Deliveries (Peek, Remove) while commits shed and rewrite segments (run with -race): every entry handed out
// reads whole from its file, nothing is handed out twice in a run, and what the index keeps is what a reopen
// finds (besides lines delivered from segments not yet done with, which at-least-once allows).
func TestSpoolDeliveryDuringRewrites(t *testing.T) {
	dir := memDir(t)
	opts := SpoolOptions{MaxEntries: 20}
	sp, err := OpenSpool(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	delivered := map[string]bool{}
	var deliverErr error
	go func() {
		defer close(done)
		for {
			e, ok, err := sp.Peek()
			if err != nil {
				deliverErr = err
				return
			}
			if !ok {
				select {
				case <-sp.Appended():
					continue
				case <-time.After(50 * time.Millisecond):
					return
				}
			}
			var f struct{ Data struct{ Name string } }
			if err := json.Unmarshal(e.Line, &f); err != nil || delivered[f.Data.Name] {
				deliverErr = fmt.Errorf("entry %d: %q (decoded: %v; delivered before: %v)", e.Seq, e.Line, err, delivered[f.Data.Name])
				return
			}
			delivered[f.Data.Name] = true
			if len(delivered)%3 != 0 { // now and then an entry stays in flight while commits come
				sp.Remove(e.Seq)
			} else {
				time.Sleep(time.Millisecond)
				sp.Remove(e.Seq)
			}
		}
	}()
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 300 {
		var recs []Record
		for j := range 1 + rng.IntN(8) {
			f := findingOf("R", 1+rng.IntN(4), 0)
			f.Data = map[string]any{"name": fmt.Sprint(i, ".", j)}
			line, err := jsonLine(f)
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, Record{Line: line, Rank: finding.RankOf(&f), Rule: "R"})
		}
		if _, err := sp.Commit(recs); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	if deliverErr != nil {
		t.Fatal(deliverErr)
	}
	kept := live(t, sp)
	if n, _ := sp.Len(); n != len(kept) {
		t.Fatalf("Len %d, the index holds %d live entries", n, len(kept))
	}
	if err := sp.Tidy(); err != nil {
		t.Fatal(err)
	}
	onDisk := lines(t, dir)
	for _, k := range kept {
		if !slices.Contains(onDisk, k) {
			t.Errorf("kept %s is not on disk", k)
		}
	}
	for _, l := range onDisk {
		var f struct{ Data struct{ Name string } }
		if json.Unmarshal([]byte(l), &f); !slices.Contains(kept, l) && !delivered[f.Data.Name] {
			t.Errorf("on disk %s was neither kept nor delivered: shed lines must be gone", f.Data.Name)
		}
	}
	sp.Close()
}
