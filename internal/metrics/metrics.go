// Package metrics exposes escapewatch's counters to Prometheus and its health to probes: /metrics, /healthz
// (the process serves) and /readyz (every BPF program is attached).
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// StageStats is one pipeline stage's queue: what waits in it, and what it shed.
type StageStats struct {
	Name   string
	Queued int
	Shed   uint64
}

// SinkStats is one output's delivery state.
type SinkStats struct {
	Name                       string
	Delivered, Failed, Dropped uint64
	SpoolEntries, SpoolBytes   int64
}

// Sources are read at scrape time, so the numbers are always current and nothing is counted twice.
type Sources struct {
	KernelEmitted, KernelDropped, Undecodable func() uint64
	KernelKillsFailed, KernelOverBudget       func() uint64
	KernelRepeated, KernelMissed              func() uint64
	KernelUntracked                           func() uint64
	Sinks                                     func() []SinkStats
	Stages                                    func() []StageStats
	EnrichHits, EnrichMisses, EnrichErrors    func() uint64
}

// Metrics holds the registry and the counters updated as findings flow.
type Metrics struct {
	reg        *prometheus.Registry
	events     *prometheus.CounterVec
	findings   *prometheus.CounterVec
	suppressed *prometheus.CounterVec
	backend    *prometheus.GaugeVec
	ready      atomic.Bool
}

// New builds the registry. version is the build's version string.
func New(version string, src Sources) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "escapewatch_events_total", Help: "Events from the kernel, by event name.",
		}, []string{"event"}),
		findings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "escapewatch_findings_total", Help: "Findings written, by rule and by what the kernel side did (alert, denied, killed).",
		}, []string{"rule", "action"}),
		suppressed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "escapewatch_findings_suppressed_total", Help: "Findings not written: matched an allow entry, or folded into an aggregate.",
		}, []string{"rule", "reason"}),
		backend: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "escapewatch_backend_info", Help: "The kernel hooks in use (value 1).",
		}, []string{"backend"}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "escapewatch_build_info", Help: "Build information (value 1).",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	build.Set(1)
	m.reg.MustRegister(m.events, m.findings, m.suppressed, m.backend, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&sourceCollector{src: src},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "escapewatch_ready", Help: "1 once every BPF program is attached.",
		}, func() float64 { return boolFloat(m.ready.Load()) }))
	return m
}

// Event counts one event from the kernel.
func (m *Metrics) Event(name string) { m.events.WithLabelValues(name).Inc() }

// Finding counts one finding written.
func (m *Metrics) Finding(rule, action string) { m.findings.WithLabelValues(rule, action).Inc() }

// Suppressed counts one finding not written, and why.
func (m *Metrics) Suppressed(rule, reason string) { m.suppressed.WithLabelValues(rule, reason).Inc() }

// Ready marks the sensor ready with its backend.
func (m *Metrics) Ready(backend string) {
	m.backend.WithLabelValues(backend).Set(1)
	m.ready.Store(true)
}

// Handler serves /metrics, /healthz and /readyz.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !m.ready.Load() {
			http.Error(w, "not ready: BPF programs not attached yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// Limits bound what the endpoint's clients can hold. The endpoint may be reachable by code the node does not
// trust (another pod, a container on the host network), so no client may keep a connection or a goroutine for
// long, and all of them together hold at most MaxConns descriptors.
type Limits struct {
	// ReadHeaderTimeout bounds the wait for a new connection's request headers; ReadTimeout the whole request.
	ReadHeaderTimeout, ReadTimeout time.Duration
	// WriteTimeout bounds the writing of an answer, so a client that stops reading frees its connection.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that sends no next request within it.
	IdleTimeout time.Duration
	// MaxConns is how many connections are served at once; more wait in the kernel's accept queue, unserved
	// and holding no descriptor of the sensor's, until a served one closes.
	MaxConns int
}

// DefaultLimits are the production limits. A scrape (Prometheus' default interval is 1m) or a probe takes one
// request of a few milliseconds, so 10 s to read a request, 30 s to write an answer, and 30 s of idleness are
// generous for them, and 32 connections are more than any scraper and prober together open. An idle
// keep-alive connection costs a goroutine and buffers (about 17 KiB): 32 of them are nothing, where 4,000
// unlimited ones took 70 MB.
var DefaultLimits = Limits{
	ReadHeaderTimeout: 5 * time.Second,
	ReadTimeout:       10 * time.Second,
	WriteTimeout:      30 * time.Second,
	IdleTimeout:       30 * time.Second,
	MaxConns:          32,
}

// Serve listens on addr with DefaultLimits (opened before it returns, so a taken port fails the start, not
// later) and returns the address it listens on and a function that stops the server.
func (m *Metrics) Serve(addr string, log *slog.Logger) (string, func() error, error) {
	return m.ServeLimited(addr, DefaultLimits, log)
}

// ServeLimited is Serve with the given limits; every field must be positive.
func (m *Metrics) ServeLimited(addr string, lim Limits, log *slog.Logger) (string, func() error, error) {
	if lim.ReadHeaderTimeout <= 0 || lim.ReadTimeout <= 0 || lim.WriteTimeout <= 0 || lim.IdleTimeout <= 0 || lim.MaxConns <= 0 {
		return "", nil, fmt.Errorf("metrics endpoint limits %+v: every timeout and MaxConns must be positive (start from DefaultLimits)", lim)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("metrics endpoint %s: %w (choose another --metrics-addr, or \"\" to turn it off)", addr, err)
	}
	srv := &http.Server{
		Handler:           m.Handler(),
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    8 << 10, // a scrape's headers are a few hundred bytes; the default is 1 MiB
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	done := make(chan error, 1)
	go func() {
		err := srv.Serve(newLimitListener(ln, lim.MaxConns))
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
	}()
	log.Info("metrics and health endpoints", "addr", ln.Addr().String(), "paths", "/metrics /healthz /readyz",
		"max_conns", lim.MaxConns, "idle_timeout", lim.IdleTimeout)
	stop := sync.OnceValue(func() error {
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdown); err != nil {
			srv.Close() // a connection still busy after 5 s: cut it, the process is stopping
		}
		return <-done
	})
	return ln.Addr().String(), stop, nil
}

// limitListener accepts a connection only while fewer than cap(slots) are open: beyond, Accept waits (the
// client waits in the kernel's accept queue) until a served connection closes. The server's timeouts bound how
// long that takes.
type limitListener struct {
	net.Listener
	slots     chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n), closed: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitedConn{Conn: c, release: sync.OnceFunc(func() { <-l.slots })}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// limitedConn gives its slot back once, however many times it is closed.
type limitedConn struct {
	net.Conn
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// sourceCollector turns the Sources into metrics at scrape time.
type sourceCollector struct{ src Sources }

var (
	kernelEmittedDesc = prometheus.NewDesc("escapewatch_kernel_records_total", "Records the kernel handed to user space.", nil, nil)
	kernelDroppedDesc = prometheus.NewDesc("escapewatch_kernel_records_dropped_total", "Records lost in the kernel because the ring buffer was full.", nil, nil)
	overBudgetDesc    = prometheus.NewDesc("escapewatch_kernel_records_over_budget_total", "Records not sent because their origin (a cgroup) exceeded its budget; each origin's losses are also an EW-1005 finding.", nil, nil)
	missedDesc        = prometheus.NewDesc("escapewatch_kernel_programs_missed_total", "Runs of the sensor's programs the kernel skipped at their hooks (a program already running on the CPU; kprobe misses from Linux 6.7): what they would have recorded is lost.", nil, nil)
	untrackedDesc     = prometheus.NewDesc("escapewatch_kernel_io_uring_untracked_total", "io_uring requests the tracepoint backend could not follow from submission to completion (kernels before 5.17: its table of requests in flight full): an open of release_agent among them that completes inline (through a bind mount of the file) may be missed.", nil, nil)
	repeatedDesc      = prometheus.NewDesc("escapewatch_kernel_records_repeated_total", "Records not sent because their origin exceeded its budget, that repeated the origin's last record sent (nothing new lost); counted in EW-1005 findings too.", nil, nil)
	killsFailedDesc   = prometheus.NewDesc("escapewatch_kernel_kills_failed_total", "--enforce kills the kernel refused to send (their findings say alert).", nil, nil)
	undecodableDesc   = prometheus.NewDesc("escapewatch_records_undecodable_total", "Kernel records that could not be decoded.", nil, nil)
	deliveredDesc     = prometheus.NewDesc("escapewatch_sink_delivered_total", "Findings delivered, by output.", []string{"sink"}, nil)
	failedDesc        = prometheus.NewDesc("escapewatch_sink_failures_total", "Failed delivery attempts (retried), by output.", []string{"sink"}, nil)
	droppedDesc       = prometheus.NewDesc("escapewatch_sink_dropped_total", "Findings an output lost (spool full, or refused for good), by output.", []string{"sink"}, nil)
	stageQueuedDesc   = prometheus.NewDesc("escapewatch_pipeline_queued", "Events waiting for a pipeline stage.", []string{"stage"}, nil)
	stageShedDesc     = prometheus.NewDesc("escapewatch_pipeline_shed_total", "Events a pipeline stage's queue shed (the least important first) because the sensor was not keeping up.", []string{"stage"}, nil)
	spoolEntriesDesc  = prometheus.NewDesc("escapewatch_spool_entries", "Findings waiting in an output's spool.", []string{"sink"}, nil)
	spoolBytesDesc    = prometheus.NewDesc("escapewatch_spool_bytes", "Bytes in an output's spool.", []string{"sink"}, nil)
	enrichDesc        = prometheus.NewDesc("escapewatch_enrichment_lookups_total", "Container runtime lookups, by result.", []string{"result"}, nil)
)

func (c *sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{kernelEmittedDesc, kernelDroppedDesc, overBudgetDesc, repeatedDesc, missedDesc, untrackedDesc, killsFailedDesc, undecodableDesc, deliveredDesc, failedDesc,
		droppedDesc, spoolEntriesDesc, spoolBytesDesc, enrichDesc, stageQueuedDesc, stageShedDesc} {
		ch <- d
	}
}

func (c *sourceCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, f func() uint64, labels ...string) {
		if f != nil {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(f()), labels...)
		}
	}
	counter(kernelEmittedDesc, c.src.KernelEmitted)
	counter(kernelDroppedDesc, c.src.KernelDropped)
	counter(overBudgetDesc, c.src.KernelOverBudget)
	counter(repeatedDesc, c.src.KernelRepeated)
	counter(missedDesc, c.src.KernelMissed)
	counter(untrackedDesc, c.src.KernelUntracked)
	counter(killsFailedDesc, c.src.KernelKillsFailed)
	counter(undecodableDesc, c.src.Undecodable)
	counter(enrichDesc, c.src.EnrichHits, "hit")
	counter(enrichDesc, c.src.EnrichMisses, "miss")
	counter(enrichDesc, c.src.EnrichErrors, "error")
	if c.src.Stages != nil {
		for _, s := range c.src.Stages() {
			ch <- prometheus.MustNewConstMetric(stageQueuedDesc, prometheus.GaugeValue, float64(s.Queued), s.Name)
			ch <- prometheus.MustNewConstMetric(stageShedDesc, prometheus.CounterValue, float64(s.Shed), s.Name)
		}
	}
	if c.src.Sinks == nil {
		return
	}
	for _, s := range c.src.Sinks() {
		ch <- prometheus.MustNewConstMetric(deliveredDesc, prometheus.CounterValue, float64(s.Delivered), s.Name)
		ch <- prometheus.MustNewConstMetric(failedDesc, prometheus.CounterValue, float64(s.Failed), s.Name)
		ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(s.Dropped), s.Name)
		ch <- prometheus.MustNewConstMetric(spoolEntriesDesc, prometheus.GaugeValue, float64(s.SpoolEntries), s.Name)
		ch <- prometheus.MustNewConstMetric(spoolBytesDesc, prometheus.GaugeValue, float64(s.SpoolBytes), s.Name)
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
