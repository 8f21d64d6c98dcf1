package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"escapewatch/internal/enrich"
	"escapewatch/internal/event"
	"escapewatch/internal/rule"
	"escapewatch/internal/sensor"
)

func runSensor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", "escapewatch run [--backend NAME] [--enforce] [--scope LIST] [--any-fs] [--log-level LEVEL]", stderr)
	backend := fs.String("backend", sensor.BackendAuto,
		"kernel hooks to use: "+strings.Join(sensor.BackendNames(), ", ")+" (auto picks the best the kernel offers)")
	enforce := fs.Bool("enforce", false,
		"stop writes to the real release_agent by processes outside the host's namespaces: denied (lsm) or killed (other backends)")
	scopeFlag := fs.String("scope", rule.LiveScope.String(),
		"origins that may raise findings: comma-separated container, container-init, namespaced, host, or all")
	anyFS := fs.Bool("any-fs", false,
		"pass every file named release_agent, on any filesystem (Tracee's behaviour), not only the real cgroup v1 one")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: run takes no arguments, got %q", errUsage, fs.Args())
	}
	scope, err := rule.ParseScope(*scopeFlag)
	if err != nil {
		return fmt.Errorf("%w: --scope: %v", errUsage, err)
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	eng, err := rule.NewEngine(rule.Default(), scope)
	if err != nil {
		return err
	}
	classifier, err := enrich.NewClassifier("/proc")
	if err != nil {
		return err
	}
	s, err := sensor.Open(sensor.Config{
		Backend: *backend, AnyFS: *anyFS, Enforce: *enforce, Classifier: classifier, Logger: log,
	})
	if err != nil {
		return err
	}
	defer s.Close()
	log.Info("sensor ready", "backend", s.Backend(), "programs", s.Programs(), "scope", scope.String(),
		"host_namespaces_from", classifier.Source(),
		"any_fs", *anyFS, "enforce", *enforce, "version", buildVersion())

	out := bufio.NewWriter(stdout)
	enc := json.NewEncoder(out)
	var writeErr error
	emit := func(ev *event.Event) {
		log.Debug("event", "name", ev.EventName, "pid", ev.HostProcessID, "comm", ev.ProcessName, "origin", ev.Origin)
		for _, f := range eng.Process(ev) {
			if writeErr != nil {
				return
			}
			// One line per finding, flushed at once: a consumer must see it within milliseconds.
			if writeErr = enc.Encode(f); writeErr == nil {
				writeErr = out.Flush()
			}
			if writeErr != nil {
				log.Error("write finding to stdout", "err", writeErr)
			}
		}
	}

	var wg sync.WaitGroup
	wg.Go(func() { s.ReportDrops(ctx, 10*time.Second) })
	err = s.Run(ctx, emit)
	wg.Wait()
	logStats(log, s.Stats(), eng.Stats())
	if err != nil {
		return err
	}
	if writeErr != nil {
		return fmt.Errorf("write findings: %w", writeErr)
	}
	return nil
}

func logStats(log *slog.Logger, ss sensor.Stats, es rule.Stats) {
	attrs := []any{
		"records", ss.Records, "kernel_emitted", ss.KernelEmitted, "kernel_dropped", ss.KernelDropped,
		"decode_errors", ss.DecodeErrors, "renames_not_agent", ss.Filtered, "events", es.Events,
	}
	for id, rs := range es.Rules {
		attrs = append(attrs, id+"_findings", rs.Findings, id+"_skipped_args", rs.SkippedArgs, id+"_errors", rs.Errors)
	}
	level := slog.LevelInfo
	if ss.KernelDropped > 0 || ss.DecodeErrors > 0 {
		level = slog.LevelWarn
	}
	log.Log(context.Background(), level, "sensor stopped", attrs...)
}
