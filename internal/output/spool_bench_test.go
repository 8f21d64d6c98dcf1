package output

import (
	"fmt"
	"testing"
	"time"

	"escapewatch/internal/finding"
)

// BenchmarkSpoolCommit measures what a finding costs to spool durably, by the number of findings a commit
// groups. A commit of 1 is what the spool did per finding before group commit (the same writes: a file, its
// fsync, a rename, the directory's fsync); a commit of a burst's findings pays them once. Each iteration makes
// one commit of each size, in rotating order, so that the ratios come from one interleaved run on a disk whose
// fsync latency drifts: ns/finding-N is the cost per finding in commits of N, speedup-N the ratio of a commit
// of 1's to it. It runs in the system's temporary directory, which must be a file system whose fsync reaches
// the disk (on tmpfs every size looks free).
func BenchmarkSpoolCommit(b *testing.B) {
	f := sampleFinding()
	line, err := jsonLine(f)
	if err != nil {
		b.Fatal(err)
	}
	sp, err := OpenSpool(b.TempDir(), SpoolOptions{MaxBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	sizes := []int{1, 16, 64, 256}
	batches := make([][]Record, len(sizes))
	for i, n := range sizes {
		batches[i] = make([]Record, n)
		for j := range n {
			batches[i][j] = Record{Line: line, Rank: finding.RankOf(&f), Rule: f.SigMetadata.ID}
		}
	}
	spent := make([]time.Duration, len(sizes))
	for it := 0; b.Loop(); it++ {
		for k := range sizes {
			i := (it + k) % len(sizes)
			start := time.Now()
			if shed, err := sp.Commit(batches[i]); err != nil || len(shed) > 0 {
				b.Fatalf("commit: %v, %d shed", err, len(shed))
			}
			spent[i] += time.Since(start)
		}
	}
	perFinding := func(i int) float64 { return float64(spent[i].Nanoseconds()) / float64(b.N*sizes[i]) }
	for i, n := range sizes {
		b.ReportMetric(perFinding(i), fmt.Sprintf("ns/finding-%d", n))
		if n > 1 {
			b.ReportMetric(perFinding(0)/perFinding(i), fmt.Sprintf("speedup-%d", n))
		}
	}
	b.ReportMetric(0, "ns/op") // an iteration is four commits of different sizes: its time means nothing alone
}
