package containerd

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"escapewatch/internal/testutil"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// busyboxApplets are the commands the image has besides /bin/busybox: what a container escape script needs.
var busyboxApplets = []string{"sh", "mount", "mkdir", "echo", "cat", "sleep"}

// ImportBusybox imports into namespace CRINamespace, with the native snapshotter, an image named imageName
// whose only layer has busybox-static as /bin/busybox and its applets busyboxApplets in /bin, with /bin/sh as
// entrypoint. It returns the manifest's digest, which containerd keeps as the image's target.
func (d *Daemon) ImportBusybox(t testing.TB, imageName string) (manifestDigest string) {
	t.Helper()
	bin, err := os.ReadFile(testutil.RequireTool(t, "busybox", "busybox-static"))
	if err != nil {
		t.Fatal(err)
	}
	l := &ociLayout{blobs: map[digest.Digest][]byte{}}
	layer := l.add(ocispec.MediaTypeImageLayer, busyboxLayer(t, bin))
	config := l.addJSON(t, ocispec.MediaTypeImageConfig, ocispec.Image{
		Platform: ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		Config:   ocispec.ImageConfig{Entrypoint: []string{"/bin/sh"}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layer.Digest}},
	})
	manifest := l.addJSON(t, ocispec.MediaTypeImageManifest, ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    config,
		Layers:    []ocispec.Descriptor{layer},
	})
	manifest.Platform = &ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"}
	// containerd names an imported image after this annotation.
	manifest.Annotations = map[string]string{"io.containerd.image.name": imageName}
	index, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{manifest},
	})
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "image.tar")
	l.write(t, archive, index)
	d.Ctr(t, "--namespace", CRINamespace, "images", "import", "--snapshotter", "native", archive)
	return manifest.Digest.String()
}

// ociLayout collects the blobs of an OCI image layout.
type ociLayout struct {
	blobs map[digest.Digest][]byte
}

func (l *ociLayout) add(mediaType string, data []byte) ocispec.Descriptor {
	d := digest.FromBytes(data)
	l.blobs[d] = data
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

func (l *ociLayout) addJSON(t testing.TB, mediaType string, v any) ocispec.Descriptor {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return l.add(mediaType, data)
}

// write writes the layout as a tar archive, the form `ctr images import` reads.
func (l *ociLayout) write(t testing.TB, path string, index []byte) {
	t.Helper()
	files := []tarEntry{
		{name: ocispec.ImageLayoutFile, body: []byte(`{"imageLayoutVersion":"` + ocispec.ImageLayoutVersion + `"}`)},
		{name: ocispec.ImageIndexFile, body: index},
		{name: "blobs/", dir: true},
		{name: "blobs/sha256/", dir: true},
	}
	for d, data := range l.blobs {
		files = append(files, tarEntry{name: "blobs/sha256/" + d.Encoded(), body: data})
	}
	if err := os.WriteFile(path, tarOf(t, files), 0o600); err != nil {
		t.Fatal(err)
	}
}

// busyboxLayer is a layer tar with busybox as /bin/busybox and busyboxApplets as symlinks to it.
func busyboxLayer(t testing.TB, busybox []byte) []byte {
	entries := []tarEntry{
		{name: "bin/", dir: true},
		{name: "bin/busybox", body: busybox, mode: 0o755},
	}
	for _, applet := range busyboxApplets {
		entries = append(entries, tarEntry{name: "bin/" + applet, link: "busybox"})
	}
	return tarOf(t, entries)
}

type tarEntry struct {
	name string
	body []byte
	mode int64
	dir  bool
	link string // symlink target
}

func tarOf(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		switch {
		case e.dir:
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		case e.link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, e.link, 0o777
		case e.mode != 0:
			h.Mode = e.mode
		}
		if err := w.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
