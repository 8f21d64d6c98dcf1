package output

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestFileAppendsAndReopens(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "findings.jsonl")
	if err := os.WriteFile(path, []byte("earlier\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := NewFile(path)
	if err != nil {
		t.Fatal(err)
	}
	deliver := func(line string) {
		t.Helper()
		if err := w.Deliver(t.Context(), numbered(0), []byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	deliver("one\n")
	// Rotation: the file is renamed away, then Reopen (on SIGHUP) starts a new one at the same path.
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	deliver("two\n")
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}
	deliver("three\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	wantFile(t, rotated, "earlier\none\ntwo\n")
	wantFile(t, path, "three\n")
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("new file mode %v, want 0600: findings are not for every user", perm)
	}
}

func TestNewFileNamesTheProblem(t *testing.T) {
	_, err := NewFile(filepath.Join(t.TempDir(), "missing", "findings.jsonl"))
	if err == nil {
		t.Fatal("no error for a file in a missing directory")
	}
	contains(t, err.Error(), "missing/findings.jsonl")
	contains(t, err.Error(), "check that the directory exists")
}

func wantFile(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s holds %q, want %q", path, got, want)
	}
}

// TestFileRefusesLinksAndSpecialFiles: the path's last component must be a regular file: a symbolic link there
// (planted by whoever can write the directory) would send the sensor's root writes anywhere.
func TestFileRefusesLinksAndSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.jsonl")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(dir, "dangling.jsonl")
	if err := os.Symlink(filepath.Join(dir, "nothing-yet"), dangling); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.jsonl")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, path, want string }{
		{"symlink to a file", link, "symbolic link"},
		{"dangling symlink", dangling, "symbolic link"},
		{"FIFO without a reader", fifo, "FIFO"},
		{"directory", dir, "is a directory"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w, err := NewFile(tt.path)
			if err == nil {
				w.Close()
				t.Fatalf("NewFile(%s) succeeded", tt.path)
			}
			contains(t, err.Error(), tt.want)
		})
	}
	wantFile(t, victim, "keep\n")
	if info, err := os.Stat(victim); err != nil || info.Mode().Perm() != 0o644 {
		t.Errorf("the link's target: %v, %v; want it untouched (0644)", info.Mode(), err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "nothing-yet")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dangling link's target was created: %v", err)
	}
}

// TestFileFIFOWithReader: a FIFO that has a reader opens at once, and is refused as not a regular file.
func TestFileFIFOWithReader(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo.jsonl")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(fifo, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := NewFile(fifo); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("NewFile(FIFO with a reader): %v, want not a regular file", err)
	}
}

// TestFileExistingModeTightened: a file that existed with a wider mode is made 0600 (O_CREAT keeps the mode of
// a file it did not create), on open and on reopen.
func TestFileExistingModeTightened(t *testing.T) {
	path := filepath.Join(t.TempDir(), "findings.jsonl")
	if err := os.WriteFile(path, []byte("earlier\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	w, err := NewFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	mode := func() os.FileMode {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return info.Mode().Perm()
	}
	if m := mode(); m != 0o600 {
		t.Errorf("mode %v after open, want 0600", m)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}
	if m := mode(); m != 0o600 {
		t.Errorf("mode %v after reopen, want 0600", m)
	}
	if err := w.Deliver(t.Context(), numbered(0), []byte("one\n")); err != nil {
		t.Fatal(err)
	}
	wantFile(t, path, "earlier\none\n")
	// The descriptor is closed on exec: a program the sensor starts must not inherit it.
	flags, err := unix.FcntlInt(w.f.Fd(), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("F_GETFD = %#x, %v; want FD_CLOEXEC", flags, err)
	}
}
