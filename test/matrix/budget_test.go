package matrix

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"escapewatch/internal/testutil/vm"
)

// costBudgetFile says what escapewatch may add to unrelated work, per kernel, backend and operation (its header
// says how to read it).
const costBudgetFile = "../cost-budget.txt"

// costOps are the operations of the cost benchmarks (internal/sensor), by the unit of their figures, with the
// benchmark that measures each.
var costOps = map[string]string{
	"open":  "BenchmarkUnrelatedOpenClose",
	"write": "BenchmarkUnrelatedWrite",
	"read":  "BenchmarkUnrelatedRead",
	"exec":  "BenchmarkUnrelatedExec",
	"tree":  "BenchmarkMixed",
}

// costLimit is one line of the budget: the most escapewatch may add to op on kernel with backend, in percent of
// the floor (an empty program on the hook the backend sees opens through) and of the cost with no program at
// all. NaN: no limit.
type costLimit struct {
	kernel, backend, op string
	filter, total       float64
}

// loadCostBudget reads a budget file: lines of "KERNEL BACKEND OPERATION FILTER-% TOTAL-%", "-" for no limit,
// "#" to the end of a line a comment.
func loadCostBudget(path string) ([]costLimit, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var limits []costLimit
	lines := bufio.NewScanner(f)
	for n := 1; lines.Scan(); n++ {
		line, _, _ := strings.Cut(lines.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 5 {
			return nil, fmt.Errorf("%s:%d: %d fields, want 5: KERNEL BACKEND OPERATION FILTER-%% TOTAL-%%", path, n, len(fields))
		}
		l := costLimit{kernel: fields[0], backend: fields[1], op: fields[2]}
		if _, ok := costOps[l.op]; !ok {
			return nil, fmt.Errorf("%s:%d: no operation %q (want one of %s)", path, n, l.op, strings.Join(sortedKeys(costOps), ", "))
		}
		for i, p := range []*float64{&l.filter, &l.total} {
			if *p, err = percent(fields[3+i]); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", path, n, err)
			}
		}
		limits = append(limits, l)
	}
	return limits, lines.Err()
}

func percent(s string) (float64, error) {
	if s == "-" {
		return math.NaN(), nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("a limit in percent, or - for none: %w", err)
	}
	return v, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// costFigure is what the cost benchmarks measured for one operation: its cost per operation with no program,
// with an empty program and with escapewatch, and the percentages between them (median over the runs).
type costFigure struct {
	detached, noop, attached float64
	filter, total            float64 // escapewatch above the floor, above no program, in %
}

// costFigures reads the cost benchmarks' result lines ("BenchmarkX-N <tab> iterations <tab> value unit ...") into
// the figures of each operation.
func costFigures(lines []string) (map[string]costFigure, error) {
	runs := map[string][]map[string]float64{}
	for _, line := range lines {
		fields := strings.Fields(line)
		if len(fields) < 4 || len(fields)%2 != 0 {
			return nil, fmt.Errorf("not a benchmark result: %q", line)
		}
		metrics := map[string]float64{}
		op := ""
		for i := 2; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				return nil, fmt.Errorf("%q: %w", line, err)
			}
			unit := fields[i+1]
			if kind, o, ok := strings.Cut(unit, "-ns/"); ok {
				unit, op = kind, o
			}
			metrics[unit] = v
		}
		if op == "" {
			return nil, fmt.Errorf("no per-operation figure in %q", line)
		}
		runs[op] = append(runs[op], metrics)
	}
	figs := map[string]costFigure{}
	for op, ms := range runs {
		median := func(unit string) float64 {
			var vs []float64
			for _, m := range ms {
				vs = append(vs, m[unit])
			}
			slices.Sort(vs)
			return vs[len(vs)/2]
		}
		figs[op] = costFigure{detached: median("detached"), noop: median("noop"), attached: median("attached"),
			filter: median("filter-%"), total: median("overhead-%")}
	}
	return figs, nil
}

// overBudget returns, for each limit of the kernel and backend, what goes over it, with the figure and the budget
// side by side; a limit whose operation has no figure is an error too.
func overBudget(limits []costLimit, kernel, backend string, figs map[string]costFigure) []string {
	var over []string
	for _, l := range limits {
		if l.kernel != kernel || l.backend != backend {
			continue
		}
		f, ok := figs[l.op]
		if !ok {
			over = append(over, fmt.Sprintf("%s: not measured (budget %s)", l.op, costBudgetFile))
			continue
		}
		if f.filter > l.filter {
			over = append(over, fmt.Sprintf("%s: escapewatch adds %+.2f %% above the floor, budget %.2f %%", l.op, f.filter, l.filter))
		}
		if f.total > l.total {
			over = append(over, fmt.Sprintf("%s: escapewatch adds %+.2f %% in all, budget %.2f %%", l.op, f.total, l.total))
		}
	}
	return over
}

// budgetCells are the kernel/backend pairs of the limits, in the file's order, each once.
func budgetCells(limits []costLimit) [][2]string {
	var cells [][2]string
	for _, l := range limits {
		if c := [2]string{l.kernel, l.backend}; !slices.Contains(cells, c) {
			cells = append(cells, c)
		}
	}
	return cells
}

// benchPattern is the -test.bench pattern of the benchmarks that measure ops.
func benchPattern(limits []costLimit, kernel, backend string) string {
	var names []string
	for _, l := range limits {
		if l.kernel == kernel && l.backend == backend && !slices.Contains(names, costOps[l.op]) {
			names = append(names, costOps[l.op])
		}
	}
	return "^(" + strings.Join(names, "|") + ")$"
}

// TestCostBudgetFile: the committed budget loads, and each of its cells is a kernel and backend the matrix runs.
func TestCostBudgetFile(t *testing.T) {
	limits, err := loadCostBudget(costBudgetFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(limits) == 0 {
		t.Fatal("an empty budget")
	}
	for _, c := range budgetCells(limits) {
		if !slices.ContainsFunc(kernels, func(k vm.Kernel) bool { return k.Name == c[0] }) {
			t.Errorf("%s: no kernel %s in the matrix", costBudgetFile, c[0])
		}
		if !slices.Contains(backends, c[1]) {
			t.Errorf("%s: no backend %s", costBudgetFile, c[1])
		}
		if _, refused := refusals[c[0]+"/"+c[1]]; refused {
			t.Errorf("%s: %s/%s refuses to run", costBudgetFile, c[0], c[1])
		}
	}
}

func TestLoadCostBudgetErrors(t *testing.T) {
	for _, tt := range []struct{ text, want string }{
		{"debian-6.1 lsm open 0.5\n", "4 fields, want 5"},
		{"debian-6.1 lsm opens 0.5 1\n", `no operation "opens"`},
		{"# comment\ndebian-6.1 lsm open half 1\n", ":2: a limit in percent"},
	} {
		path := filepath.Join(t.TempDir(), "budget")
		if err := os.WriteFile(path, []byte(tt.text), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := loadCostBudget(path); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want one saying %q", tt.text, err, tt.want)
		}
	}
}

// TestOverBudget: figures read from benchmark lines (the median of the runs) are held against their limits; "-"
// is no limit, and a limit with no figure is over budget.
func TestOverBudget(t *testing.T) {
	lines := []string{
		"BenchmarkUnrelatedOpenClose-2\t3\t10649 attached-ns/open\t10396 detached-ns/open\t0.90 filter-%\t1.52 mechanism-%\t10556 noop-ns/open\t2.43 overhead-%",
		"BenchmarkUnrelatedOpenClose-2\t3\t10651 attached-ns/open\t10398 detached-ns/open\t0.80 filter-%\t1.60 mechanism-%\t10561 noop-ns/open\t2.40 overhead-%",
		"BenchmarkUnrelatedOpenClose-2\t3\t10644 attached-ns/open\t10394 detached-ns/open\t0.98 filter-%\t1.44 mechanism-%\t10545 noop-ns/open\t2.44 overhead-%",
		"BenchmarkUnrelatedWrite-2\t3\t2289 attached-ns/write\t1729 detached-ns/write\t24.57 filter-%\t6.24 mechanism-%\t1837 noop-ns/write\t32.35 overhead-%",
	}
	figs, err := costFigures(lines)
	if err != nil {
		t.Fatal(err)
	}
	if f := figs["open"]; f.filter != 0.90 || f.total != 2.43 || f.attached != 10649 {
		t.Errorf("open: %+v, want the medians (filter 0.90, total 2.43, attached 10649)", f)
	}
	for _, tt := range []struct {
		limits []costLimit
		want   []string
	}{
		{[]costLimit{{"k", "b", "open", 1, 3}, {"k", "b", "write", 25, math.NaN()}}, nil},
		{[]costLimit{{"k", "b", "open", 0.5, math.NaN()}}, []string{"open: escapewatch adds +0.90 % above the floor, budget 0.50 %"}},
		{[]costLimit{{"k", "b", "write", math.NaN(), 2}}, []string{"write: escapewatch adds +32.35 % in all, budget 2.00 %"}},
		{[]costLimit{{"k", "b", "read", 1, 1}}, []string{"read: not measured (budget ../cost-budget.txt)"}},
		{[]costLimit{{"other", "b", "read", 1, 1}}, nil},
	} {
		if got := overBudget(tt.limits, "k", "b", figs); !slices.Equal(got, tt.want) {
			t.Errorf("%+v: %q, want %q", tt.limits, got, tt.want)
		}
	}
	if _, err := costFigures([]string{"BenchmarkX-2\t3\t12 ns/op"}); err == nil {
		t.Error("a line with no per-operation figure: no error")
	}
}
