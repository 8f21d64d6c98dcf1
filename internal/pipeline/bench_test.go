package pipeline

import (
	"context"
	"io"
	"testing"
	"time"

	"escapewatch/internal/event"
	"escapewatch/internal/metrics"
	"escapewatch/internal/output"
	"escapewatch/internal/rule"
)

// BenchmarkPipeline measures the events a second the stages sustain without losing one: the reader's hand-off,
// enrichment (no runtime), the default rules, no aggregation (every finding written, the worst case) and the
// output's JSON encoding. The events go in batches the queues hold, each waiting for the rules to finish the one
// before, and the output's queue holds every finding, so nothing is shed (the benchmark fails if anything is):
// the figure is the throughput, from the first event to the last finding written. Compare with the kernel's
// worst case: 1,024 origins at 100 records a second each (bpf/emit.h).
func BenchmarkPipeline(b *testing.B) {
	tests := []struct {
		name string
		ev   func(i int) *event.Event
	}{
		{"every event a finding", func(i int) *event.Event { return open(1000+i%64, agent) }},
		{"no finding", func(i int) *event.Event { return open(1000+i%64, "/tmp/cgrp/notify_on_release") }},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			eng, err := rule.NewEngine(rule.Default(), rule.ScopeAll)
			if err != nil {
				b.Fatal(err)
			}
			std, err := output.NewStdout(io.Discard, output.FormatJSON, false) // never makes the stages wait
			if err != nil {
				b.Fatal(err)
			}
			out, err := output.NewDispatcher(output.Options{Direct: []output.Sink{std}, QueueLen: b.N + 1})
			if err != nil {
				b.Fatal(err)
			}
			p := New(Options{Engine: eng, Out: out, Metrics: metrics.New("bench", metrics.Sources{})})
			const batch = DefaultRuleQueue / 2 // with the barrier behind it, well within the queue before the rules
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				p.Event(tt.ev(i))
				if i%batch == batch-1 {
					p.control(control{})
				}
			}
			p.Close()
			out.Close(context.Background())
			elapsed := time.Since(start)
			b.StopTimer()
			for _, st := range p.Stats() {
				if st.Shed != 0 {
					b.Fatalf("stage %s shed %d events", st.Stage, st.Shed)
				}
			}
			for _, st := range out.Stats() {
				if st.Dropped != 0 {
					b.Fatalf("output %s dropped %d findings", st.Name, st.Dropped)
				}
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
		})
	}
}
