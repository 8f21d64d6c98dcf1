package output

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"escapewatch/internal/finding"
)

// DefaultWebhookTimeout bounds one POST, connection and TLS handshake included.
const DefaultWebhookTimeout = 5 * time.Second

// WebhookOptions configure a Webhook.
type WebhookOptions struct {
	URL    string // http:// or https://
	Header string // a header to authenticate with, e.g. Authorization; "" sends none
	Token  string // the Header's value, e.g. "Bearer ..."
	// Timeout bounds one attempt; 0 means DefaultWebhookTimeout.
	Timeout time.Duration
	// RootCAs replaces the system's trusted roots, for a receiver with a private CA. The certificate is always
	// verified: there is no way to turn that off.
	RootCAs *x509.CertPool
	// MaxRetries is how many more attempts one Deliver makes after a retryable failure, waiting Backoff between
	// them. 0 (one attempt) is right behind a Spool, whose delivery goroutine retries without limit.
	MaxRetries int
	Backoff    Backoff
}

// Webhook POSTs each finding's JSON to a URL. A 2xx answer is a delivery; a 4xx other than 408 and 429 is
// permanent (the receiver rejects this finding, retrying would only repeat that); anything else (5xx, 408,
// 429, a redirect, a network or TLS error) is retryable.
type Webhook struct {
	url    string
	opts   WebhookOptions
	client *http.Client
}

// NewWebhook checks the URL and builds the client. It does not contact the receiver: one that is down at start
// is retried like one that goes down later.
func NewWebhook(opts WebhookOptions) (*Webhook, error) {
	if err := checkURL(opts.URL); err != nil {
		return nil, err
	}
	if opts.Header != "" && strings.ContainsAny(opts.Header, " :\r\n") {
		return nil, fmt.Errorf("webhook header name %q: not a valid HTTP header name (e.g. Authorization)", opts.Header)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultWebhookTimeout
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: opts.RootCAs, MinVersion: tls.VersionTLS12}
	return &Webhook{
		url:  opts.URL,
		opts: opts,
		client: &http.Client{
			Transport: transport,
			Timeout:   opts.Timeout,
			// A redirect would turn the POST into a GET on 301-303; the answer is reported instead, so that the
			// operator sets the final URL.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("webhook URL: %w (write it as https://host[:port]/path)", err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return fmt.Errorf("webhook URL %q: scheme %q is not http or https (write it as https://host[:port]/path)", raw, u.Scheme)
	}
	if u.Host == "" {
		return fmt.Errorf("webhook URL %q: no host (write it as https://host[:port]/path)", raw)
	}
	return nil
}

// Name is "webhook".
func (w *Webhook) Name() string { return "webhook" }

// Deliver POSTs line (without its newline) with up to MaxRetries retries; the error of the last attempt is
// returned, marked Permanent when the receiver refused the finding for good.
func (w *Webhook) Deliver(ctx context.Context, _ finding.Finding, line []byte) error {
	body := bytes.TrimSuffix(line, []byte("\n"))
	var err error
	for attempt := 0; attempt <= w.opts.MaxRetries; attempt++ {
		if attempt > 0 && !sleep(ctx, retryDelay(w.opts.Backoff, attempt, err)) {
			return fmt.Errorf("%w (gave up waiting to retry: %w)", err, ctx.Err())
		}
		if err = w.post(ctx, body); err == nil || IsPermanent(err) {
			return err
		}
	}
	return err
}

func (w *Webhook) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return Permanent(fmt.Errorf("webhook request: %w", err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "escapewatch")
	if w.opts.Header != "" {
		req.Header.Set(w.opts.Header, w.opts.Token)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook POST: %w", err)
	}
	defer resp.Body.Close()
	// Read a little of the answer for the error message, and drain up to a bound so the connection is reused.
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return statusError(resp, snippet)
}

// statusError classifies the receiver's answer.
func statusError(resp *http.Response, snippet []byte) error {
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return nil
	}
	err := fmt.Errorf("webhook POST %s: HTTP %s: %q", resp.Request.URL.Redacted(), resp.Status, bytes.TrimSpace(snippet))
	switch {
	case code >= 300 && code < 400:
		return fmt.Errorf("%w: redirect to %q not followed (set the webhook URL to the final address)", err, resp.Header.Get("Location"))
	case code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests:
		return Permanent(fmt.Errorf("%w: the receiver refused this finding (check the URL and the token)", err))
	default: // 5xx, 408, 429: the receiver is down or busy
		if after, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			return &retryAfterError{err: fmt.Errorf("%w (Retry-After %s)", err, after), after: after}
		}
		return err
	}
}

// Close releases idle connections.
func (w *Webhook) Close() error {
	w.client.CloseIdleConnections()
	return nil
}
