package output

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"escapewatch/internal/event"
	"escapewatch/internal/finding"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// tableFindings cover every column's cases: container, namespaced and host origins, each action, missing
// severity and path, an aggregate, and names an attacker chose to mess with the terminal.
func tableFindings() []finding.Finding {
	container := sampleFinding()

	rename := sampleFinding()
	rename.SigMetadata.Properties = map[string]any{"Severity": 2}
	rename.Event.Timestamp += 1_500_000_000
	rename.Event.HostProcessID, rename.Event.ProcessName = 4242, "unshare"
	rename.Event.ContainerID, rename.Event.Container = "", event.Container{}
	rename.Event.Origin, rename.Event.Action = event.OriginNamespaced, event.ActionKilled
	rename.Event.EventName, rename.Event.EventID = event.SecurityInodeRename, event.SecurityInodeRenameID
	rename.Event.Args = []event.Argument{
		{ArgMeta: event.ArgMeta{Name: "old_path", Type: "const char*"}, Value: "/tmp/x"},
		{ArgMeta: event.ArgMeta{Name: "new_path", Type: "const char*"}, Value: "/mnt/cg/release_agent"},
	}

	replayed := sampleFinding()
	replayed.SigMetadata.Properties = nil
	replayed.Event.Timestamp += 61_000_000_000
	replayed.Event.HostProcessID, replayed.Event.ProcessID = 0, 77
	replayed.Event.ContainerID, replayed.Event.Container = "", event.Container{}
	replayed.Event.ContextFlags.ContainerStarted = false
	replayed.Event.Origin, replayed.Event.Action = "", ""
	replayed.Event.Args = nil

	aggregate := sampleFinding()
	aggregate.Event.Origin, aggregate.Event.Action = "", event.ActionDenied
	aggregate.Event.ContextFlags.ContainerStarted = false // so container-init, by Tracee's rule
	aggregate.Event.ContainerID = ""
	aggregate.Event.Container.ID = "abc"
	aggregate.Aggregate = &finding.Aggregate{Count: 4, FirstSeen: 1, LastSeen: 2}

	hostile := sampleFinding()
	hostile.SigMetadata.Properties = map[string]any{"Severity": json.Number("1")}
	hostile.Event.ProcessName = "sh\r\x1b[2K"
	hostile.Event.Args[0].Value = "/sys/fs/cgroup/x/release_agent\n2099-01-01T00:00:00Z fake row\x1b[0m\u202e"
	return []finding.Finding{container, rename, replayed, aggregate, hostile}
}

func TestTableGolden(t *testing.T) {
	zone := time.FixedZone("CEST", 2*60*60) // a zone with an offset, to show local time is used
	for _, tt := range []struct {
		golden string
		colour bool
	}{
		{"testdata/table.golden", false},
		{"testdata/table_colour.golden", true},
	} {
		t.Run(filepath.Base(tt.golden), func(t *testing.T) {
			var buf bytes.Buffer
			s, err := newStdout(&buf, FormatTable, tt.colour, zone)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range tableFindings() {
				if err := s.Deliver(t.Context(), f, nil); err != nil {
					t.Fatal(err)
				}
			}
			golden(t, tt.golden, buf.Bytes())
		})
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// A spooled sink gets the finding back from JSON; the table must not change because of that.
func TestTableRowSurvivesSpool(t *testing.T) {
	for i, f := range tableFindings() {
		line, err := jsonLine(f)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeLine(line)
		if err != nil {
			t.Fatal(err)
		}
		var want, got strings.Builder
		writeRow(&want, f, true, time.UTC)
		writeRow(&got, back, true, time.UTC)
		if got.String() != want.String() {
			t.Errorf("finding %d: after the spool\n%q\nbefore\n%q", i, got.String(), want.String())
		}
	}
}

// JSON lines are exactly json.Marshal(finding) and a newline, on stdout and in the file.
func TestJSONLinesByteExact(t *testing.T) {
	var buf bytes.Buffer
	out, err := NewStdout(&buf, FormatJSON, true) // colour never applies to JSON
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "findings.jsonl")
	file, err := NewFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDispatcher(Options{Direct: []Sink{out, file}})
	if err != nil {
		t.Fatal(err)
	}
	html := numbered(8)
	html.Event.ProcessName = "<script>&amp;</script>\u2028" // json.Marshal escapes these: jsonLine must too
	var want []byte
	for _, f := range append(tableFindings(), numbered(7), html) {
		if err := d.Dispatch(f); err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		want = append(append(want, b...), '\n')
	}
	closeNow(t, d, time.Second)
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("stdout:\n%s\nwant:\n%s", buf.Bytes(), want)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("file:\n%s\nwant:\n%s", got, want)
	}
}

func TestNewStdoutUnknownFormat(t *testing.T) {
	_, err := NewStdout(&bytes.Buffer{}, "xml", false)
	if err == nil {
		t.Fatal("no error for format xml")
	}
	for _, want := range []string{`"xml"`, "json", "table"} {
		contains(t, err.Error(), want)
	}
}

func TestDefaultFormat(t *testing.T) {
	file, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if got := DefaultFormat(file); got != FormatJSON {
		t.Errorf("DefaultFormat(regular file) = %q, want %q", got, FormatJSON)
	}
	tty := openPTY(t)
	if got := DefaultFormat(tty); got != FormatTable {
		t.Errorf("DefaultFormat(pty) = %q, want %q", got, FormatTable)
	}
}

// openPTY returns the terminal side of a new pseudo-terminal.
func openPTY(t *testing.T) *os.File {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("no /dev/ptmx in this environment")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetUint32(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return tty
}

// A stdout that fails loses the finding for stdout only: it is counted, and the spooled sink still gets it.
func TestDirectSinkFailureCounted(t *testing.T) {
	out, err := NewStdout(failingWriter{}, FormatJSON, false)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := OpenSpool(t.TempDir(), SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wh, err := NewWebhook(WebhookOptions{URL: "http://" + freeAddr(t)})
	if err != nil {
		t.Fatal(err)
	}
	logger, logs := newLogger()
	d, err := NewDispatcher(Options{Logger: logger, Direct: []Sink{out}, Spooled: []Spooled{{wh, sp}}, Backoff: fast})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Dispatch(numbered(0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stdout write", func() bool { return stats(d, "stdout").Failed == 1 })
	if s := stats(d, "stdout"); s.Failed != 1 || s.Dropped != 1 || s.Delivered != 0 {
		t.Errorf("stdout stats %+v, want 1 failed, 1 dropped", s)
	}
	if s := stats(d, "webhook"); s.SpoolEntries != 1 {
		t.Errorf("webhook stats %+v, want the finding spooled", s)
	}
	closeNow(t, d, 10*time.Millisecond)
	contains(t, logs.String(), `msg="findings lost" sink=stdout lost=1 lost_total=1 reason="output failed" err="write finding to stdout: broken pipe"`)
}

var errBrokenPipe = errors.New("broken pipe")

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errBrokenPipe }
