// Package ociimage builds escapewatch's container image from its static binary without a container engine:
// one layer holding /usr/local/bin/escapewatch (and optionally a CA bundle for HTTPS webhooks), OCI labels
// and fixed timestamps, so the same binary always gives the same image digest. The image is written as
// a docker-archive tarball, which `docker load`, `podman load` and `ctr import` accept; the binaries of several
// architectures make one multi-platform index (BuildIndex), written as an OCI image layout archive.
package ociimage

import (
	"archive/tar"
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Paths inside the image.
const (
	BinaryPath = "/usr/local/bin/escapewatch"
	// CACertsPath is where Go's crypto/x509 looks first for system roots on Linux.
	CACertsPath = "/etc/ssl/certs/ca-certificates.crt"
)

// Options are the image's metadata and optional contents.
type Options struct {
	// Version is the org.opencontainers.image.version label (the release, e.g. "v1.2.0"); empty leaves it out.
	Version string
	// Created is the image's creation time: config, history, file times and the created label. It is an input
	// rather than "now" so that rebuilding the same binary gives the same digest; the zero value means the Unix
	// epoch.
	Created time.Time
	// CACertificates is the path of a PEM bundle copied to CACertsPath, so that HTTPS webhooks can verify their
	// servers (the image has no other files); empty leaves it out.
	CACertificates string
}

// elfArch maps ELF machines to image architectures: the image's platform is the binary's, never assumed. The
// sensor's BPF objects are built for x86-64 and arm64 only (their registers and syscall numbers).
var elfArch = map[elf.Machine]string{
	elf.EM_X86_64:  "amd64",
	elf.EM_AARCH64: "arm64",
}

// Build returns the image of the escapewatch binary at binaryPath. The binary must be a static Linux
// executable: the image holds no C library or dynamic loader to run anything else.
func Build(binaryPath string, opts Options) (v1.Image, error) {
	bin, arch, err := readBinary(binaryPath)
	if err != nil {
		return nil, err
	}
	return buildImage(bin, arch, opts, dockerTypes)
}

// mediaTypes are the media types of an image's manifest, config and layer.
type mediaTypes struct{ manifest, config, layer types.MediaType }

var (
	// Docker schema 2 media types, for the single image of a docker-archive: such a tarball records no manifest,
	// and go-containerregistry (crane push) rebuilds a schema 2 one from it; with these types the rebuilt
	// manifest is this one, so the digest printed at build time is the pushed image's. (docker load and skopeo
	// store layers their own way and show digests of their own.)
	dockerTypes = mediaTypes{types.DockerManifestSchema2, types.DockerConfigJSON, types.DockerLayer}
	// OCI media types, for the images of an OCI index: the image-spec names only OCI manifests (and indexes) as
	// what an OCI index lists, and some registries and tools refuse or convert an OCI index that lists Docker
	// manifests, which would change the digest printed at build time.
	ociTypes = mediaTypes{types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer}
)

// readBinary reads the escapewatch binary at path and returns it with its architecture.
func readBinary(path string) ([]byte, string, error) {
	bin, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("reading the escapewatch binary: %w (build it with CGO_ENABLED=0 go build ./cmd/escapewatch)", err)
	}
	arch, err := staticLinuxArch(path, bin)
	if err != nil {
		return nil, "", err
	}
	return bin, arch, nil
}

// buildImage is the image of bin, built for arch, with media types mt.
func buildImage(bin []byte, arch string, opts Options, mt mediaTypes) (v1.Image, error) {
	var certs []byte
	var err error
	if opts.CACertificates != "" {
		if certs, err = os.ReadFile(opts.CACertificates); err != nil {
			return nil, fmt.Errorf("reading the CA bundle: %w (install ca-certificates, or build without a CA bundle: HTTPS webhooks then cannot verify their servers)", err)
		}
	}
	created := opts.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	// Whole seconds in UTC: tar headers keep no more, and the digest must not depend on the caller's zone.
	created = created.UTC().Truncate(time.Second)

	layerTar, err := layerTar(bin, certs, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(mt.layer))
	if err != nil {
		return nil, fmt.Errorf("compressing the image layer: %w", err)
	}

	img := mutate.MediaType(empty.Image, mt.manifest)
	img = mutate.ConfigMediaType(img, mt.config)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: mt.layer,
		History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: "ewimage: " + BinaryPath},
	})
	if err != nil {
		return nil, fmt.Errorf("adding the image layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the image config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = "linux", arch, variant(arch)
	cf.Created = v1.Time{Time: created}
	cf.Config.Entrypoint = []string{BinaryPath}
	cf.Config.Cmd = []string{"run"}
	// So that `kubectl exec POD -- escapewatch selftest` finds the binary by name.
	cf.Config.Env = []string{"PATH=/usr/local/bin"}
	cf.Config.Labels = labels(bin, opts.Version, created)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("setting the image config: %w", err)
	}
	return img, nil
}

// staticLinuxArch checks that bin is a statically linked ELF executable and returns its architecture.
func staticLinuxArch(path string, bin []byte) (string, error) {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return "", fmt.Errorf("%s is not an ELF executable (%w): pass the escapewatch binary built with CGO_ENABLED=0 go build ./cmd/escapewatch", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", fmt.Errorf("%s is dynamically linked, and the image has no C library or loader to run it: rebuild it with CGO_ENABLED=0", path)
		}
	}
	arch, ok := elfArch[f.Machine]
	if !ok {
		return "", fmt.Errorf("%s is built for %v, not an architecture the image supports: escapewatch runs on amd64 and arm64 only; build it with GOARCH=amd64 or GOARCH=arm64", path, f.Machine)
	}
	return arch, nil
}

// labels are the org.opencontainers.image.* annotations of the image config.
func labels(bin []byte, version string, created time.Time) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       "escapewatch",
		"org.opencontainers.image.description": "Runtime-security sensor for the cgroup release_agent container escape (TRC-1010, MITRE ATT&CK T1611)",
		"org.opencontainers.image.created":     created.Format(time.RFC3339),
	}
	if version != "" {
		l["org.opencontainers.image.version"] = version
	}
	if rev := vcsRevision(bin); rev != "" {
		l["org.opencontainers.image.revision"] = rev
	}
	return l
}

// vcsRevision is the commit the binary was built from, as the Go toolchain stamped it. A build with
// uncommitted changes gets none: no commit describes it.
func vcsRevision(bin []byte) string {
	info, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		return ""
	}
	rev, modified := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified {
		return ""
	}
	return rev
}

// layerTar is the layer's uncompressed tar: parent directories first, every entry root-owned with a fixed time.
// /tmp is included because the root filesystem is meant to be read-only and selftest makes its mount points
// there; a DaemonSet mounts an emptyDir over it.
func layerTar(bin, certs []byte, mtime time.Time) ([]byte, error) {
	type entry struct {
		name string
		mode int64
		data []byte
		dir  bool
	}
	var entries []entry
	if certs != nil {
		entries = append(entries,
			entry{name: "etc/", mode: 0o755, dir: true},
			entry{name: "etc/ssl/", mode: 0o755, dir: true},
			entry{name: "etc/ssl/certs/", mode: 0o755, dir: true},
			entry{name: CACertsPath[1:], mode: 0o644, data: certs})
	}
	entries = append(entries,
		entry{name: "tmp/", mode: 0o1777, dir: true},
		entry{name: "usr/", mode: 0o755, dir: true},
		entry{name: "usr/local/", mode: 0o755, dir: true},
		entry{name: "usr/local/bin/", mode: 0o755, dir: true},
		entry{name: BinaryPath[1:], mode: 0o755, data: bin})

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		// USTAR: every reader takes it, and it has no access or change times that could differ between builds.
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: mtime, Typeflag: tar.TypeReg, Size: int64(len(e.data)),
			Format: tar.FormatUSTAR}
		if e.dir {
			h.Typeflag = tar.TypeDir
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("writing the image layer: %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("writing the image layer: %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("writing the image layer: %w", err)
	}
	return buf.Bytes(), nil
}

// WriteTarball writes img, tagged tag (e.g. ghcr.io/escapewatch/escapewatch:v1.2.0), as a docker-archive tarball
// at path. The file appears complete or not at all: it is written beside path and renamed into place.
func WriteTarball(img v1.Image, path, tag string) (err error) {
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("image tag %q: %w (want REGISTRY/REPOSITORY:TAG, e.g. ghcr.io/escapewatch/escapewatch:v1.2.0)", tag, err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing the image tarball: %w (is the output directory writable?)", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := tarball.Write(ref, img, f); err != nil {
		return fmt.Errorf("writing the image tarball: %w", err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("writing the image tarball: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing the image tarball: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing the image tarball: %w", err)
	}
	return nil
}

// variant is the OCI platform variant of a GOARCH: arm64 images say v8, as buildx writes them and as containerd
// and the registries' platform matchers expect; amd64 has none.
func variant(arch string) string {
	if arch == "arm64" {
		return "v8"
	}
	return ""
}
