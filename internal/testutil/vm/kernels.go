package vm

// The kernels the project downloads, pinned: a package name, its exact version and the SHA-256 of its .deb. A
// point release of Debian never changes what is tested or generated; moving to another kernel is a deliberate
// commit that edits a row here (then regenerates with scripts/generate.sh when HeaderKernel changes).
//
// They come from bookworm's main suite, which no longer takes point releases (Debian 12 is in LTS), so they stay
// downloadable; bookworm-security replaces its kernels every few weeks and drops the old ones.

// Debian61 is Debian 12's kernel: the matrix's first kernel, and the source of bpf/vmlinux.h.
var Debian61 = Kernel{
	Name:    "debian-6.1",
	Package: "linux-image-6.1.0-50-cloud-amd64-unsigned",
	Version: "6.1.176-1",
	SHA256:  "4f217f710203cdfedde21f836bc66a0a4d773752d7fe8e5e13f701f891788945",
}

// HeaderKernel is the kernel whose BTF bpf/vmlinux.h is generated from. CO-RE relocates the objects built with
// it to every kernel the sensor runs on; fields that newer kernels added or renamed are read through local
// "___flavor" structs in bpf/.
var HeaderKernel = Debian61

// Kernels lists every pinned kernel, by name.
var Kernels = []Kernel{Debian61}

// KernelByName returns the pinned kernel called name.
func KernelByName(name string) (Kernel, bool) {
	for _, k := range Kernels {
		if k.Name == name {
			return k, true
		}
	}
	return Kernel{}, false
}
