package vm

// The kernels the project downloads, pinned: a suite, a package name, its exact version and the SHA-256 of its
// .deb. A point release of Debian never changes what is tested or generated; moving to another kernel is a
// deliberate commit that edits a row here (then regenerates with scripts/generate.sh when a HeaderKernels row changes).
//
// Each comes from its suite's main component, fetched with apt indexes of its own (FetchKernel). Bookworm (12)
// and bullseye (11) are in LTS: main no longer takes point releases, so their pins stay downloadable. Trixie (13)
// is stable: a point release (every two months or so) may drop the pinned 6.12 build from main; FetchKernel then
// says so, and the fix is a new pin here. snapshot.debian.org, which keeps every build, is not reachable from CI.

// Debian510 is Debian 11's kernel: the oldest LTS kernel the matrix runs.
var Debian510 = Kernel{
	Name:    "debian-5.10",
	Suite:   "bullseye",
	Package: "linux-image-5.10.0-32-cloud-amd64-unsigned",
	Version: "5.10.223-1",
	SHA256:  "b1fb8d34c26105a2ba1271a3df868a9eea460657df98c77fd08822ef4908c9db",
}

// Debian61 is Debian 12's kernel: the matrix's first kernel, and the source of bpf/vmlinux.h.
var Debian61 = Kernel{
	Name:    "debian-6.1",
	Suite:   "bookworm",
	Package: "linux-image-6.1.0-50-cloud-amd64-unsigned",
	Version: "6.1.176-1",
	SHA256:  "4f217f710203cdfedde21f836bc66a0a4d773752d7fe8e5e13f701f891788945",
}

// Debian612 is Debian 13's kernel.
var Debian612 = Kernel{
	Name:    "debian-6.12",
	Suite:   "trixie",
	Package: "linux-image-6.12.117+deb13-cloud-amd64-unsigned",
	Version: "6.12.117-1",
	SHA256:  "4113a615a1f1535ed4356ca03d428c74536b00f6ccb58e049a2ffd6a1cb3f1ad",
}

// Debian61Arm64 is Debian 12's kernel for arm64, booted on qemu's virt board, and the source of
// bpf/arm64/vmlinux.h.
var Debian61Arm64 = Kernel{
	Name:    "debian-6.1-arm64",
	Suite:   "bookworm",
	Arch:    "arm64",
	Package: "linux-image-6.1.0-50-cloud-arm64-unsigned",
	Version: "6.1.176-1",
	SHA256:  "6b585efd7121493f37f0e6eecda9c94f2035c6bc1eaa97ab447871a682f93cf3",
}

// Debian612Arm64 is Debian 13's kernel for arm64: the first pinned arm64 kernel with ftrace direct calls, which
// BPF trampolines (lsm, fentry) need there.
var Debian612Arm64 = Kernel{
	Name:    "debian-6.12-arm64",
	Suite:   "trixie",
	Arch:    "arm64",
	Package: "linux-image-6.12.117+deb13-cloud-arm64-unsigned",
	Version: "6.12.117-1",
	SHA256:  "e0261b7e2ab499379b8b2c384fc28d9a51f762f40d071c8ed51e05e6e83ba879",
}

// HeaderKernels are the kernels, by GOARCH, whose BTF bpf/<arch>/vmlinux.h is generated from. CO-RE relocates
// the objects built with them to every kernel the sensor runs on; fields that newer kernels added or renamed are
// read through local "___flavor" structs in bpf/.
var HeaderKernels = map[string]Kernel{"amd64": Debian61, "arm64": Debian61Arm64}

// Kernels lists every pinned kernel, by name.
var Kernels = []Kernel{Debian510, Debian61, Debian612, Debian61Arm64, Debian612Arm64}

// KernelByName returns the pinned kernel called name, in the matrix or not.
func KernelByName(name string) (Kernel, bool) {
	for _, k := range Kernels {
		if k.Name == name {
			return k, true
		}
	}
	return Kernel{}, false
}
