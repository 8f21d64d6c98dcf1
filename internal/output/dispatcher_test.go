package output

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Close delivers what is spooled while the receiver is up.
func TestCloseDrains(t *testing.T) {
	rc := &receiver{delay: 5 * time.Millisecond}
	dir := t.TempDir()
	d := webhookDispatcher(t, dir, WebhookOptions{URL: startHTTP(t, rc)}, SpoolOptions{}, nil)
	const n = 20
	dispatchN(t, d, 0, n)
	closeNow(t, d, 10*time.Second)
	allOf(t, rc.got(), n)
	if files := spoolFiles(t, dir); len(files) != 0 {
		t.Errorf("spool holds %v after a drain", files)
	}
	if err := d.Dispatch(numbered(n)); err == nil {
		t.Error("Dispatch after Close succeeded")
	}
}

// Close gives up when its context ends, leaving what the receiver did not take on disk.
func TestCloseLeavesEntriesWhenDown(t *testing.T) {
	dir := t.TempDir()
	d := webhookDispatcher(t, dir, WebhookOptions{URL: "http://" + freeAddr(t)}, SpoolOptions{}, nil)
	const n = 5
	dispatchN(t, d, 0, n)
	start := time.Now()
	closeNow(t, d, 100*time.Millisecond)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Close took %v with a 100ms context", took)
	}
	if got := lines(t, dir); len(got) != n {
		t.Errorf("spool holds %d entries, want %d", len(got), n)
	}
	if s := stats(d, "webhook"); s.SpoolEntries != n || s.Delivered != 0 {
		t.Errorf("stats %+v, want %d entries left", s, n)
	}
}

// A Close whose context is already over still closes, and a second Close is harmless.
func TestCloseTwice(t *testing.T) {
	d := webhookDispatcher(t, t.TempDir(), WebhookOptions{URL: "http://" + freeAddr(t)}, SpoolOptions{}, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestNewDispatcherRejects(t *testing.T) {
	out, err := NewStdout(failingWriter{}, FormatJSON, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewDispatcher(Options{Direct: []Sink{out, out}}); err == nil {
		t.Error("two sinks with the same name accepted")
	}
	wh, err := NewWebhook(WebhookOptions{URL: "https://siem.example"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewDispatcher(Options{Spooled: []Spooled{{Sink: wh}}}); err == nil {
		t.Error("a spooled sink without a spool accepted")
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{}
	for retry, want := range map[int][2]time.Duration{
		1:  {250 * time.Millisecond, 250 * time.Millisecond},
		2:  {250 * time.Millisecond, 500 * time.Millisecond},
		4:  {time.Second, 2 * time.Second},
		20: {15 * time.Second, 30 * time.Second},
	} {
		for range 100 {
			if d := b.Delay(retry); d < want[0] || d > want[1] {
				t.Fatalf("Delay(%d) = %v, want within %v", retry, d, want)
			}
		}
	}
}

func TestPermanent(t *testing.T) {
	base := errors.New("HTTP 400")
	err := Permanent(base)
	if !IsPermanent(err) || !errors.Is(err, base) || IsPermanent(base) || Permanent(nil) != nil {
		t.Error("Permanent does not mark, wrap or pass nil through")
	}
}
