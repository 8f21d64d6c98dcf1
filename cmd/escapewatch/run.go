package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"escapewatch/internal/config"
	"escapewatch/internal/enrich"
	"escapewatch/internal/metrics"
	"escapewatch/internal/output"
	"escapewatch/internal/pipeline"
	"escapewatch/internal/rule"
	"escapewatch/internal/sensor"
	"escapewatch/internal/suppress"
)

const runSynopsis = "escapewatch run [--config FILE] [--backend NAME] [--enforce] [--scope LIST] [--any-fs] " +
	"[--output json|table] [--output-file PATH] [--webhook-url URL] [--spool-dir DIR] [--metrics-addr ADDR] ..."

// runFlags reads run's flags over the configuration file: a flag given on the command line wins.
func runFlags(args []string, stderr io.Writer) (config.Config, error) {
	def := config.Default()
	fs := newFlagSet("run", runSynopsis, stderr)
	path := fs.String("config", "", "YAML configuration file (see the README's configuration reference); flags override it")
	backend := fs.String("backend", def.Backend,
		"kernel hooks to use: "+strings.Join(sensor.BackendNames(), ", ")+" (auto picks the best the kernel offers)")
	enforce := fs.Bool("enforce", false,
		"stop writes to the real release_agent by processes outside the host's namespaces: denied (lsm, fentry) or killed (kprobe, tracepoint)")
	scope := fs.String("scope", strings.Join(def.Scope, ","),
		"origins that may raise findings: comma-separated container, container-init, namespaced, host, or all")
	anyFS := fs.Bool("any-fs", false,
		"pass every file named release_agent, on any filesystem (Tracee's behaviour), not only the real cgroup v1 one")
	logLevel := fs.String("log-level", def.LogLevel, "log level: debug, info, warn or error")
	format := fs.String("output", "", "stdout format: json or table (default: table on a terminal, json otherwise)")
	file := fs.String("output-file", "", "also append findings as JSON lines to this file")
	webhook := fs.String("webhook-url", "", "also POST each finding to this http(s) URL (spooled on disk, retried)")
	spoolDir := fs.String("spool-dir", def.Outputs.SpoolDir, "directory of the webhook's durable spool")
	metricsAddr := fs.String("metrics-addr", def.Metrics.Addr, `Prometheus /metrics, /healthz and /readyz ("" turns them off)`)
	docker := fs.String("docker-socket", "", "Docker Engine API socket for container names and images (default /var/run/docker.sock)")
	containerd := fs.String("containerd-socket", "", "containerd socket for container names, images and pods (default /run/containerd/containerd.sock)")
	window := fs.Duration("aggregate-window", time.Duration(def.AggregateWindow),
		"fold repeats of a finding (same rule, process, file, value, verdict, action) within this window into one with a count; 0 turns it off")
	if err := parseFlags(fs, args); err != nil {
		return config.Config{}, err
	}
	if fs.NArg() > 0 {
		return config.Config{}, fmt.Errorf("%w: run takes no arguments, got %q", errUsage, fs.Args())
	}
	cfg := def
	if *path != "" {
		var err error
		if cfg, err = config.Load(*path); err != nil {
			return config.Config{}, err
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "backend":
			cfg.Backend = *backend
		case "enforce":
			cfg.Enforce = *enforce
		case "scope":
			cfg.Scope = strings.Split(*scope, ",")
		case "any-fs":
			cfg.AnyFS = *anyFS
		case "log-level":
			cfg.LogLevel = *logLevel
		case "output":
			cfg.Outputs.Format = *format
		case "output-file":
			cfg.Outputs.File = *file
		case "webhook-url":
			if cfg.Outputs.Webhook == nil {
				cfg.Outputs.Webhook = &config.Webhook{}
			}
			cfg.Outputs.Webhook.URL = *webhook
		case "spool-dir":
			cfg.Outputs.SpoolDir = *spoolDir
		case "metrics-addr":
			cfg.Metrics.Addr = *metricsAddr
		case "docker-socket":
			cfg.Runtimes.DockerSocket = *docker
		case "containerd-socket":
			cfg.Runtimes.ContainerdSocket = *containerd
		case "aggregate-window":
			cfg.AggregateWindow = config.Duration(*window)
		}
	})
	if err := cfg.Validate(); err != nil {
		return config.Config{}, fmt.Errorf("%w: %v", errUsage, err)
	}
	return cfg, nil
}

func runSensor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := runFlags(args, stderr)
	if err != nil {
		return err
	}
	// A daemon must not die of a hangup: SIGHUP is caught from here until the outputs are closed.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	scope, err := rule.ParseScope(strings.Join(cfg.Scope, ","))
	if err != nil {
		return fmt.Errorf("%w: scope: %v", errUsage, err)
	}
	log, err := newLogger(stderr, cfg.LogLevel)
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
	runtimes := enrich.NewRuntimes(enrich.RuntimeOptions{
		DockerSocket: cfg.Runtimes.DockerSocket, ContainerdSocket: cfg.Runtimes.ContainerdSocket, Logger: log,
	})
	defer runtimes.Close()
	out, err := newDispatcher(cfg, stdout, log)
	if err != nil {
		return err
	}
	closeOutputs := sync.OnceFunc(func() {
		drain, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := out.Close(drain); err != nil {
			log.Warn("outputs closed with findings left in the spool (delivered after the next start)", "err", err)
		}
	})
	defer closeOutputs()

	// The metrics endpoint serves while the sensor loads (the programs can take seconds), so its sources read
	// the sensor through live, which holds nothing until Open returned. Sensor.Stats stays valid after Close.
	var live atomic.Pointer[sensor.Sensor]
	var pipe atomic.Pointer[pipeline.Pipeline]
	m := metrics.New(buildVersion(), metrics.Sources{
		KernelEmitted:     func() uint64 { return sensorStat(live.Load()).KernelEmitted },
		KernelDropped:     func() uint64 { return sensorStat(live.Load()).KernelDropped },
		KernelKillsFailed: func() uint64 { return sensorStat(live.Load()).KernelKillsFailed },
		KernelOverBudget:  func() uint64 { return sensorStat(live.Load()).KernelOverBudget },
		KernelRepeated:    func() uint64 { return sensorStat(live.Load()).KernelRepeated },
		KernelMissed:      func() uint64 { return sensorStat(live.Load()).KernelMissed },
		KernelUntracked:   func() uint64 { return sensorStat(live.Load()).KernelUntracked },
		Undecodable:       func() uint64 { return sensorStat(live.Load()).DecodeErrors },
		Sinks:             func() []metrics.SinkStats { return sinkStats(out.Stats()) },
		Stages:            func() []metrics.StageStats { return stageStats(pipe.Load()) },
		EnrichHits:        func() uint64 { return runtimes.Stats().Hits },
		EnrichMisses:      func() uint64 { return runtimes.Stats().Misses },
		EnrichErrors:      func() uint64 { return runtimes.Stats().Errors },
	})
	if cfg.Metrics.Addr != "" {
		_, stop, err := m.Serve(cfg.Metrics.Addr, log)
		if err != nil {
			return err
		}
		defer stop()
	}

	// No Runtimes for the sensor: its reader must not wait for a runtime's API; the pipeline enriches.
	s, err := sensor.Open(sensor.Config{
		Backend: cfg.Backend, AnyFS: cfg.AnyFS, Enforce: cfg.Enforce, EnforceAllowCgroups: enforceAllowCgroups(cfg),
		HostReleaseAgents: cfg.HostReleaseAgents,
		Classifier:        classifier, Logger: log,
	})
	if err != nil {
		return err
	}
	defer s.Close()
	live.Store(s)
	// Loading parsed the kernel's BTF (megabytes, garbage once the programs are loaded): hand that memory back
	// now rather than keep it as idle heap for the sensor's lifetime.
	debug.FreeOSMemory()
	m.Ready(s.Backend())
	log.Info("sensor ready", "backend", s.Backend(), "programs", s.Programs(), "scope", scope.String(),
		"host_namespaces_from", classifier.Source(), "any_fs", cfg.AnyFS, "enforce", cfg.Enforce, "enforce_allow", enforceAllowCgroups(cfg), "version", buildVersion())

	p := pipeline.New(pipeline.Options{
		Engine: eng, Allow: suppress.Allowlist(cfg.Allow), Window: time.Duration(cfg.AggregateWindow),
		Out: out, Runtimes: runtimes, Metrics: m, Logger: log,
	})
	pipe.Store(p)
	// The helpers stop when the sensor does, also when it stops on an error.
	helpers, stopHelpers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { reopenOnHangup(helpers, hup, out, log) })
	wg.Go(func() { s.ReportDrops(helpers, 10*time.Second) })
	err = s.Run(ctx, p.Event)
	stopHelpers()
	wg.Wait()
	p.Close() // what the stages hold goes to the outputs
	closeOutputs()
	logStats(log, s.Stats(), eng.Stats(), p.Stats(), out.Stats())
	// Findings an output lost are counted and were logged; they are not the run's error: a receiver that was
	// down must not make a sensor stopped by a signal report a failure.
	return err
}

// reopenOnHangup reopens the output file on each SIGHUP until ctx ends: log rotators rename the file, then send
// SIGHUP.
func reopenOnHangup(ctx context.Context, hup <-chan os.Signal, out *output.Dispatcher, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			n, err := out.Reopen()
			if err != nil {
				log.Error("SIGHUP: reopen the output file", "err", err)
				continue
			}
			log.Info("SIGHUP: output files reopened", "files", n)
		}
	}
}

func enforceAllowCgroups(cfg config.Config) []string {
	var cgroups []string
	for _, a := range cfg.EnforceAllow {
		cgroups = append(cgroups, a.Cgroup)
	}
	return cgroups
}

func sensorStat(s *sensor.Sensor) sensor.Stats {
	if s == nil {
		return sensor.Stats{}
	}
	return s.Stats()
}

func sinkStats(in []output.SinkStats) []metrics.SinkStats {
	out := make([]metrics.SinkStats, len(in))
	for i, s := range in {
		out[i] = metrics.SinkStats(s)
	}
	return out
}

// newDispatcher builds the outputs: stdout (and a file) written directly, a webhook fed from its spool.
func newDispatcher(cfg config.Config, stdout io.Writer, log *slog.Logger) (*output.Dispatcher, error) {
	format, colour := cfg.Outputs.Format, false
	if f, ok := stdout.(*os.File); ok {
		if format == "" {
			format = output.DefaultFormat(f)
		}
		// Colours only on a terminal, and never when NO_COLOR is set to anything (no-color.org).
		colour = format == "table" && output.DefaultFormat(f) == "table" && os.Getenv("NO_COLOR") == ""
	}
	if format == "" {
		format = "json"
	}
	std, err := output.NewStdout(stdout, format, colour)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	opts := output.Options{Logger: log, Direct: []output.Sink{std}}
	if cfg.Outputs.File != "" {
		f, err := output.NewFile(cfg.Outputs.File)
		if err != nil {
			return nil, err
		}
		opts.Direct = append(opts.Direct, f)
	}
	if w := cfg.Outputs.Webhook; w != nil && w.URL != "" {
		token := ""
		if w.TokenFile != "" {
			b, err := os.ReadFile(w.TokenFile)
			if err != nil {
				return nil, fmt.Errorf("outputs.webhook.tokenFile: %w", err)
			}
			token = strings.TrimSpace(string(b))
		}
		hook, err := output.NewWebhook(output.WebhookOptions{URL: w.URL, Header: w.Header, Token: token, Timeout: time.Duration(w.Timeout),
			AllowPlainHTTPToken: w.AllowPlainHTTPToken})
		if err != nil {
			return nil, err
		}
		spool, err := output.OpenSpool(filepath.Join(cfg.Outputs.SpoolDir, "webhook"), output.SpoolOptions{MaxBytes: cfg.Outputs.SpoolMaxBytes})
		if err != nil {
			return nil, fmt.Errorf("webhook spool (set --spool-dir to a writable directory): %w", err)
		}
		opts.Spooled = append(opts.Spooled, output.Spooled{Sink: hook, Spool: spool})
	}
	return output.NewDispatcher(opts)
}

func logStats(log *slog.Logger, ss sensor.Stats, es rule.Stats, stages []pipeline.StageStats, sinks []output.SinkStats) {
	attrs := []any{
		"records", ss.Records, "kernel_emitted", ss.KernelEmitted, "kernel_dropped", ss.KernelDropped,
		"kernel_over_budget", ss.KernelOverBudget, "kernel_repeated", ss.KernelRepeated,
		"kernel_kills_failed", ss.KernelKillsFailed, "kernel_programs_missed", ss.KernelMissed,
		"kernel_io_uring_untracked", ss.KernelUntracked,
		"decode_errors", ss.DecodeErrors, "renames_not_agent", ss.Filtered, "events", es.Events,
	}
	for id, rs := range es.Rules {
		attrs = append(attrs, id+"_findings", rs.Findings, id+"_skipped_args", rs.SkippedArgs, id+"_errors", rs.Errors)
	}
	lost := false
	for _, st := range stages {
		attrs = append(attrs, "shed_before_"+st.Stage, st.Shed)
		lost = lost || st.Shed > 0
	}
	for _, st := range sinks {
		attrs = append(attrs, st.Name+"_delivered", st.Delivered, st.Name+"_dropped", st.Dropped)
		lost = lost || st.Dropped > 0
	}
	level := slog.LevelInfo
	if ss.KernelDropped > 0 || ss.DecodeErrors > 0 || ss.KernelKillsFailed > 0 || ss.KernelOverBudget > 0 || ss.KernelMissed > 0 || ss.KernelUntracked > 0 || lost {
		level = slog.LevelWarn
	}
	log.Log(context.Background(), level, "sensor stopped", attrs...)
}

// stageStats are the pipeline's queues for the metrics (none before the pipeline exists).
func stageStats(p *pipeline.Pipeline) []metrics.StageStats {
	if p == nil {
		return nil
	}
	var out []metrics.StageStats
	for _, s := range p.Stats() {
		out = append(out, metrics.StageStats{Name: s.Stage, Queued: s.Len, Shed: s.Shed})
	}
	return out
}
