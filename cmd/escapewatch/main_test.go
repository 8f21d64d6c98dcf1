package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
)

func TestCommandLine(t *testing.T) {
	stream, err := os.ReadFile("../../internal/replay/testdata/tracee_stream.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		args      []string
		stdin     []byte
		wantErr   error  // nil: success
		errHas    string // substring of the error
		stdoutHas string
		stderrHas string
	}{
		{name: "version", args: []string{"version"}, stdoutHas: "escapewatch "},
		{name: "help", args: []string{"--help"}, stdoutHas: "escapewatch replay"},
		{name: "help command", args: []string{"help"}, stdoutHas: "Examples:"},
		{name: "unknown command", args: []string{"watch"}, wantErr: errUsage, errHas: `unknown command "watch"`},
		{name: "unknown run flag", args: []string{"run", "--bogus"}, wantErr: errUsage, errHas: "-bogus", stderrHas: "Usage: escapewatch run"},
		{name: "unknown flag without command", args: []string{"--bogus"}, wantErr: errUsage, errHas: "-bogus"},
		{name: "bad scope", args: []string{"run", "--scope", "pods"}, wantErr: errUsage, errHas: `key scope[0] (--scope): unknown origin "pods"`},
		{name: "bad log level", args: []string{"run", "--log-level", "loud"}, wantErr: errUsage, errHas: "--log-level"},
		{name: "run takes no arguments", args: []string{"run", "extra"}, wantErr: errUsage, errHas: "no arguments"},
		{name: "replay needs a file", args: []string{"replay"}, wantErr: errUsage, errHas: "one FILE"},
		{name: "replay missing file", args: []string{"replay", "/nonexistent/events.jsonl"}, errHas: "no such file"},
		{
			name: "replay stdin with bad lines", args: []string{"replay", "-"}, stdin: stream,
			errHas: "lines were not Tracee events", stdoutHas: `"ID":"TRC-1010"`, stderrHas: "line 6: invalid JSON",
		},
		{
			name: "replay clean stream", args: []string{"replay", "-"}, stdin: firstLines(stream, 5),
			stdoutHas: `"ID":"TRC-1010"`,
		},
		{name: "bad config file", args: []string{"run", "--config", "/nonexistent/escapewatch.yaml"}, errHas: "no such file"},
		{name: "bad webhook url", args: []string{"run", "--webhook-url", "ftp://siem"}, wantErr: errUsage, errHas: "--webhook-url"},
		{name: "credentials over http", args: []string{"run", "--webhook-url", "http://u:p@siem.example/hook"}, wantErr: errUsage, errHas: "allowPlainHTTPToken"},
		{name: "bad output format", args: []string{"run", "--output", "xml"}, wantErr: errUsage, errHas: "--output"},
		{name: "selftest unknown flag", args: []string{"selftest", "--bogus"}, wantErr: errUsage, errHas: "-bogus"},
		{name: "replay bad scope", args: []string{"replay", "--scope", "x", "-"}, wantErr: errUsage, errHas: "--scope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, bytes.NewReader(tt.stdin), &stdout, &stderr)
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
			if !strings.Contains(stderr.String(), tt.stderrHas) {
				t.Errorf("stderr %q, want it to contain %q", stderr.String(), tt.stderrHas)
			}
		})
	}
}

func firstLines(b []byte, n int) []byte {
	lines := bytes.SplitAfter(b, []byte("\n"))
	return bytes.Join(lines[:n], nil)
}
