package sensor

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// helperSince names the kernel release that added the BPF helpers whose absence is known to refuse a backend,
// for the error only: whether a helper is there is always probed, never inferred from the version.
var helperSince = map[asm.BuiltinFunc]string{
	asm.FnLoop:              "5.17",
	asm.FnTaskPtRegs:        "5.15",
	asm.FnGetCurrentTaskBtf: "5.11",
	asm.FnRingbufQuery:      "5.8",
	asm.FnRingbufOutput:     "5.8",
	asm.FnKtimeGetBootNs:    "5.8",
}

// missingHelpers lists the BPF helpers spec's programs call that the running kernel does not have, as the
// kernel's verifier says of a program calling each one alone.
func missingHelpers(spec *ebpf.CollectionSpec) ([]asm.BuiltinFunc, error) {
	var calls []asm.BuiltinFunc
	for _, prog := range spec.Programs {
		for _, ins := range prog.Instructions {
			if ins.IsBuiltinCall() {
				calls = append(calls, asm.BuiltinFunc(ins.Constant))
			}
		}
	}
	slices.Sort(calls)
	var missing []asm.BuiltinFunc
	for _, fn := range slices.Compact(calls) {
		known, err := kernelKnowsHelper(fn)
		if err != nil {
			return nil, fmt.Errorf("probe the kernel for BPF helper %s: %w", helperName(fn), err)
		}
		if !known {
			missing = append(missing, fn)
		}
	}
	return missing, nil
}

// kernelKnowsHelper loads a raw tracepoint program (a type every kernel with BPF events loads, and that may call
// every tracing helper) calling fn alone, and reads the verifier's answer: only an "invalid func" or "unknown
// func" naming fn means the kernel lacks it. Any other refusal (the call's arguments are not set up, or the
// helper is for other program types) leaves the decision to the load. (cilium/ebpf's features.HaveProgramHelper
// does not probe tracing programs, and its cached answer does not tell these cases apart.)
func kernelKnowsHelper(fn asm.BuiltinFunc) (bool, error) {
	prog, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{
		Type:         ebpf.RawTracepoint,
		Instructions: asm.Instructions{fn.Call(), asm.LoadImm(asm.R0, 0, asm.DWord), asm.Return()},
		License:      "GPL",
	}, ebpf.ProgramOptions{LogLevel: ebpf.LogLevelInstruction})
	if err == nil {
		prog.Close()
		return true, nil
	}
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) {
		return false, err
	}
	tag := fmt.Sprintf("#%d", fn)
	for _, line := range ve.Log {
		if strings.Contains(line, tag) && (strings.Contains(line, "invalid func") || strings.Contains(line, "unknown func")) {
			return false, nil
		}
	}
	return true, nil
}

// helpersMissingError says which helpers the kernel lacks, with the release that added each (when known), and
// so how to get them.
type helpersMissingError struct{ missing []asm.BuiltinFunc }

func missingHelpersError(missing []asm.BuiltinFunc) error { return &helpersMissingError{missing} }

func (*helpersMissingError) namesFix() {}

func (e *helpersMissingError) Error() string {
	names := make([]string, len(e.missing))
	newest := ""
	for i, fn := range e.missing {
		names[i] = helperName(fn)
		if v, ok := helperSince[fn]; ok {
			names[i] += " (Linux " + v + ")"
			if newest == "" || versionLess(newest, v) {
				newest = v
			}
		}
	}
	fix := "a newer kernel"
	if newest != "" {
		fix = "Linux " + newest + " or later"
	}
	return fmt.Sprintf("the kernel lacks the BPF helper(s) %s that the programs call: run on %s", strings.Join(names, ", "), fix)
}

// versionLess compares release numbers like "5.8" and "5.17".
func versionLess(a, b string) bool {
	var amaj, amin, bmaj, bmin int
	fmt.Sscanf(a, "%d.%d", &amaj, &amin)
	fmt.Sscanf(b, "%d.%d", &bmaj, &bmin)
	return amaj < bmaj || (amaj == bmaj && amin < bmin)
}

// helperName is a helper's name in the kernel's terms: asm.FnTaskPtRegs is bpf_task_pt_regs.
func helperName(fn asm.BuiltinFunc) string {
	name, ok := strings.CutPrefix(fn.String(), "Fn")
	if !ok {
		return fn.String()
	}
	var b strings.Builder
	b.WriteString("bpf")
	for _, r := range name {
		if unicode.IsUpper(r) {
			b.WriteByte('_')
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// fixNamed is an error about a missing kernel feature that names the feature and the fix itself: Open adds no
// generic advice about the backend to it, which could point elsewhere (at CONFIG_BPF_LSM, when the bpf LSM is on).
type fixNamed interface {
	error
	namesFix()
}

// trampolinesUnsupportedError: the kernel loaded a trampoline program (fentry, fexit, fmod_ret, BPF LSM) but
// cannot attach it to a kernel function (ENOTSUPP from the attach itself, the probe). arm64 before Linux 6.4
// is such a kernel: its trampolines attach only to BPF programs, as it has no ftrace direct calls.
type trampolinesUnsupportedError struct{ err error }

func (e *trampolinesUnsupportedError) Error() string {
	return fmt.Sprintf("the kernel cannot attach BPF trampolines to kernel functions (%v): the lsm and fentry backends "+
		"need them, that is CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS=y (on arm64, Linux 6.4 or later); "+
		"use --backend kprobe or tracepoint (auto does), or a newer kernel", e.err)
}

func (e *trampolinesUnsupportedError) Unwrap() error { return e.err }

func (*trampolinesUnsupportedError) namesFix() {}

// isTrampoline says whether the programs at attach point run on a BPF trampoline.
func isTrampoline(point string) bool {
	for _, prefix := range []string{"lsm/", "fentry/", "fexit/", "fmod_ret/"} {
		if strings.HasPrefix(point, prefix) {
			return true
		}
	}
	return false
}
