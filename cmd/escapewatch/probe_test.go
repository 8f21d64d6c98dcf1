package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"

	"escapewatch/internal/metrics"
)

// TestProbe runs the exec probe against the sensor's real metrics server on loopback.
func TestProbe(t *testing.T) {
	m := metrics.New("v-test", metrics.Sources{})
	addr, stop, err := m.Serve("127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	// A port nobody listens on: taken, then released.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	base := "http://" + addr
	for _, tt := range []struct {
		name      string
		args      []string
		wantErr   error
		errHas    string // "" = success
		stdoutHas string
	}{
		{name: "healthy", args: []string{base + "/healthz"}, stdoutHas: "ok"},
		{name: "not ready", args: []string{base + "/readyz"}, errHas: "503", stdoutHas: "not ready"},
		{name: "metrics", args: []string{base + "/metrics"}, stdoutHas: `escapewatch_build_info{goversion=`},
		{name: "nobody listening", args: []string{"--timeout", "1s", "http://" + closed + "/healthz"}, errHas: "is the sensor running"},
		{name: "no URL", args: nil, wantErr: errUsage, errHas: "one URL"},
		{name: "https", args: []string{"https://" + addr + "/healthz"}, wantErr: errUsage, errHas: "want http://HOST:PORT/PATH"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), append([]string{"probe"}, tt.args...), nil, &stdout, &stderr)
			switch {
			case tt.errHas == "" && err != nil:
				t.Fatalf("error %v, want success", err)
			case tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)):
				t.Fatalf("error %v, want one containing %q", err, tt.errHas)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(stdout.String(), tt.stdoutHas) {
				t.Errorf("stdout %q, want it to contain %q", stdout.String(), tt.stdoutHas)
			}
		})
	}
	m.Ready("tracepoint")
	var stdout bytes.Buffer
	if err := run(context.Background(), []string{"probe", base + "/readyz"}, nil, &stdout, &bytes.Buffer{}); err != nil {
		t.Fatalf("ready sensor: %v", err)
	}
}
