package ociimage

import (
	"bytes"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

var goarchMachine = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// TestIndexRoundTrip builds the multi-platform archive of the real sensor for amd64 and arm64, reads it back as
// skopeo or ctr would (untarred, as an OCI layout), checks each platform's image holds that platform's binary
// and runs the one of this machine's architecture.
func TestIndexRoundTrip(t *testing.T) {
	bins := map[string]string{}
	for arch := range goarchMachine {
		bins[arch] = staticBinaryFor(t, "escapewatch/cmd/escapewatch", arch)
	}
	created := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	idx, err := BuildIndex([]string{bins["arm64"], bins["amd64"]}, Options{Version: "v0.0.0-test", Created: created})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "escapewatch.tar")
	if err := WriteOCIArchive(idx, out, testTag); err != nil {
		t.Fatal(err)
	}
	wantDigest, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	names, err := untar(out, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSorted(names) || !slices.Contains(names, "oci-layout") || !slices.Contains(names, "index.json") {
		t.Errorf("archive entries %q: want them sorted, with oci-layout and index.json", names)
	}
	inner := readIndex(t, dir, testTag, wantDigest)

	im, err := inner.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex {
		t.Errorf("index media type %q, want %q", im.MediaType, types.OCIImageIndex)
	}
	var platforms []string
	for _, desc := range im.Manifests {
		if desc.Platform == nil {
			t.Fatalf("manifest %s has no platform in the index", desc.Digest)
		}
		arch := desc.Platform.Architecture
		platforms = append(platforms, strings.TrimSuffix(desc.Platform.OS+"/"+arch+"/"+desc.Platform.Variant, "/"))
		t.Run(arch, func(t *testing.T) {
			if desc.MediaType != types.OCIManifestSchema1 || desc.ArtifactType != "" {
				t.Errorf("descriptor media type %q, artifact type %q; want %q and none", desc.MediaType, desc.ArtifactType, types.OCIManifestSchema1)
			}
			img, err := inner.Image(desc.Digest)
			if err != nil {
				t.Fatal(err)
			}
			checkPlatformImage(t, img, arch, bins[arch], created)
		})
	}
	if want := []string{"linux/amd64", "linux/arm64/v8"}; !slices.Equal(platforms, want) {
		t.Errorf("index platforms %q, want %q", platforms, want)
	}
}

// checkPlatformImage checks one image of the index: OCI media types, its config's platform and its layer's
// binary, which must be bin for arch; the binary of this machine's architecture is run.
func checkPlatformImage(t *testing.T, img v1.Image, arch, bin string, created time.Time) {
	t.Helper()
	if mt, err := img.MediaType(); err != nil || mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %q (err %v), want %q", mt, err, types.OCIManifestSchema1)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.MediaType != types.OCIConfigJSON || len(m.Layers) != 1 || m.Layers[0].MediaType != types.OCILayer {
		t.Errorf("config %q, layers %+v: want an OCI config and one OCI gzip layer", m.Config.MediaType, m.Layers)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cf.OS+"/"+cf.Architecture+"/"+cf.Variant, "linux/"+arch+"/"+variant(arch); got != want {
		t.Errorf("config platform %s, want %s", got, want)
	}
	if got := cf.Config.Labels["org.opencontainers.image.version"]; got != "v0.0.0-test" {
		t.Errorf("version label %q, want v0.0.0-test", got)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if _, err := unpack(layers[0], root, created); err != nil {
		t.Fatal(err)
	}
	got := filepath.Join(root, "usr/local/bin/escapewatch")
	f, err := elf.Open(got)
	if err != nil {
		t.Fatal(err)
	}
	machine := f.Machine
	f.Close()
	if machine != goarchMachine[arch] {
		t.Errorf("the linux/%s image's binary is built for %v, want %v", arch, machine, goarchMachine[arch])
	}
	gotBytes, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	wantBytes, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotBytes, wantBytes) {
		t.Errorf("the linux/%s image's binary (%d bytes) differs from %s (%d bytes)", arch, len(gotBytes), bin, len(wantBytes))
	}
	if arch == runtime.GOARCH {
		out, err := exec.Command(got, "version").CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "escapewatch ") {
			t.Errorf("unpacked escapewatch version: %q, err %v; want output starting with \"escapewatch \"", out, err)
		}
	}
}

// readIndex opens the OCI layout at dir and returns the one index its index.json lists, checking that this
// descriptor carries tag and that index's digest is wantDigest.
func readIndex(t *testing.T, dir, tag string, wantDigest v1.Hash) v1.ImageIndex {
	t.Helper()
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("reading the archive as an OCI layout: %v", err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.Manifests) != 1 {
		t.Fatalf("index.json lists %d descriptors, want 1 (the multi-platform index)", len(tm.Manifests))
	}
	desc := tm.Manifests[0]
	if desc.MediaType != types.OCIImageIndex || desc.Digest != wantDigest {
		t.Errorf("index.json descriptor %s %s, want %s %s", desc.MediaType, desc.Digest, types.OCIImageIndex, wantDigest)
	}
	for _, k := range []string{RefNameAnnotation, "io.containerd.image.name"} {
		if got := desc.Annotations[k]; got != tag {
			t.Errorf("index.json annotation %s = %q, want %q", k, got, tag)
		}
	}
	inner, err := top.ImageIndex(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	return inner
}

// TestOCIArchiveReproducible: the same binaries, options and tag give the same bytes, whatever the order of the
// binaries; another creation time gives another index.
func TestOCIArchiveReproducible(t *testing.T) {
	amd, arm := smallBinaryFor(t, "amd64"), smallBinaryFor(t, "arm64")
	base := Options{Version: "v1.0.0", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	dir := t.TempDir()
	write := func(name string, bins []string, o Options) ([]byte, v1.Hash) {
		t.Helper()
		idx, err := BuildIndex(bins, o)
		if err != nil {
			t.Fatal(err)
		}
		d, err := idx.Digest()
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := WriteOCIArchive(idx, p, testTag); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b, d
	}
	want, wantDigest := write("base.tar", []string{amd, arm}, base)
	for _, tc := range []struct {
		name string
		bins []string
		opts Options
		same bool
	}{
		{"same inputs", []string{amd, arm}, base, true},
		{"other order", []string{arm, amd}, base, true},
		{"other time", []string{amd, arm}, Options{Version: base.Version, Created: base.Created.Add(time.Second)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, d := write(strings.ReplaceAll(tc.name, " ", "-")+".tar", tc.bins, tc.opts)
			if bytes.Equal(got, want) != tc.same || (d == wantDigest) != tc.same {
				t.Errorf("archive same bytes = %v, digest %v vs %v; want same = %v", bytes.Equal(got, want), d, wantDigest, tc.same)
			}
		})
	}
}

func TestBuildIndexRejects(t *testing.T) {
	amd, arm := smallBinaryFor(t, "amd64"), smallBinaryFor(t, "arm64")
	other := filepath.Join(t.TempDir(), "escapewatch-amd64-too")
	b, err := os.ReadFile(amd)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		bins   []string
		isSame bool
		want   []string
	}{
		{"same architecture twice", []string{amd, arm, other}, true, []string{amd, other, "both linux/amd64", "one binary per architecture"}},
		{"same binary twice", []string{arm, arm}, true, []string{arm + " and " + arm, "both linux/arm64"}},
		{"no binary", nil, false, []string{"GOARCH=amd64|arm64"}},
		{"missing binary", []string{amd, filepath.Join(t.TempDir(), "nope")}, false, []string{"CGO_ENABLED=0 go build"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := BuildIndex(tc.bins, Options{})
			if err == nil || errors.Is(err, ErrSamePlatform) != tc.isSame {
				t.Fatalf("BuildIndex: %v, want an error (ErrSamePlatform: %v)", err, tc.isSame)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("BuildIndex: %v, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestWriteOCIArchiveRejectsBadTag(t *testing.T) {
	idx, err := BuildIndex([]string{smallBinaryFor(t, "amd64")}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "escapewatch.tar")
	for _, tag := range []string{"", "ghcr.io/escapewatch/escapewatch:bad tag", "UPPER/case:v1"} {
		if err := WriteOCIArchive(idx, out, tag); err == nil || !strings.Contains(err.Error(), "REGISTRY/REPOSITORY:TAG") {
			t.Errorf("WriteOCIArchive(tag %q): %v, want a tag error", tag, err)
		}
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed write left %s behind (stat: %v)", out, err)
	}
}

// smallBinaryFor is smallBinary cross-built for goarch.
func smallBinaryFor(t *testing.T, goarch string) string {
	return staticBinaryFor(t, "escapewatch/internal/ociimage/testdata/static", goarch)
}

// untar extracts the OCI archive at archive below dir, as extractTar does, each entry with the epoch as its time.
func untar(archive, dir string) ([]string, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return extractTar(f, "archive", dir, time.Unix(0, 0))
}
