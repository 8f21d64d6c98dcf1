// Command ewimage packs the static escapewatch binary into a container image without a container engine and
// writes it as a docker-archive tarball that `docker load`, `podman load`, `ctr import` and `crane push` accept:
//
//	CGO_ENABLED=0 go build -o escapewatch ./cmd/escapewatch
//	go run ./cmd/ewimage -binary escapewatch -out escapewatch.tar -tag ghcr.io/escapewatch/escapewatch:v1.2.0
//
// Given -binary once per architecture, it writes one multi-platform image instead, as an OCI image layout
// archive (`skopeo copy --all oci-archive:FILE docker://REF`, `podman load`, `ctr import --all-platforms`):
//
//	CGO_ENABLED=0 GOARCH=amd64 go build -o escapewatch-amd64 ./cmd/escapewatch
//	CGO_ENABLED=0 GOARCH=arm64 go build -o escapewatch-arm64 ./cmd/escapewatch
//	go run ./cmd/ewimage -binary escapewatch-amd64 -binary escapewatch-arm64 -out escapewatch.tar -tag ...
//
// The image is reproducible: its creation time is SOURCE_DATE_EPOCH (seconds since the epoch) when set, else
// the epoch itself, so the same binaries and tag give the same digest and the same file.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"escapewatch/internal/ociimage"
)

// errUsage marks command-line mistakes: exit status 2, as flag parsing does.
var errUsage = errors.New("usage")

func main() {
	err := run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "ewimage:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "ewimage:", err)
		os.Exit(1)
	}
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ewimage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var binaries binaryList
	fs.Var(&binaries, "binary", "`PATH` of the static escapewatch binary (CGO_ENABLED=0 go build ./cmd/escapewatch); once per architecture\n"+
		"for a multi-platform image (GOARCH=amd64 and GOARCH=arm64), written as an OCI layout archive")
	out := fs.String("out", "escapewatch.tar", "the image archive to write")
	tag := fs.String("tag", "", "the image's name, REGISTRY/REPOSITORY:TAG (e.g. ghcr.io/escapewatch/escapewatch:v1.2.0)")
	caCerts := fs.String("ca-certs", ociimage.CACertsPath,
		`CA bundle copied into the image so HTTPS webhooks verify their servers; "" leaves it out`)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ewimage -binary PATH [-binary PATH...] -tag REGISTRY/REPOSITORY:TAG [-out FILE] [-ca-certs FILE]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("%w: unexpected argument %q (every input is a flag; see ewimage -help)", errUsage, fs.Arg(0))
	case len(binaries) == 0:
		return fmt.Errorf("%w: -binary is required (build it with CGO_ENABLED=0 go build ./cmd/escapewatch)", errUsage)
	case *tag == "":
		return fmt.Errorf("%w: -tag is required (e.g. -tag ghcr.io/escapewatch/escapewatch:v1.2.0)", errUsage)
	}
	ref, err := name.NewTag(*tag)
	if err != nil {
		return fmt.Errorf("%w: -tag %q: %v (want REGISTRY/REPOSITORY:TAG)", errUsage, *tag, err)
	}
	created, err := sourceDateEpoch(getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	opts := ociimage.Options{Created: created, CACertificates: *caCerts}
	// "latest" names no release, so it makes no version label.
	if id := ref.TagStr(); id != "latest" {
		opts.Version = id
	}

	if len(binaries) > 1 {
		return writeIndex(binaries, opts, *out, ref, stdout)
	}
	img, err := ociimage.Build(binaries[0], opts)
	if err != nil {
		return err
	}
	if err := ociimage.WriteTarball(img, *out, ref.String()); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("computing the image digest: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("reading the image config: %w", err)
	}
	fmt.Fprintf(stdout, "%s: %s %s/%s %s\n", *out, ref, cf.OS, cf.Architecture, digest)
	return nil
}

// writeIndex writes the multi-platform image of binaries as an OCI layout archive at out and prints the index's
// digest, the one the registry shows once it is pushed, in the single image's line format with the platforms
// comma-separated.
func writeIndex(binaries []string, opts ociimage.Options, out string, ref name.Tag, stdout io.Writer) error {
	idx, err := ociimage.BuildIndex(binaries, opts)
	if errors.Is(err, ociimage.ErrSamePlatform) {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if err != nil {
		return err
	}
	if err := ociimage.WriteOCIArchive(idx, out, ref.String()); err != nil {
		return err
	}
	digest, err := idx.Digest()
	if err != nil {
		return fmt.Errorf("computing the image index digest: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return fmt.Errorf("reading the image index: %w", err)
	}
	var platforms []string
	for _, d := range im.Manifests {
		platforms = append(platforms, d.Platform.String())
	}
	fmt.Fprintf(stdout, "%s: %s %s %s\n", out, ref, strings.Join(platforms, ","), digest)
	return nil
}

// binaryList is the repeatable -binary flag.
type binaryList []string

func (b *binaryList) String() string { return strings.Join(*b, ",") }

func (b *binaryList) Set(v string) error {
	if v == "" {
		return errors.New("empty path (want the escapewatch binary built with CGO_ENABLED=0 go build ./cmd/escapewatch)")
	}
	*b = append(*b, v)
	return nil
}

// sourceDateEpoch reads the reproducible-builds convention's SOURCE_DATE_EPOCH; unset means the epoch.
func sourceDateEpoch(v string) (time.Time, error) {
	if v == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	sec, err := strconv.ParseInt(v, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want whole seconds since 1970 (e.g. $(git log -1 --format=%%ct))", v)
	}
	return time.Unix(sec, 0).UTC(), nil
}
