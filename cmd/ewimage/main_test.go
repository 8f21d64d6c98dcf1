package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	small := buildBinary(t, dir, "escapewatch/internal/ociimage/testdata/static", runtime.GOARCH)
	smallToo := filepath.Join(dir, "static-again")
	if err := os.Link(small, smallToo); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  string
		want string
	}{
		{"no binary", []string{"-tag", "ghcr.io/x/y:v1"}, "", "-binary is required"},
		{"no tag", []string{"-binary", "x"}, "", "-tag is required"},
		{"bad tag", []string{"-binary", "x", "-tag", "ghcr.io/x/y:bad tag"}, "", "want REGISTRY/REPOSITORY:TAG"},
		{"stray argument", []string{"-binary", "x", "-tag", "ghcr.io/x/y:v1", "extra"}, "", `unexpected argument "extra"`},
		{"unknown flag", []string{"-push"}, "", "flag provided but not defined"},
		{"bad SOURCE_DATE_EPOCH", []string{"-binary", "x", "-tag", "ghcr.io/x/y:v1"}, "yesterday", "SOURCE_DATE_EPOCH"},
		{"negative SOURCE_DATE_EPOCH", []string{"-binary", "x", "-tag", "ghcr.io/x/y:v1"}, "-1", "SOURCE_DATE_EPOCH"},
		{"empty binary", []string{"-binary", "", "-tag", "ghcr.io/x/y:v1"}, "", "empty path"},
		{"same architecture twice", []string{"-binary", small, "-binary", smallToo, "-tag", "ghcr.io/x/y:v1", "-out", filepath.Join(dir, "x.tar")},
			"", small + " and " + smallToo + " are both linux/" + runtime.GOARCH},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(tc.args, func(string) string { return tc.env }, &stdout, &stderr)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run(%q): %v, want a usage error containing %q", tc.args, err, tc.want)
			}
		})
	}
}

// TestWritesLoadableTarball runs the command on the real binary and reads the tarball back by its tag, as
// docker load would name it.
func TestWritesLoadableTarball(t *testing.T) {
	dir := t.TempDir()
	bin := buildBinary(t, dir, "escapewatch/cmd/escapewatch", runtime.GOARCH)
	out := filepath.Join(dir, "escapewatch.tar")
	const tag = "ghcr.io/escapewatch/escapewatch:v9.9.9"
	env := map[string]string{"SOURCE_DATE_EPOCH": "1790000000"}
	var stdout, stderr bytes.Buffer
	if err := run([]string{"-binary", bin, "-out", out, "-tag", tag, "-ca-certs", ""}, func(k string) string { return env[k] },
		&stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstderr: %s", err, &stderr)
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, &ref)
	if err != nil {
		t.Fatalf("reading %s back as %s: %v", out, tag, err)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), digest.String()) {
		t.Errorf("stdout %q does not name the image digest %s", &stdout, digest)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := cf.Config.Labels["org.opencontainers.image.version"]; got != "v9.9.9" {
		t.Errorf("version label = %q, want the tag's v9.9.9", got)
	}
	if got := cf.Created.Unix(); got != 1790000000 {
		t.Errorf("created = %d, want SOURCE_DATE_EPOCH 1790000000", got)
	}
}

// TestWritesMultiPlatformArchive runs the command on the real binary for amd64 and arm64 and reads the OCI
// archive back as an OCI layout: one index named by the tag, with both platforms, whose digest the command
// prints; a second run with the binaries in the other order writes the same bytes.
func TestWritesMultiPlatformArchive(t *testing.T) {
	dir := t.TempDir()
	amd := buildBinary(t, dir, "escapewatch/cmd/escapewatch", "amd64")
	arm := buildBinary(t, dir, "escapewatch/cmd/escapewatch", "arm64")
	const tag = "ghcr.io/escapewatch/escapewatch:v9.9.9"
	env := map[string]string{"SOURCE_DATE_EPOCH": "1790000000"}
	write := func(out string, bins ...string) string {
		t.Helper()
		args := []string{"-out", out, "-tag", tag, "-ca-certs", ""}
		for _, b := range bins {
			args = append(args, "-binary", b)
		}
		var stdout, stderr bytes.Buffer
		if err := run(args, func(k string) string { return env[k] }, &stdout, &stderr); err != nil {
			t.Fatalf("run: %v\nstderr: %s", err, &stderr)
		}
		return stdout.String()
	}
	out := filepath.Join(dir, "escapewatch.tar")
	stdout := write(out, amd, arm)

	layoutDir := filepath.Join(dir, "layout")
	untar := exec.Command("tar", "-xf", out, "-C", layoutDir)
	if err := os.Mkdir(layoutDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if b, err := untar.CombinedOutput(); err != nil {
		t.Fatalf("tar -xf %s: %v\n%s", out, err, b)
	}
	top, err := layout.ImageIndexFromPath(layoutDir)
	if err != nil {
		t.Fatalf("reading %s as an OCI layout: %v", out, err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.Manifests) != 1 || tm.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != tag {
		t.Fatalf("index.json lists %+v, want one index named %s", tm.Manifests, tag)
	}
	digest := tm.Manifests[0].Digest
	if want := out + ": " + tag + " linux/amd64,linux/arm64/v8 " + digest.String() + "\n"; stdout != want {
		t.Errorf("stdout %q, want %q", stdout, want)
	}
	idx, err := top.ImageIndex(digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var platforms []string
	for _, d := range im.Manifests {
		platforms = append(platforms, d.Platform.String())
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSuffix(cf.OS+"/"+cf.Architecture+"/"+cf.Variant, "/") != d.Platform.String() || cf.Config.Labels["org.opencontainers.image.version"] != "v9.9.9" ||
			cf.Created.Unix() != 1790000000 {
			t.Errorf("%s: config says %s/%s, version %q, created %d; want %s, v9.9.9, SOURCE_DATE_EPOCH 1790000000",
				d.Platform, cf.OS, cf.Architecture, cf.Config.Labels["org.opencontainers.image.version"], cf.Created.Unix(), d.Platform)
		}
	}
	if want := []string{"linux/amd64", "linux/arm64/v8"}; !slices.Equal(platforms, want) {
		t.Errorf("platforms %q, want %q", platforms, want)
	}

	again := filepath.Join(dir, "again.tar")
	write(again, arm, amd)
	a, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(again)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("the same binaries (in the other order), tag and SOURCE_DATE_EPOCH wrote different archives")
	}
}

// buildBinary builds pkg for goarch as the README says to (CGO_ENABLED=0), into dir.
func buildBinary(t *testing.T, dir, pkg, goarch string) string {
	t.Helper()
	bin := filepath.Join(dir, filepath.Base(pkg)+"-"+goarch)
	build := exec.Command("go", "build", "-o", bin, pkg)
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOARCH="+goarch)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("GOARCH=%s go build %s: %v\n%s", goarch, pkg, err, out)
	}
	return bin
}
