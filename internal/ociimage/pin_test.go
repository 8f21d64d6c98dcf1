package ociimage

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// syntheticELF writes a minimal static ELF executable header for machine: it parses as ELF, has no program
// interpreter and no Go build information, so an image of it depends on nothing but ociimage's code (a real
// binary changes with the toolchain and the commit it is built from).
func syntheticELF(t *testing.T, machine elf.Machine) string {
	t.Helper()
	h := make([]byte, 64)
	copy(h, elf.ELFMAG)
	h[elf.EI_CLASS], h[elf.EI_DATA], h[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	binary.LittleEndian.PutUint16(h[16:], uint16(elf.ET_EXEC))
	binary.LittleEndian.PutUint16(h[18:], uint16(machine))
	binary.LittleEndian.PutUint32(h[20:], uint32(elf.EV_CURRENT))
	binary.LittleEndian.PutUint16(h[52:], 64) // e_ehsize
	p := filepath.Join(t.TempDir(), "escapewatch-"+machine.String())
	if err := os.WriteFile(p, h, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSingleImagePinned pins the single-binary image: its digest and the docker-archive's bytes. A change here
// changes what every release pushes, so it must be deliberate. (The digest also depends on compress/gzip's
// output, which has not changed since Go 1.7.)
func TestSingleImagePinned(t *testing.T) {
	const (
		wantDigest  = "sha256:5ba429eedc9acbc778436d98e3c8263298201aca4dbcec3d3869c4b406e0ce93"
		wantTarball = "a25bb3a82435fb52e57adf60f582c511b988c741cbaf9154e89e172f8df12e80"
	)
	img, err := Build(syntheticELF(t, elf.EM_X86_64), Options{Version: "v1.2.0", Created: time.Unix(1790000000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "escapewatch.tar")
	if err := WriteTarball(img, out, "ghcr.io/escapewatch/escapewatch:v1.2.0"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if d.String() != wantDigest {
		t.Errorf("image digest %s, want %s", d, wantDigest)
	}
	if got := hex.EncodeToString(sum[:]); got != wantTarball {
		t.Errorf("docker-archive sha256 %s, want %s", got, wantTarball)
	}
}
