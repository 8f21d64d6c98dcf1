// Command kernelbtf writes the raw BTF of an uncompressed kernel image (an arm64 Image, as Debian ships it) to
// stdout, for bpftool to dump as a vmlinux.h. The image has no ELF sections to name .BTF, so the blob is found
// by its header: the first one at least minSize long whose whole length parses as BTF.
//
//	go run ./internal/testutil/vm/kernelbtf IMAGE > vmlinux.btf
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf/btf"
)

// A kernel's BTF is megabytes; the header magic occurs by chance elsewhere in the image, in small blobs of
// other formats, and in code.
const minSize = 1 << 20

// btfMagic, version 1 and flags 0, little-endian: the start of a BTF header (include/uapi/linux/btf.h).
var btfMagic = []byte{0x9f, 0xeb, 0x01, 0x00}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: kernelbtf IMAGE > vmlinux.btf")
		os.Exit(2)
	}
	image, err := os.ReadFile(os.Args[1])
	if err == nil {
		var blob []byte
		if blob, err = findBTF(image); err == nil {
			_, err = os.Stdout.Write(blob)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kernelbtf:", err)
		os.Exit(1)
	}
}

// findBTF returns the kernel's BTF blob in image.
func findBTF(image []byte) ([]byte, error) {
	for off := 0; ; off++ {
		i := bytes.Index(image[off:], btfMagic)
		if i < 0 {
			return nil, errors.New("no BTF of a kernel in the image: is it uncompressed, and built with CONFIG_DEBUG_INFO_BTF=y?")
		}
		off += i
		blob, ok := btfAt(image[off:])
		if !ok {
			continue
		}
		if _, err := btf.LoadSpecFromReader(bytes.NewReader(blob)); err != nil {
			continue // a chance match of the header
		}
		return blob, nil
	}
}

// btfAt returns the BTF blob that the header at the start of b describes, if it is a plausible kernel's.
func btfAt(b []byte) ([]byte, bool) {
	const headerLen = 24 // magic, version, flags (4 bytes), then hdr_len, type_off, type_len, str_off, str_len
	if len(b) < headerLen {
		return nil, false
	}
	le := binary.LittleEndian
	hdrLen, typeOff, typeLen, strOff, strLen := le.Uint32(b[4:]), le.Uint32(b[8:]), le.Uint32(b[12:]), le.Uint32(b[16:]), le.Uint32(b[20:])
	if hdrLen != headerLen || typeOff != 0 || strOff != typeLen {
		return nil, false
	}
	size := uint64(hdrLen) + uint64(strOff) + uint64(strLen)
	if size < minSize || size > uint64(len(b)) {
		return nil, false
	}
	return b[:size], true
}
