package output

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"escapewatch/internal/finding"
	"escapewatch/internal/redact"
)

// DefaultWebhookTimeout bounds one POST, connection and TLS handshake included.
const DefaultWebhookTimeout = 5 * time.Second

// WebhookOptions configure a Webhook.
type WebhookOptions struct {
	URL    string // http:// or https://
	Header string // a header to authenticate with, e.g. Authorization; "" sends none
	Token  string // the Header's value, e.g. "Bearer ..."
	// AllowPlainHTTPToken lets a token (Header, or credentials in the URL) go over http://, readable by anyone
	// on the path; without it such a webhook is refused. Only for a receiver reached over a trusted network.
	AllowPlainHTTPToken bool
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
	shown  string // url as logs and errors show it: scheme://host[:port] and a marker, never a token
	opts   WebhookOptions
	client *http.Client
}

// NewWebhook checks the URL and builds the client. It does not contact the receiver: one that is down at start
// is retried like one that goes down later.
func NewWebhook(opts WebhookOptions) (*Webhook, error) {
	u, err := checkURL(opts.URL)
	if err != nil {
		return nil, err
	}
	if u.Scheme == "http" && (opts.Header != "" || u.User != nil) && !opts.AllowPlainHTTPToken {
		return nil, fmt.Errorf("webhook URL %s: http:// would send the token in clear text to anyone on the path: "+
			"use https://, or set AllowPlainHTTPToken (outputs.webhook.allowPlainHTTPToken: true) for a receiver on a "+
			"network you trust", redact.URL(opts.URL))
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
		url:   opts.URL,
		shown: redact.URL(opts.URL),
		opts:  opts,
		client: &http.Client{
			Transport: transport,
			Timeout:   opts.Timeout,
			// A redirect would turn the POST into a GET on 301-303; the answer is reported instead, so that the
			// operator sets the final URL.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// checkURL parses the webhook's URL. Its errors never quote the URL: its path or query may hold a token.
func checkURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error quotes the whole URL
		}
		return nil, fmt.Errorf("webhook URL %s: %w (write it as https://host[:port]/path)", redact.URL(raw), err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, fmt.Errorf("webhook URL %s: scheme %q is not http or https (write it as https://host[:port]/path)", redact.URL(raw), u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("webhook URL %s: no host (write it as https://host[:port]/path)", redact.URL(raw))
	}
	return u, nil
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
		// The client's error quotes the whole URL, token and all; it is logged on every retry.
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = w.shown
		}
		return fmt.Errorf("webhook POST: %w", err)
	}
	defer resp.Body.Close()
	// Read a little of the answer for the error message, and drain up to a bound so the connection is reused.
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return w.statusError(resp, snippet)
}

// statusError classifies the receiver's answer.
func (w *Webhook) statusError(resp *http.Response, snippet []byte) error {
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return nil
	}
	err := fmt.Errorf("webhook POST %s: HTTP %s: %q", w.shown, resp.Status, bytes.TrimSpace(snippet))
	switch {
	case code >= 300 && code < 400:
		// The new address may carry a token of its own.
		return fmt.Errorf("%w: redirect to %s not followed (set the webhook URL to the final address)", err,
			redact.URL(resp.Request.URL.ResolveReference(locationURL(resp)).String()))
	case code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests:
		return Permanent(fmt.Errorf("%w: the receiver refused this finding (check the URL and the token)", err))
	default: // 5xx, 408, 429: the receiver is down or busy
		if after, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			return &retryAfterError{err: fmt.Errorf("%w (Retry-After %s)", err, after), after: after}
		}
		return err
	}
}

// locationURL is the redirect's Location, or an empty URL when it has none or it does not parse.
func locationURL(resp *http.Response) *url.URL {
	u, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return &url.URL{}
	}
	return u
}

// Close releases idle connections.
func (w *Webhook) Close() error {
	w.client.CloseIdleConnections()
	return nil
}
