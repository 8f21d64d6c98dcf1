package ociimage

import (
	"archive/tar"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const testTag = "ghcr.io/escapewatch/escapewatch:v0.0.0-test"

var (
	buildMu     sync.Mutex
	buildDir    string
	buildErr    error
	builtBinary = map[string]string{}
)

// staticBinary builds the package pkg once for the package's tests, as the README says to (CGO_ENABLED=0),
// into a directory removed when the tests end.
func staticBinary(t *testing.T, pkg string) string { return staticBinaryFor(t, pkg, runtime.GOARCH) }

// staticBinaryFor is staticBinary cross-built for goarch.
func staticBinaryFor(t *testing.T, pkg, goarch string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	key := pkg + " " + goarch
	if bin, ok := builtBinary[key]; ok {
		return bin
	}
	if buildDir == "" {
		if buildDir, buildErr = os.MkdirTemp("", "ociimage-test-"); buildErr != nil {
			t.Fatal(buildErr)
		}
	}
	bin := filepath.Join(buildDir, filepath.Base(pkg)+"-"+goarch)
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOARCH="+goarch)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GOARCH=%s go build %s: %v\n%s", goarch, pkg, err, out)
	}
	builtBinary[key] = bin
	return bin
}

// escapewatchBinary is the real sensor, for the tests that run what the image holds.
func escapewatchBinary(t *testing.T) string { return staticBinary(t, "escapewatch/cmd/escapewatch") }

// smallBinary is a small static executable, for the tests of what the image builder does with any binary.
func smallBinary(t *testing.T) string {
	return staticBinary(t, "escapewatch/internal/ociimage/testdata/static")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// TestImageRoundTrip builds the image, writes the tarball that docker/podman/ctr load, reads it back and runs
// the binary unpacked from its layer.
func TestImageRoundTrip(t *testing.T) {
	bin := escapewatchBinary(t)
	created := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	img, err := Build(bin, Options{Version: "v0.0.0-test", Created: created, CACertificates: caBundle(t)})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "escapewatch.tar")
	if err := WriteTarball(img, out, testTag); err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(testTag)
	if err != nil {
		t.Fatal(err)
	}
	// The tag must be in the tarball's manifest.json: that is the name docker load gives the image.
	loaded, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatalf("reading the written tarball back: %v", err)
	}
	wantDigest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := loaded.Digest(); err != nil || got != wantDigest {
		t.Fatalf("digest read back = %v (err %v), want %v", got, err, wantDigest)
	}

	cf, err := loaded.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"platform", cf.OS + "/" + cf.Architecture, "linux/" + runtime.GOARCH},
		{"entrypoint", cf.Config.Entrypoint, []string{"/usr/local/bin/escapewatch"}},
		{"cmd", cf.Config.Cmd, []string{"run"}},
		{"env", cf.Config.Env, []string{"PATH=/usr/local/bin"}},
		{"created", cf.Created.Time.UTC(), created},
		{"title label", cf.Config.Labels["org.opencontainers.image.title"], "escapewatch"},
		{"version label", cf.Config.Labels["org.opencontainers.image.version"], "v0.0.0-test"},
		{"created label", cf.Config.Labels["org.opencontainers.image.created"], "2026-11-01T12:00:00Z"},
	} {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
	if mt, err := loaded.MediaType(); err != nil || mt != types.DockerManifestSchema2 {
		t.Errorf("manifest media type = %q (err %v), want %q", mt, err, types.DockerManifestSchema2)
	}

	layers, err := loaded.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	root := t.TempDir()
	files, err := unpack(layers[0], root, created)
	if err != nil {
		t.Fatal(err)
	}
	wantFiles := []string{"etc/", "etc/ssl/", "etc/ssl/certs/", "etc/ssl/certs/ca-certificates.crt", "tmp/",
		"usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/escapewatch"}
	if !slices.Equal(files, wantFiles) {
		t.Errorf("layer entries = %q, want %q", files, wantFiles)
	}

	got, err := exec.Command(filepath.Join(root, "usr/local/bin/escapewatch"), "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(got), "escapewatch ") {
		t.Fatalf("unpacked escapewatch version: %q, err %v; want output starting with \"escapewatch \"", got, err)
	}
}

// TestBuildReproducible: the digest depends on the inputs only, so a rebuild of a release can be checked
// against the published image.
func TestBuildReproducible(t *testing.T) {
	bin := smallBinary(t)
	base := Options{Version: "v1.0.0", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	digest := func(o Options) v1.Hash {
		t.Helper()
		img, err := Build(bin, o)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	want := digest(base)
	for _, tc := range []struct {
		name string
		opts Options
		same bool
	}{
		{"same inputs", base, true},
		{"same instant in another zone", Options{Version: base.Version, Created: base.Created.In(time.FixedZone("X", 3600))}, true},
		{"sub-second part ignored", Options{Version: base.Version, Created: base.Created.Add(time.Millisecond)}, true},
		{"zero time is the epoch", Options{Version: base.Version, Created: time.Unix(0, 0)}, false},
		{"other version", Options{Version: "v1.0.1", Created: base.Created}, false},
		{"other time", Options{Version: base.Version, Created: base.Created.Add(time.Second)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := digest(tc.opts); (got == want) != tc.same {
				t.Errorf("digest %v vs base %v: same = %v, want %v", got, want, got == want, tc.same)
			}
		})
	}
	if a, b := digest(Options{}), digest(Options{Created: time.Unix(0, 0)}); a != b {
		t.Errorf("zero Created gives %v, the epoch %v; want the same", a, b)
	}
}

func TestBuildRejects(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "script")
	if err := os.WriteFile(text, []byte("#!/bin/sh\necho escapewatch\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, binary, certs, want string
	}{
		{"missing binary", filepath.Join(dir, "nope"), "", "CGO_ENABLED=0 go build"},
		{"not ELF", text, "", "is not an ELF executable"},
		{"dynamically linked", dynamicELF(t), "", "rebuild it with CGO_ENABLED=0"},
		{"missing CA bundle", smallBinary(t), filepath.Join(dir, "nope.crt"), "reading the CA bundle"},
		{"another architecture", staticBinaryFor(t, "escapewatch/internal/ociimage/testdata/static", "riscv64"), "",
			"escapewatch runs on amd64 and arm64 only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.binary == "" {
				t.Skip("no dynamically linked executable found on this machine")
			}
			_, err := Build(tc.binary, Options{CACertificates: tc.certs})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestBuildPlatform: the image's platform is the binary's architecture, for each one the sensor is built for.
func TestBuildPlatform(t *testing.T) {
	for _, goarch := range []string{"amd64", "arm64"} {
		t.Run(goarch, func(t *testing.T) {
			img, err := Build(staticBinaryFor(t, "escapewatch/cmd/escapewatch", goarch), Options{})
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if got := cf.OS + "/" + cf.Architecture; got != "linux/"+goarch {
				t.Errorf("platform %s, want linux/%s", got, goarch)
			}
		})
	}
}

func TestWriteTarballRejectsBadTag(t *testing.T) {
	img, err := Build(smallBinary(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "escapewatch.tar")
	for _, tag := range []string{"", "ghcr.io/escapewatch/escapewatch:bad tag", "UPPER/case:v1"} {
		if err := WriteTarball(img, out, tag); err == nil || !strings.Contains(err.Error(), "REGISTRY/REPOSITORY:TAG") {
			t.Errorf("WriteTarball(tag %q): %v, want a tag error", tag, err)
		}
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed write left %s behind (stat: %v)", out, err)
	}
}

// caBundle returns the system's CA bundle, or a stand-in: the test is about copying it, not its contents.
func caBundle(t *testing.T) string {
	if _, err := os.Stat(CACertsPath); err == nil {
		return CACertsPath
	}
	p := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(p, []byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// dynamicELF finds an executable with a program interpreter (any Debian /bin tool), or "" when there is none.
func dynamicELF(t *testing.T) string {
	for _, tool := range []string{"true", "sh", "ls"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			continue
		}
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		dynamic := slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP })
		f.Close()
		if dynamic {
			return p
		}
	}
	return ""
}

// unpack extracts a layer below root the way a careful runtime would (extractTar), each entry with the image's
// time mtime.
func unpack(layer v1.Layer, root string, mtime time.Time) ([]string, error) {
	rc, err := layer.Uncompressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return extractTar(rc, "layer", root, mtime)
}

// extractTar extracts the tar stream r (what names it in errors) below root: only directories and regular files,
// names that stay below root, bounded sizes, each entry root-owned with time mtime. It returns the entry names in
// order.
func extractTar(r io.Reader, what, root string, mtime time.Time) ([]string, error) {
	const maxFile = 256 << 20
	var names []string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names, nil
		}
		if err != nil {
			return nil, err
		}
		names = append(names, h.Name)
		rel := path.Clean(h.Name)
		if !filepath.IsLocal(rel) {
			return nil, fmt.Errorf("%s entry %q leaves the root", what, h.Name)
		}
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(mtime) {
			return nil, fmt.Errorf("%s entry %q: owner %d:%d, time %v; want 0:0 and %v", what, h.Name, h.Uid, h.Gid, h.ModTime, mtime)
		}
		dst := filepath.Join(root, filepath.FromSlash(rel))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return nil, err
			}
		case tar.TypeReg:
			if h.Size > maxFile {
				return nil, fmt.Errorf("%s entry %q: %d bytes, more than the %d expected", what, h.Name, h.Size, maxFile)
			}
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return nil, err
			}
			// O_EXCL: a name repeated in the stream must not overwrite what an earlier entry wrote.
			f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, os.FileMode(h.Mode).Perm())
			if err != nil {
				return nil, err
			}
			_, err = io.Copy(f, io.LimitReader(tr, h.Size))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%s entry %q has type %q; only directories and files are expected", what, h.Name, h.Typeflag)
		}
	}
}
