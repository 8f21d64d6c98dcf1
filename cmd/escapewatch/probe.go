package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// maxProbeBody bounds what probe copies to stdout: /metrics is tens of KiB; anything far larger is not ours.
const maxProbeBody = 16 << 20

// runProbe is an HTTP GET of one of the sensor's own endpoints, for exec probes: the DaemonSet keeps the
// endpoint on the pod's loopback, which the kubelet's httpGet probes (sent to the pod's IP) cannot reach.
// It copies the answer to stdout and fails unless the status is 2xx.
func runProbe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("probe", "escapewatch probe [--timeout D] URL   (e.g. http://127.0.0.1:9464/readyz)", stderr)
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for the whole answer")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: probe takes one URL, such as http://127.0.0.1:9464/readyz", errUsage)
	}
	u, err := url.Parse(fs.Arg(0))
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("%w: probe URL %q: want http://HOST:PORT/PATH, such as http://127.0.0.1:9464/readyz", errUsage, fs.Arg(0))
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("probe %s: %w", u, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("probe: %w (is the sensor running with --metrics-addr %s?)", err, u.Host)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(stdout, io.LimitReader(resp.Body, maxProbeBody)); err != nil {
		return fmt.Errorf("probe %s: reading the answer: %w", u, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("probe %s: HTTP %s", u, resp.Status)
	}
	return nil
}
