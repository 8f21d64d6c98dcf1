package output

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNewWebhookRejects(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts WebhookOptions
		want string
	}{
		{"ftp scheme", WebhookOptions{URL: "ftp://siem.example/hook"}, `scheme "ftp" is not http or https`},
		{"no scheme", WebhookOptions{URL: "siem.example/hook"}, `scheme "" is not http or https`},
		{"host:port without scheme", WebhookOptions{URL: "siem.example:8443"}, `scheme "siem.example" is not http or https`},
		{"malformed", WebhookOptions{URL: "https://siem example/%zz"}, "webhook URL"},
		{"no host", WebhookOptions{URL: "https:///hook"}, "no host"},
		{"bad header name", WebhookOptions{URL: "https://siem.example", Header: "X Token"}, "not a valid HTTP header name"},
		{"malformed, secret path", WebhookOptions{URL: "https://siem example/s3cr3t%zz"}, "webhook URL (URL [redacted])"},
		{"token over http", WebhookOptions{URL: "http://siem.example/hook/s3cr3t", Header: "Authorization", Token: "Bearer t"},
			"webhook URL http://siem.example/[redacted]: http:// would send the token in clear text"},
		{"credentials over http", WebhookOptions{URL: "http://user:s3cr3t@siem.example/hook"}, "use https://, or set AllowPlainHTTPToken"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewWebhook(tt.opts)
			if err == nil {
				t.Fatalf("NewWebhook(%+v) succeeded", tt.opts)
			}
			contains(t, err.Error(), tt.want)
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("error %q quotes the URL's secret", err)
			}
		})
	}
}

// A token over plain http goes only where it was explicitly allowed (a receiver on a trusted network).
func TestWebhookPlainHTTPTokenAllowed(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = r.Header.Get("Authorization") }))
	defer srv.Close()
	wh, err := NewWebhook(WebhookOptions{URL: srv.URL, Header: "Authorization", Token: "Bearer t", AllowPlainHTTPToken: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Deliver(t.Context(), numbered(0), []byte("{}\n")); err != nil {
		t.Fatal(err)
	}
	if got != "Bearer t" {
		t.Errorf("Authorization %q, want the token", got)
	}
}

// The URL's path and query (where tokens live: /services/T0/B0/SECRET, ?token=) never reach the logs, whatever
// the failure; the logs show scheme://host:port and a marker.
func TestWebhookURLSecretsNotLogged(t *testing.T) {
	const secretPath = "/services/T0/s3cr3t-path?token=s3cr3t-query"
	answer := func(code int, location string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if location != "" {
				w.Header().Set("Location", location)
			}
			w.WriteHeader(code)
		})
	}
	for _, tt := range []struct {
		name string
		base func(t *testing.T) string // scheme://host:port of the receiver
		want string                    // in the logs
	}{
		{"server error, retried", func(t *testing.T) string { return startHTTP(t, answer(http.StatusInternalServerError, "")) }, "HTTP 500"},
		{"refused for good", func(t *testing.T) string { return startHTTP(t, answer(http.StatusForbidden, "")) }, "HTTP 403"},
		{"redirect to a secret", func(t *testing.T) string {
			return startHTTP(t, answer(http.StatusFound, "https://elsewhere.example/s3cr3t-location?token=s3cr3t-location"))
		}, "redirect to https://elsewhere.example/[redacted] not followed"},
		{"connection refused", func(t *testing.T) string { return "http://" + freeAddr(t) }, "connection refused"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			base := tt.base(t)
			logger, logs := newLogger()
			d := webhookDispatcher(t, t.TempDir(), WebhookOptions{URL: base + secretPath}, SpoolOptions{}, logger)
			dispatchN(t, d, 0, 1)
			waitFor(t, "a failed attempt", func() bool { return stats(d, "webhook").Failed >= 1 })
			closeNow(t, d, 20*time.Millisecond)
			out := logs.String()
			contains(t, out, tt.want)
			contains(t, out, base+"/[redacted]")
			if strings.Contains(out, "s3cr3t") || strings.Contains(out, "services") {
				t.Errorf("logs hold the URL's path or query:\n%s", out)
			}
		})
	}
}

// The receiver's answer decides: delivered, refused for good, or worth retrying.
func TestWebhookStatus(t *testing.T) {
	for _, tt := range []struct {
		code      int
		ok, retry bool
	}{
		{200, true, false}, {202, true, false}, {204, true, false},
		{400, false, false}, {401, false, false}, {403, false, false}, {404, false, false}, {413, false, false},
		{408, false, true}, {429, false, true}, {500, false, true}, {502, false, true}, {503, false, true},
		{302, false, true}, {307, false, true},
	} {
		t.Run(http.StatusText(tt.code), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Location", "https://elsewhere.example/")
				w.WriteHeader(tt.code)
			}))
			defer srv.Close()
			wh, err := NewWebhook(WebhookOptions{URL: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			err = wh.Deliver(t.Context(), numbered(0), []byte("{}\n"))
			switch {
			case tt.ok && err != nil:
				t.Fatalf("HTTP %d: %v, want delivered", tt.code, err)
			case !tt.ok && err == nil:
				t.Fatalf("HTTP %d delivered, want an error", tt.code)
			case !tt.ok && IsPermanent(err) == tt.retry:
				t.Fatalf("HTTP %d: permanent=%v (%v), want retryable=%v", tt.code, IsPermanent(err), err, tt.retry)
			}
			if tt.code/100 == 3 {
				contains(t, err.Error(), "set the webhook URL to the final address")
			}
		})
	}
}

// With MaxRetries, one Deliver retries by itself, and stops waiting when its context ends.
func TestWebhookMaxRetries(t *testing.T) {
	rc := &receiver{status: func(req, _ int) int {
		if req <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	wh, err := NewWebhook(WebhookOptions{URL: srv.URL, MaxRetries: 2, Backoff: fast})
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Deliver(t.Context(), numbered(0), []byte(`{"Data":{"n":0}}`)); err != nil {
		t.Fatalf("third attempt should succeed: %v", err)
	}
	if n := rc.requestCount(); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}

	slow, err := NewWebhook(WebhookOptions{URL: "http://" + freeAddr(t), MaxRetries: 5, Backoff: Backoff{Min: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err = slow.Deliver(ctx, numbered(0), []byte("{}"))
	if err == nil || ctx.Err() == nil {
		t.Fatalf("Deliver returned %v before its context ended", err)
	}
	contains(t, err.Error(), "gave up waiting to retry")
}

// A receiver that fails (5xx, 429, 408) before it recovers gets every finding, in order, over verified TLS,
// with the content type and the token.
func TestWebhookRetriesUntilDelivered(t *testing.T) {
	failures := []int{http.StatusInternalServerError, http.StatusTooManyRequests, http.StatusRequestTimeout, http.StatusBadGateway}
	rc := &receiver{status: func(req, _ int) int {
		if req <= len(failures) {
			return failures[req-1]
		}
		return http.StatusOK
	}}
	srv, pool := startTLS(t, rc)
	dir := t.TempDir()
	logger, logs := newLogger()
	d := webhookDispatcher(t, dir, WebhookOptions{URL: srv.URL, RootCAs: pool, Header: "Authorization", Token: "Bearer s3cret"},
		SpoolOptions{}, logger)
	const n = 10
	dispatchN(t, d, 0, n)
	waitFor(t, "every finding delivered", func() bool { return len(rc.got()) >= n })
	closeNow(t, d, time.Second)

	allOf(t, rc.got(), n)
	s := stats(d, "webhook")
	if s.Delivered != n || s.Failed != uint64(len(failures)) || s.Dropped != 0 || s.SpoolEntries != 0 || s.SpoolBytes != 0 {
		t.Errorf("stats %+v, want %d delivered, %d failed, nothing dropped or left", s, n, len(failures))
	}
	if files := spoolFiles(t, dir); len(files) != 0 {
		t.Errorf("spool still holds %v", files)
	}
	if got := rc.header.Get("Authorization"); got != "Bearer s3cret" {
		t.Errorf("Authorization %q, want the token", got)
	}
	if got := rc.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type %q", got)
	}
	contains(t, logs.String(), "HTTP 429")
}

// A receiver that is down at start (connection refused) is retried, not fatal.
func TestWebhookDownAtStart(t *testing.T) {
	addr := freeAddr(t)
	d := webhookDispatcher(t, t.TempDir(), WebhookOptions{URL: "http://" + addr + "/hook"}, SpoolOptions{}, nil)
	const n = 5
	dispatchN(t, d, 0, n)
	waitFor(t, "failed attempts", func() bool { return stats(d, "webhook").Failed >= 2 })
	if s := stats(d, "webhook"); s.Delivered != 0 || s.SpoolEntries != n {
		t.Fatalf("stats %+v while down, want all %d spooled", s, n)
	}
	rc := &receiver{}
	serveOn(t, addr, rc)
	waitFor(t, "every finding delivered", func() bool { return len(rc.got()) >= n })
	closeNow(t, d, time.Second)
	allOf(t, rc.got(), n)
}

// A 400 drops that finding, counted and logged, and does not hold up the ones behind it.
func TestWebhookRefusalDropped(t *testing.T) {
	rc := &receiver{status: func(_, n int) int {
		if n == 2 {
			return http.StatusBadRequest
		}
		return http.StatusOK
	}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	logger, logs := newLogger()
	d := webhookDispatcher(t, t.TempDir(), WebhookOptions{URL: srv.URL}, SpoolOptions{}, logger)
	dispatchN(t, d, 0, 5)
	waitFor(t, "the other findings", func() bool { return len(rc.got()) >= 4 })
	closeNow(t, d, time.Second)

	if got := rc.got(); len(got) != 4 || got[0] != 0 || got[1] != 1 || got[2] != 3 || got[3] != 4 {
		t.Errorf("accepted %v, want [0 1 3 4]", got)
	}
	s := stats(d, "webhook")
	if s.Delivered != 4 || s.Dropped != 1 || s.Failed != 1 || s.SpoolEntries != 0 {
		t.Errorf("stats %+v, want 4 delivered, 1 dropped", s)
	}
	if n := rc.requestCount(); n != 5 {
		t.Errorf("%d requests, want 5: a refused finding must not be retried", n)
	}
	contains(t, logs.String(), `reason="the output refused it"`)
	contains(t, logs.String(), "HTTP 400 Bad Request")
}

// A server whose certificate is not trusted never gets the finding: the error is logged and counted, and the
// finding stays in the spool, across a restart.
func TestWebhookUntrustedCertificate(t *testing.T) {
	rc := &receiver{}
	srv, _ := startTLS(t, rc)
	dir := t.TempDir()
	logger, logs := newLogger()
	d := webhookDispatcher(t, dir, WebhookOptions{URL: srv.URL}, SpoolOptions{}, logger)
	dispatchN(t, d, 0, 1)
	waitFor(t, "failed attempts", func() bool { return stats(d, "webhook").Failed >= 2 })
	closeNow(t, d, 20*time.Millisecond)

	if s := stats(d, "webhook"); s.Delivered != 0 || s.Dropped != 0 || s.SpoolEntries != 1 {
		t.Errorf("stats %+v, want nothing delivered or dropped, 1 entry left", s)
	}
	if n := rc.requestCount(); n != 0 {
		t.Errorf("the untrusted server got %d requests", n)
	}
	contains(t, logs.String(), "certificate signed by unknown authority")
	contains(t, logs.String(), "findings left in the spool")
	if files := spoolFiles(t, dir); len(files) != 1 {
		t.Errorf("spool holds %v, want the one finding", files)
	}
	sp, err := OpenSpool(dir, SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if n, _ := sp.Len(); n != 1 {
		t.Errorf("reopened spool has %d entries, want 1", n)
	}
}

// The token is a secret: it must not appear in logs even when delivery fails.
func TestWebhookTokenNotLogged(t *testing.T) {
	const token = "Bearer do-not-log-me"
	rc := &receiver{status: func(int, int) int { return http.StatusUnauthorized }}
	srv, pool := startTLS(t, rc)
	logger, logs := newLogger()
	d := webhookDispatcher(t, t.TempDir(), WebhookOptions{URL: srv.URL, Header: "Authorization", Token: token, RootCAs: pool},
		SpoolOptions{}, logger)
	dispatchN(t, d, 0, 1)
	waitFor(t, "the refusal", func() bool { return stats(d, "webhook").Dropped == 1 })
	closeNow(t, d, time.Second)
	if out := logs.String(); !strings.Contains(out, "HTTP 401") || strings.Contains(out, "do-not-log-me") {
		t.Errorf("logs %q: want the refusal logged without the token", out)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		header string
		want   time.Duration
		ok     bool
	}{
		{"3", 3 * time.Second, true},
		{" 0 ", 0, true},
		{"Sat, 28 Nov 2026 12:00:30 GMT", 30 * time.Second, true},
		{"Sat, 28 Nov 2026 11:00:00 GMT", 0, true}, // in the past: retry now
		{"", 0, false},
		{"-1", 0, false},
		{"soon", 0, false},
	} {
		got, ok := parseRetryAfter(tt.header, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseRetryAfter(%q) = %s, %v; want %s, %v", tt.header, got, ok, tt.want, tt.ok)
		}
	}
	if d := retryDelay(fast, 1, &retryAfterError{err: errors.New("busy"), after: time.Hour}); d != MaxRetryAfter {
		t.Errorf("a Retry-After of an hour waits %s, want the cap %s", d, MaxRetryAfter)
	}
}

// A receiver that answers 429 with Retry-After is not asked again before that time, even though the backoff
// alone would retry at once.
func TestWebhookHonoursRetryAfter(t *testing.T) {
	var mu sync.Mutex
	var times []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		if len(times) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	}))
	defer srv.Close()
	wh, err := NewWebhook(WebhookOptions{URL: srv.URL, MaxRetries: 1, Backoff: fast})
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Deliver(t.Context(), numbered(0), []byte(`{"Data":{"n":0}}`)); err != nil {
		t.Fatalf("the retry after Retry-After should succeed: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(times) != 2 || times[1].Sub(times[0]) < time.Second {
		t.Errorf("requests at %v; want two, the second at least 1s after the first", times)
	}
}
