package output

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSpoolOrderAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	sp, err := OpenSpool(dir, SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"a\n", "bb\n", "ccc\n"} {
		if err := sp.Append([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	e, _, _ := sp.Peek()
	if err := sp.Remove(e.Seq); err != nil {
		t.Fatal(err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	// What a crash in the middle of an append leaves, and what an operator might put there.
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
	if n, size := sp.Len(); n != 2 || size != int64(len("bb\nccc\n")) {
		t.Fatalf("reopened spool: %d entries, %d bytes; want 2, 7", n, size)
	}
	if err := sp.Append([]byte("dddd\n")); err != nil {
		t.Fatal(err)
	}
	var got []string
	var seqs []uint64
	for {
		e, ok, err := sp.Peek()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		got, seqs = append(got, string(e.Line)), append(seqs, e.Seq)
		if err := sp.Remove(e.Seq); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"bb\n", "ccc\n", "dddd\n"}; !slices.Equal(got, want) {
		t.Errorf("entries %q, want %q", got, want)
	}
	if seqs[2] != 4 {
		t.Errorf("sequence after reopen %d, want 4 (continuing after the highest on disk)", seqs[2])
	}
	if _, err := os.Stat(filepath.Join(dir, entryName(9)+tmpSuffix)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("interrupted append not cleaned up: %v", err)
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

func TestSpoolBounds(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts SpoolOptions
	}{
		{"bytes", SpoolOptions{MaxBytes: 10}},
		{"entries", SpoolOptions{MaxEntries: 2}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sp, err := OpenSpool(t.TempDir(), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer sp.Close()
			for range 2 {
				if err := sp.Append([]byte("1234\n")); err != nil {
					t.Fatal(err)
				}
			}
			if err := sp.Append([]byte("5\n")); !errors.Is(err, ErrSpoolFull) {
				t.Fatalf("third append: %v, want ErrSpoolFull", err)
			}
			if n, _ := sp.Len(); n != 2 {
				t.Errorf("%d entries after a refused append, want 2", n)
			}
		})
	}
}

// When the spool is full the new finding is dropped for that sink, counted and logged once per LogEvery; the
// spooled ones are still delivered once the receiver is back.
func TestSpoolFullDropsNewFindings(t *testing.T) {
	addr := freeAddr(t)
	logger, logs := newLogger()
	d := webhookDispatcher(t, t.TempDir(), WebhookOptions{URL: "http://" + addr}, SpoolOptions{MaxEntries: 3}, logger)
	dispatchN(t, d, 0, 3)
	for n := 3; n < 6; n++ {
		if err := d.Dispatch(t.Context(), numbered(n)); !errors.Is(err, ErrSpoolFull) {
			t.Fatalf("dispatch %d into a full spool: %v, want ErrSpoolFull", n, err)
		}
	}
	if s := stats(d, "webhook"); s.Dropped != 3 || s.SpoolEntries != 3 {
		t.Errorf("stats %+v, want 3 dropped, 3 spooled", s)
	}
	if c := strings.Count(logs.String(), "finding dropped: not spooled"); c != 1 {
		t.Errorf("%d drop logs, want 1 (rate limited):\n%s", c, logs)
	}
	rc := &receiver{}
	serveOn(t, addr, rc)
	waitFor(t, "the spooled findings", func() bool { return len(rc.got()) >= 3 })
	closeNow(t, d, time.Second)
	allOf(t, rc.got(), 3)
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
	contains(t, logs.String(), "unreadable spool entry dropped")
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
	helperReady    = "spooled"
)

// TestHelperProcess is not a test: run by TestSpoolSurvivesKill, it spools findings for a webhook that is down,
// says so on stdout and waits to be killed.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperSpoolEnv)
	if dir == "" {
		t.Skip("helper process of TestSpoolSurvivesKill")
	}
	n, err := strconv.Atoi(os.Getenv(helperCountEnv))
	if err != nil {
		t.Fatal(err)
	}
	d := webhookDispatcher(t, dir, WebhookOptions{URL: os.Getenv(helperURLEnv)}, SpoolOptions{}, nil)
	dispatchN(t, d, 0, n)
	os.Stdout.WriteString(helperReady + "\n")
	time.Sleep(time.Minute) // killed long before
}

// Findings spooled by a process that is then SIGKILLed are all delivered by the next one.
func TestSpoolSurvivesKill(t *testing.T) {
	const n = 20
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
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != helperReady {
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := child.Wait(); err == nil {
		t.Fatal("the helper exited cleanly; want it killed (did it spool?)")
	}

	if files := spoolFiles(t, dir); len(files) != n {
		t.Fatalf("after kill -9 the spool holds %d entries, want %d", len(files), n)
	}
	rc := &receiver{}
	d := webhookDispatcher(t, dir, WebhookOptions{URL: startHTTP(t, rc)}, SpoolOptions{}, nil)
	waitFor(t, "every spooled finding", func() bool { return len(rc.got()) >= n })
	closeNow(t, d, time.Second)
	allOf(t, rc.got(), n)
}
