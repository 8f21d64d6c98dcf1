package output

import (
	"os"
	"path/filepath"
	"testing"
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
