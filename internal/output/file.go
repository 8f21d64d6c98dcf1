package output

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"escapewatch/internal/finding"
)

// File appends findings as JSON lines to a file and fsyncs each one, so that a finding written is a finding
// kept, even if the machine loses power right after.
type File struct {
	mu   sync.Mutex // Reopen runs from a signal handler's goroutine while Deliver runs from the Dispatcher's
	path string
	f    *os.File
}

// NewFile opens path for appending, readable by its owner only: findings name processes and files that an
// unprivileged user should not learn about. A pre-existing file is made 0600 too, and a symbolic link, a FIFO or
// a device at path is refused: whoever can write the directory must not be able to send the sensor's writes
// (as root) to another file.
func NewFile(path string) (*File, error) {
	f, err := openAppend(path)
	if err != nil {
		return nil, err
	}
	return &File{path: path, f: f}, nil
}

// openAppend opens path without following a symbolic link in its last component (O_NOFOLLOW), never blocking
// on a FIFO (O_NONBLOCK, cleared once path is known to be a regular file), and sets its mode to 0600.
func openAppend(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0o600)
	switch {
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("open output file %s: %w: it is a symbolic link, which is refused (a link could send findings "+
			"to any file the sensor can write); give the path of a regular file", path, err)
	case errors.Is(err, unix.ENXIO):
		return nil, fmt.Errorf("open output file %s: %w: it is a FIFO or socket; give the path of a regular file", path, err)
	case err != nil:
		return nil, fmt.Errorf("open output file %s: %w (check that the directory exists and is writable)", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stat output file %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("open output file %s: not a regular file (mode %#o): give the path of a regular file", path, st.Mode&unix.S_IFMT)
	}
	// A file that existed keeps its mode through O_CREAT: make it the owner's only, as a new one is.
	if st.Mode&0o7777 != 0o600 {
		if err := unix.Fchmod(fd, 0o600); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("output file %s: make it mode 0600: %w", path, err)
		}
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("output file %s: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
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
