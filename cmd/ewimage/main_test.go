package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestUsageErrors(t *testing.T) {
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
	bin := filepath.Join(dir, "escapewatch")
	build := exec.Command("go", "build", "-o", bin, "escapewatch/cmd/escapewatch")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build escapewatch/cmd/escapewatch: %v\n%s", err, out)
	}
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
