package output

import (
	"context"
	"fmt"
	"os"
	"sync"

	"escapewatch/internal/finding"
)

// File appends findings as JSON lines to a file and fsyncs each one, so that a finding written is a finding
// kept, even if the machine loses power right after.
type File struct {
	mu   sync.Mutex // Reopen runs from a signal handler's goroutine while Deliver runs from the Dispatcher's
	path string
	f    *os.File
}

// NewFile opens path for appending, creating it readable by its owner only: findings name processes and files
// that an unprivileged user should not learn about.
func NewFile(path string) (*File, error) {
	f, err := openAppend(path)
	if err != nil {
		return nil, err
	}
	return &File{path: path, f: f}, nil
}

func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open output file: %w (check that the directory exists and is writable)", err)
	}
	return f, nil
}

// Name is "file".
func (w *File) Name() string { return "file" }

// Deliver appends line in one write (O_APPEND keeps it whole next to other writers) and fsyncs it.
func (w *File) Deliver(_ context.Context, _ finding.Finding, line []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.f.Write(line); err != nil {
		return fmt.Errorf("append finding to %s: %w", w.path, err)
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w (the file system may be full or failing)", w.path, err)
	}
	return nil
}

// Reopen closes the file and opens path again, for log rotation: the rotator renames the file, then signals
// (SIGHUP) so that new findings go to a new file at the original path.
func (w *File) Reopen() error {
	f, err := openAppend(w.path)
	if err != nil {
		return err
	}
	w.mu.Lock()
	old := w.f
	w.f = f
	w.mu.Unlock()
	if err := old.Close(); err != nil {
		return fmt.Errorf("close rotated output file: %w", err)
	}
	return nil
}

// Close closes the file.
func (w *File) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("close output file %s: %w", w.path, err)
	}
	return nil
}
