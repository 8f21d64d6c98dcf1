package ociimage

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations of the descriptor in an OCI layout's index.json that name the image.
const (
	// RefNameAnnotation is the OCI image-layout's name for a descriptor of index.json: skopeo and podman read it.
	RefNameAnnotation = "org.opencontainers.image.ref.name"
	// containerdNameAnnotation is the name containerd (ctr import, docker load with the containerd store) reads
	// first; without it, they may take ref.name for a bare tag and leave the image unnamed.
	containerdNameAnnotation = "io.containerd.image.name"
)

// ErrSamePlatform is returned by BuildIndex when two binaries are built for the same architecture: an index
// lists one image per platform, and which of the two a node would pull is not for the builder to guess.
var ErrSamePlatform = errors.New("two binaries for the same platform")

// BuildIndex returns the multi-platform image index of the escapewatch binaries at binaryPaths, one per
// architecture: one image each, built as Build builds it but with OCI media types (see ociTypes), listed in
// the order of their architectures (not of binaryPaths, so that the order of the flags does not change the
// digest), each descriptor with its platform so that a node pulls its own.
func BuildIndex(binaryPaths []string, opts Options) (v1.ImageIndex, error) {
	if len(binaryPaths) == 0 {
		return nil, errors.New("no escapewatch binary to build the image index from: build one per architecture with CGO_ENABLED=0 GOARCH=amd64|arm64 go build ./cmd/escapewatch")
	}
	type binary struct {
		path, arch string
		bin        []byte
	}
	var bins []binary
	for _, p := range binaryPaths {
		bin, arch, err := readBinary(p)
		if err != nil {
			return nil, err
		}
		if i := slices.IndexFunc(bins, func(b binary) bool { return b.arch == arch }); i >= 0 {
			return nil, fmt.Errorf("%w: %s and %s are both linux/%s: pass one binary per architecture (GOARCH=amd64 and GOARCH=arm64)",
				ErrSamePlatform, bins[i].path, p, arch)
		}
		bins = append(bins, binary{path: p, arch: arch, bin: bin})
	}
	slices.SortFunc(bins, func(a, b binary) int { return strings.Compare(a.arch, b.arch) })

	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, b := range bins {
		img, err := buildImage(b.bin, b.arch, opts, ociTypes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.path, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        imageWithoutArtifactType{img},
			Descriptor: v1.Descriptor{MediaType: types.OCIManifestSchema1, Platform: &v1.Platform{OS: "linux", Architecture: b.arch, Variant: variant(b.arch)}},
		})
	}
	// Computed here so that a fault shows now, not when the archive is written.
	if _, err := idx.Digest(); err != nil {
		return nil, fmt.Errorf("computing the image index: %w", err)
	}
	return idx, nil
}

// imageWithoutArtifactType keeps go-containerregistry from recording the config media type as the artifactType of
// the image's descriptor in the index. The image-spec 1.1 allows it, but an image is no artifact, buildx does not
// write it, and tools older than image-spec 1.1 drop the field when they copy the index (Debian 12's skopeo 1.9
// does, in skopeo copy --all), which changes the index digest: the one ewimage prints would not be the pushed one.
type imageWithoutArtifactType struct{ v1.Image }

// ArtifactType is the one partial.Descriptor asks for before it falls back to the config media type.
func (imageWithoutArtifactType) ArtifactType() (string, error) { return "", nil }

// WriteOCIArchive writes idx, named tag (e.g. ghcr.io/escapewatch/escapewatch:v1.2.0), as an OCI image layout
// archive at path: a tar of oci-layout, index.json and blobs/sha256/*, as skopeo's oci-archive: transport,
// podman load, ctr import and docker load read it. index.json lists one descriptor, idx itself, annotated with
// the tag; idx is a blob like its images, so its digest is the one a registry shows once it is pushed. The tar
// is the same bytes for the same idx and tag: entries sorted, root-owned, with the epoch as their time (the
// images carry their creation time). The file appears complete or not at all: it is written beside path and
// renamed into place.
func WriteOCIArchive(idx v1.ImageIndex, path, tag string) (err error) {
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("image tag %q: %w (want REGISTRY/REPOSITORY:TAG, e.g. ghcr.io/escapewatch/escapewatch:v1.2.0)", tag, err)
	}
	mt, err := idx.MediaType()
	if err != nil {
		return fmt.Errorf("writing the OCI archive: %w", err)
	}
	top := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), mutate.IndexAddendum{
		Add: idx,
		Descriptor: v1.Descriptor{MediaType: mt, Annotations: map[string]string{
			RefNameAnnotation:        ref.String(),
			containerdNameAnnotation: ref.String(),
		}},
	})

	// go-containerregistry writes the layout (every blob the index reaches, once); this package only tars it.
	dir, err := os.MkdirTemp("", "ewimage-layout-")
	if err != nil {
		return fmt.Errorf("writing the OCI layout: %w (is $TMPDIR writable?)", err)
	}
	defer os.RemoveAll(dir)
	if _, err := layout.Write(dir, top); err != nil {
		return fmt.Errorf("writing the OCI layout: %w", err)
	}

	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing the OCI archive: %w (is the output directory writable?)", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := tarDir(f, dir); err != nil {
		return fmt.Errorf("writing the OCI archive: %w", err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("writing the OCI archive: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing the OCI archive: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing the OCI archive: %w", err)
	}
	return nil
}

// tarDir writes the tree below dir to w: names relative to dir, in lexical order (WalkDir's), root-owned
// directories (0755) and regular files (0644) with the Unix epoch as their time, so that the same tree gives
// the same bytes whatever the umask, clock and user that wrote it.
func tarDir(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		// USTAR, as in the layer: no access or change times, and every reader takes it.
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: time.Unix(0, 0), Format: tar.FormatUSTAR}
		switch {
		case d.IsDir():
			h.Typeflag, h.Mode, h.Name = tar.TypeDir, 0o755, h.Name+"/"
			return tw.WriteHeader(h)
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, fi.Size()
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			defer src.Close()
			if _, err := io.Copy(tw, src); err != nil {
				// Also when the file changed size since its header: nothing else writes to dir.
				return fmt.Errorf("%s: %w", rel, err)
			}
			return nil
		default:
			return fmt.Errorf("%s: %v is neither a file nor a directory; the layout has only those", rel, d.Type())
		}
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
