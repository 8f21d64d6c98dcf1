// Command fetchkernel downloads a pinned kernel (internal/testutil/vm/kernels.go) into the kernel cache and
// prints the path of its image. scripts/generate.sh uses it to find the kernels that bpf/<arch>/vmlinux.h are
// made from.
//
//	go run ./internal/testutil/vm/fetchkernel [-header GOARCH | NAME]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"escapewatch/internal/testutil/vm"
)

func main() {
	header := flag.Bool("header", false, "the kernel bpf/<arch>/vmlinux.h is generated from, for the GOARCH given")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: fetchkernel -header GOARCH | NAME")
		flag.PrintDefaults()
	}
	flag.Parse()
	k, err := pick(*header, flag.Args())
	if err == nil {
		err = fetch(k)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fetchkernel:", err)
		os.Exit(1)
	}
}

func pick(header bool, args []string) (vm.Kernel, error) {
	switch {
	case header && len(args) == 1:
		if k, ok := vm.HeaderKernels[args[0]]; ok {
			return k, nil
		}
		return vm.Kernel{}, fmt.Errorf("no header kernel for GOARCH %q (see HeaderKernels in internal/testutil/vm/kernels.go)", args[0])
	case !header && len(args) == 1:
		if k, ok := vm.KernelByName(args[0]); ok {
			return k, nil
		}
		return vm.Kernel{}, fmt.Errorf("no pinned kernel is called %q (see internal/testutil/vm/kernels.go)", args[0])
	}
	return vm.Kernel{}, fmt.Errorf("give -header and a GOARCH (amd64, arm64), or one kernel name")
}

func fetch(k vm.Kernel) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	cache, err := vm.DefaultCacheDir()
	if err != nil {
		return err
	}
	image, err := vm.FetchKernel(ctx, k, cache)
	if err != nil {
		return err
	}
	fmt.Println(image)
	return nil
}
