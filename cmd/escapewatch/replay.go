package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"escapewatch/internal/replay"
	"escapewatch/internal/rule"
)

func runReplay(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("replay", "escapewatch replay [--scope LIST] FILE|-", stderr)
	scopeFlag := fs.String("scope", rule.ReplayScope.String(),
		"origins that may raise findings (default: Tracee's selector, container only); or all")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: replay takes one FILE (or - for stdin)", errUsage)
	}
	scope, err := rule.ParseScope(*scopeFlag)
	if err != nil {
		return fmt.Errorf("%w: --scope: %v", errUsage, err)
	}
	eng, err := rule.NewEngine(rule.Default(), scope)
	if err != nil {
		return err
	}
	in := stdin
	if name := fs.Arg(0); name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		defer f.Close()
		in = f
	}
	st, err := replay.Run(ctx, in, stdout, stderr, eng)
	if err != nil {
		return err
	}
	if st.Failed > 0 {
		return fmt.Errorf("replay: %d of %d lines were not Tracee events (see the line errors above); %d findings written",
			st.Failed, st.Lines, st.Findings)
	}
	return nil
}
