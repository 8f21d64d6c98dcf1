// Command escapewatch is a runtime-security sensor for the cgroup release_agent container escape (MITRE ATT&CK
// T1611). It runs Tracee's signature TRC-1010 on events from an in-kernel BPF filter, or over Tracee's own JSON
// events with `replay`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=..."; otherwise the VCS revision is used.
var version = ""

const usage = `escapewatch: detects the cgroup release_agent container escape (TRC-1010, MITRE ATT&CK T1611).

Usage:
  escapewatch [run] [flags]        run the sensor (root): findings as JSON lines on stdout, logs on stderr
  escapewatch replay [flags] FILE  run the rules over Tracee JSON events from FILE ("-" for stdin)
  escapewatch selftest [flags]     check that a release_agent write from a namespace is reported (root)
  escapewatch probe URL            GET one of the sensor's endpoints; fails unless 2xx (exec probes)
  escapewatch version              print the version

Examples:
  escapewatch                                   # watch containers and namespaced processes
  escapewatch run --scope all                   # also alert on host processes
  escapewatch run --any-fs                      # Tracee's behaviour: any file named release_agent
  tracee -o json -e security_file_open,security_inode_rename | escapewatch replay -
  escapewatch replay --scope all events.jsonl
  escapewatch selftest --running http://127.0.0.1:9464   # check the sensor running with --metrics-addr
  escapewatch probe http://127.0.0.1:9464/readyz         # ready: every BPF program attached

Run "escapewatch run --help" or "escapewatch replay --help" for their flags.
`

// errUsage marks command-line mistakes: exit status 2, as flag parsing does.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "escapewatch:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "escapewatch:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	} else if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
		fmt.Fprint(stdout, usage)
		return nil
	}
	switch cmd {
	case "run":
		return runSensor(ctx, args, stdout, stderr)
	case "replay":
		return runReplay(ctx, args, stdin, stdout, stderr)
	case "selftest":
		return runSelftest(ctx, args, stdout, stderr)
	case "probe":
		return runProbe(ctx, args, stdout, stderr)
	case selftestChild:
		return runSelftestChild(args)
	case "version":
		fmt.Fprintln(stdout, "escapewatch", buildVersion())
		return nil
	case "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return fmt.Errorf("%w: unknown command %q (want run, replay, selftest, probe or version; see escapewatch --help)", errUsage, cmd)
	}
}

// newFlagSet returns a flag set that reports errors instead of exiting, with usage text on stderr.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and wraps failures as usage errors; the flag package already printed the details.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("%w: --log-level %q: want debug, info, warn or error", errUsage, level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func buildVersion() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}
