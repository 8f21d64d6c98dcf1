// Command fetchkernel downloads a pinned kernel (internal/testutil/vm/kernels.go) into the kernel cache and
// prints the path of its image. scripts/generate.sh uses it to find the kernel that bpf/vmlinux.h is made from.
//
//	go run ./internal/testutil/vm/fetchkernel [-header | NAME]
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
	header := flag.Bool("header", false, "the kernel bpf/vmlinux.h is generated from")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: fetchkernel -header | NAME")
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
	case header && len(args) == 0:
		return vm.HeaderKernel, nil
	case !header && len(args) == 1:
		if k, ok := vm.KernelByName(args[0]); ok {
			return k, nil
		}
		return vm.Kernel{}, fmt.Errorf("no pinned kernel is called %q (see internal/testutil/vm/kernels.go)", args[0])
	}
	return vm.Kernel{}, fmt.Errorf("give -header or one kernel name")
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
