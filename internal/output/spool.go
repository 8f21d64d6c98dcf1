package output

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// DefaultSpoolMaxBytes bounds a spool when SpoolOptions.MaxBytes is 0.
const DefaultSpoolMaxBytes = 64 << 20

// ErrSpoolFull is returned by Spool.Append when the entry would exceed the spool's bounds.
var ErrSpoolFull = errors.New("spool full")

const (
	entrySuffix = ".json"
	tmpSuffix   = ".tmp"
	badSuffix   = ".bad"
	lockName    = "lock"
)

// SpoolOptions bound a spool.
type SpoolOptions struct {
	MaxBytes   int64 // total size of the entries' JSON lines; 0 means DefaultSpoolMaxBytes
	MaxEntries int   // 0 means no bound besides MaxBytes
}

// Spool is a bounded, durable FIFO of JSON lines in a directory; see the package comment for its design. One
// goroutine may append while another reads and removes.
type Spool struct {
	dir      string
	opts     SpoolOptions
	lock     *os.File
	appendMu sync.Mutex // serialises appends, so that sequence numbers reach the index in order

	mu      sync.Mutex // guards the fields below
	entries []spoolEntry
	bytes   int64
	next    uint64

	appended chan struct{} // has a value after an append, for a reader waiting on an empty spool
}

type spoolEntry struct {
	seq  uint64
	size int64
}

// Entry is one spooled line.
type Entry struct {
	Seq  uint64
	Line []byte
}

// OpenSpool opens the spool in dir, creating it (mode 0700) if needed, and indexes what a previous run left.
func OpenSpool(dir string, opts SpoolOptions) (*Spool, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultSpoolMaxBytes
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create spool directory: %w (choose a writable spool directory)", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Spool{dir: dir, opts: opts, lock: lock, next: 1, appended: make(chan struct{}, 1)}
	if err := s.load(); err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

// lockDir takes an exclusive flock on dir/lock: two processes appending to one spool would reuse sequence
// numbers. The kernel releases it when the process dies, so a killed sensor does not lock out its successor.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open spool lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock spool %s: %w (another escapewatch uses it; give each instance its own spool directory)", dir, err)
	}
	return f, nil
}

// load indexes the entries on disk and removes temporary files of appends that a crash interrupted.
func (s *Spool) load() error {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("read spool directory: %w", err)
	}
	for _, de := range des {
		name := de.Name()
		if strings.HasSuffix(name, tmpSuffix) {
			if err := os.Remove(filepath.Join(s.dir, name)); err != nil {
				return fmt.Errorf("remove interrupted spool entry: %w", err)
			}
			continue
		}
		seq, ok := parseEntryName(name)
		if !ok {
			continue // the lock, quarantined *.bad entries, anything an operator put there
		}
		info, err := de.Info()
		if err != nil {
			return fmt.Errorf("spool entry %s: %w", name, err)
		}
		s.entries = append(s.entries, spoolEntry{seq: seq, size: info.Size()})
		s.bytes += info.Size()
	}
	slices.SortFunc(s.entries, func(a, b spoolEntry) int { return cmp.Compare(a.seq, b.seq) })
	if n := len(s.entries); n > 0 {
		s.next = s.entries[n-1].seq + 1
	}
	return nil
}

// entryName is zero-padded so that a directory listing shows the entries in order.
func entryName(seq uint64) string { return fmt.Sprintf("%020d%s", seq, entrySuffix) }

func parseEntryName(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, entrySuffix)
	if !ok || len(digits) != 20 {
		return 0, false
	}
	seq, err := strconv.ParseUint(digits, 10, 64)
	return seq, err == nil
}

func (s *Spool) path(seq uint64) string { return filepath.Join(s.dir, entryName(seq)) }

// Append stores line durably (fsynced, as is the directory) before it returns. It returns an error wrapping
// ErrSpoolFull, and stores nothing, when the line would exceed the spool's bounds.
func (s *Spool) Append(line []byte) error {
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	seq, err := s.reserve(int64(len(line)))
	if err != nil {
		return err
	}
	if err := s.write(seq, line); err != nil {
		return err
	}
	s.mu.Lock()
	s.entries = append(s.entries, spoolEntry{seq: seq, size: int64(len(line))})
	s.bytes += int64(len(line))
	s.mu.Unlock()
	select {
	case s.appended <- struct{}{}:
	default: // a wake-up is already pending
	}
	return nil
}

// reserve checks the bounds and takes the next sequence number. Only Append adds entries, under appendMu, so
// the room found here is still there when the entry is added.
func (s *Spool) reserve(size int64) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bytes+size > s.opts.MaxBytes || (s.opts.MaxEntries > 0 && len(s.entries) >= s.opts.MaxEntries) {
		return 0, fmt.Errorf("%w: %s holds %d entries, %d bytes (bounds: %d entries, %d bytes; raise them or fix the sink)",
			ErrSpoolFull, s.dir, len(s.entries), s.bytes, s.opts.MaxEntries, s.opts.MaxBytes)
	}
	seq := s.next
	s.next++ // even if the write fails, so that a half-written final file is never reused
	return seq, nil
}

// write makes the entry appear whole or not at all: temporary file, fsync, rename, fsync of the directory.
func (s *Spool) write(seq uint64, line []byte) error {
	tmp := s.path(seq) + tmpSuffix
	err := writeSynced(tmp, line)
	if err == nil {
		err = os.Rename(tmp, s.path(seq))
	}
	if err == nil {
		err = syncDir(s.dir)
		if err != nil {
			os.Remove(s.path(seq))
		}
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spool entry %d in %s: %w (check free space and permissions)", seq, s.dir, err)
	}
	return nil
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Peek returns the oldest entry; ok is false when the spool is empty. An error means the entry could not be
// read: Quarantine it, or it blocks the spool.
func (s *Spool) Peek() (e Entry, ok bool, err error) {
	s.mu.Lock()
	if len(s.entries) == 0 {
		s.mu.Unlock()
		return Entry{}, false, nil
	}
	seq := s.entries[0].seq
	s.mu.Unlock()
	line, err := os.ReadFile(s.path(seq))
	if err != nil {
		return Entry{Seq: seq}, true, fmt.Errorf("read spool entry: %w", err)
	}
	return Entry{Seq: seq, Line: line}, true, nil
}

// Remove deletes a delivered entry. The directory is not fsynced: if a crash undoes the removal, the entry is
// delivered again, which at-least-once allows.
func (s *Spool) Remove(seq uint64) error {
	s.forget(seq)
	if err := os.Remove(s.path(seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove delivered spool entry: %w", err)
	}
	return nil
}

// Quarantine moves an entry that cannot be read or decoded out of the way, to name.bad, for inspection.
func (s *Spool) Quarantine(seq uint64) error {
	s.forget(seq)
	p := s.path(seq)
	if err := os.Rename(p, p+badSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("quarantine spool entry: %w", err)
	}
	return nil
}

func (s *Spool) forget(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.entries, func(e spoolEntry) bool { return e.seq == seq })
	if i < 0 {
		return
	}
	s.bytes -= s.entries[i].size
	if i == 0 {
		s.entries = s.entries[1:] // the usual case, without copying the rest
		return
	}
	s.entries = slices.Delete(s.entries, i, i+1)
}

// Len is the number of entries and their total size in bytes.
func (s *Spool) Len() (entries int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries), s.bytes
}

// Appended has a value after an append; a reader that found the spool empty waits on it.
func (s *Spool) Appended() <-chan struct{} { return s.appended }

// Dir is the spool's directory.
func (s *Spool) Dir() string { return s.dir }

// Close releases the lock. The entries stay on disk for the next OpenSpool.
func (s *Spool) Close() error {
	if err := s.lock.Close(); err != nil {
		return fmt.Errorf("close spool lock: %w", err)
	}
	return nil
}
