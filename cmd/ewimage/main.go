// Command ewimage packs the static escapewatch binary into a container image without a container engine and
// writes it as a tarball that `docker load`, `podman load` and `ctr import` accept:
//
//	CGO_ENABLED=0 go build -o escapewatch ./cmd/escapewatch
//	go run ./cmd/ewimage -binary escapewatch -out escapewatch.tar -tag ghcr.io/escapewatch/escapewatch:v1.2.0
//
// The image is reproducible: its creation time is SOURCE_DATE_EPOCH (seconds since the epoch) when set, else
// the epoch itself, so the same binary and tag give the same digest.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
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
	binary := fs.String("binary", "", "the static escapewatch binary (CGO_ENABLED=0 go build ./cmd/escapewatch)")
	out := fs.String("out", "escapewatch.tar", "the image tarball to write")
	tag := fs.String("tag", "", "the image's name, REGISTRY/REPOSITORY:TAG (e.g. ghcr.io/escapewatch/escapewatch:v1.2.0)")
	caCerts := fs.String("ca-certs", ociimage.CACertsPath,
		`CA bundle copied into the image so HTTPS webhooks verify their servers; "" leaves it out`)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ewimage -binary PATH -tag REGISTRY/REPOSITORY:TAG [-out FILE] [-ca-certs FILE]\n\nFlags:\n")
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
	case *binary == "":
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

	img, err := ociimage.Build(*binary, opts)
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
