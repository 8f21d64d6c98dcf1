package output

import (
	"bytes"
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

	"escapewatch/internal/finding"
)

// DefaultSpoolMaxBytes bounds a spool when SpoolOptions.MaxBytes is 0.
const DefaultSpoolMaxBytes = 64 << 20

// Room kept for summaries of what a spool shed, besides MaxBytes: 1/64 of it, at least minSummaryRoom. A
// summary is a few hundred bytes and at most one per rule is written per interval, so this holds hours of them.
const (
	summaryRoomShare = 64
	minSummaryRoom   = 16 << 10
)

const (
	entrySuffix = ".json"
	tmpSuffix   = ".tmp"
	badSuffix   = ".bad"
	lockName    = "lock"
)

// SpoolOptions bound a spool.
type SpoolOptions struct {
	MaxBytes   int64 // total size of the findings' JSON lines; 0 means DefaultSpoolMaxBytes
	MaxEntries int   // findings; 0 means no bound besides MaxBytes
}

// Record is a line to spool with what the spool needs to know to shed it.
type Record struct {
	Line []byte
	Rank finding.Rank
	Rule string // the rule whose finding it is, for the summary of what was shed
	// Summary marks a summary of shed findings: it goes into the room kept for summaries, is never shed to
	// make room for a finding, and sheds nothing.
	Summary bool
}

// Shed is a finding a Commit did not keep: one of the records given (Index) or, Index -1, one already spooled
// that a more important record pushed out.
type Shed struct {
	Rule  string
	Rank  finding.Rank
	Index int
}

// Spool is a bounded, durable FIFO of JSON lines in a directory; see the package comment for its design. One
// goroutine commits while another reads (Peek) and removes.
type Spool struct {
	dir         string
	opts        SpoolOptions
	summaryRoom int64
	lock        *os.File
	// commitMu serialises Commit and Tidy: they alone rename and remove segment files, so a file they read is
	// not changed under them.
	commitMu sync.Mutex
	// files orders Peek's reads of segment files with the renames and removals that move entries between files.
	files sync.RWMutex

	mu      sync.Mutex               // guards the index below; never held during I/O
	entries []*spoolEntry            // in order of seq; dead ones linger until compact drops them
	head    int                      // entries[:head] are dead
	dead    int                      // dead entries in entries
	cursor  [finding.MaxRank + 1]int // no live finding of that rank sits before this index, besides the one in flight
	count   [finding.MaxRank + 1]int // live findings (not summaries) by rank
	size    [finding.MaxRank + 1]int64
	total   struct {
		findings, summaries        int
		findingBytes, summaryBytes int64
	}
	next     uint64
	inflight uint64     // the seq Peek handed out (0: none): it is being delivered, so it is never shed
	empty    []*segment // segments whose every entry is done with, to remove

	appended chan struct{} // has a value after a commit, for a reader waiting on an empty spool
}

// spoolEntry is one line of a segment file.
type spoolEntry struct {
	seq       uint64
	seg       *segment
	off, size int64 // where the line is in its segment's file
	rank      finding.Rank
	rule      string
	summary   bool
	dead      bool // delivered, shed or quarantined
	pending   bool // in a commit not yet durable: not to be delivered yet
}

// segment is one file: the lines of seqs first, first+1, ... first+n-1.
type segment struct {
	first    uint64
	n, live  int
	replaced bool // its file now holds another segment (a compaction): never remove it by this name
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
	s := &Spool{dir: dir, opts: opts, summaryRoom: max(opts.MaxBytes/summaryRoomShare, minSummaryRoom), lock: lock, next: 1,
		appended: make(chan struct{}, 1)}
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

// load indexes the segments on disk, removes temporary files of commits that a crash interrupted, and resolves
// what a crash in the middle of a compaction left: the segment and some of the files it was being split into,
// which hold seqs it holds too. The segment is kept (it holds them all), the others removed.
func (s *Spool) load() error {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("read spool directory: %w", err)
	}
	var firsts []uint64
	for _, de := range des {
		name := de.Name()
		if strings.HasSuffix(name, tmpSuffix) {
			if err := os.Remove(filepath.Join(s.dir, name)); err != nil {
				return fmt.Errorf("remove interrupted spool entry: %w", err)
			}
			continue
		}
		if seq, ok := parseEntryName(name); ok {
			firsts = append(firsts, seq)
		} // else the lock, quarantined *.bad entries, anything an operator put there
	}
	slices.Sort(firsts)
	for _, first := range firsts {
		if first < s.next {
			if err := os.Remove(s.path(first)); err != nil {
				return fmt.Errorf("remove the rest of an interrupted spool compaction: %w", err)
			}
			continue
		}
		data, err := os.ReadFile(s.path(first))
		if err != nil {
			return fmt.Errorf("spool entry %s: %w", entryName(first), err)
		}
		seg := &segment{first: first}
		for off := 0; off < len(data); {
			end := bytes.IndexByte(data[off:], '\n') + 1
			if end == 0 {
				end = len(data) - off // a last line without its newline: an operator's edit; quarantined if bad
			}
			line := data[off : off+end]
			e := &spoolEntry{seq: first + uint64(seg.n), seg: seg, off: int64(off), size: int64(end)}
			if f, err := decodeLine(line); err == nil { // an undecodable line ranks lowest; delivery quarantines it
				e.rank, e.rule, e.summary = finding.RankOf(&f), f.SigMetadata.ID, f.SigMetadata.ID == ShedRuleID
			}
			s.add(e)
			seg.n++
			off += end
		}
		seg.live = seg.n
		if seg.n == 0 {
			s.empty = append(s.empty, seg)
		}
		s.next = first + uint64(seg.n)
		if seg.n == 0 {
			s.next = first + 1
		}
	}
	return nil
}

// add indexes a live entry; mu is held (or the spool not yet shared).
func (s *Spool) add(e *spoolEntry) {
	s.entries = append(s.entries, e)
	if e.summary {
		s.total.summaries++
		s.total.summaryBytes += e.size
		return
	}
	s.count[e.rank]++
	s.size[e.rank] += e.size
	s.total.findings++
	s.total.findingBytes += e.size
}

// kill marks a live entry done with; mu is held.
func (s *Spool) kill(e *spoolEntry) {
	e.dead = true
	s.dead++
	if e.summary {
		s.total.summaries--
		s.total.summaryBytes -= e.size
	} else {
		s.count[e.rank]--
		s.size[e.rank] -= e.size
		s.total.findings--
		s.total.findingBytes -= e.size
	}
	if e.seg != nil && !e.pending {
		if e.seg.live--; e.seg.live == 0 {
			s.empty = append(s.empty, e.seg)
		}
	}
}

// revive undoes kill, for a commit that failed to write what it shed room for; mu is held.
func (s *Spool) revive(e *spoolEntry) {
	e.dead = false
	s.dead--
	s.count[e.rank]++
	s.size[e.rank] += e.size
	s.total.findings++
	s.total.findingBytes += e.size
	if e.seg.live++; e.seg.live == 1 {
		s.empty = slices.DeleteFunc(s.empty, func(g *segment) bool { return g == e.seg })
	}
	s.cursor[e.rank] = s.head
}

// entryName is zero-padded so that a directory listing shows the segments in order.
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

// Commit stores records durably, all in one new segment file: one write and one fsync of the file, one of the
// directory, however many records (a group commit). It returns once they are on disk, or could not be.
//
// Records that do not fit are shed by rank: a record takes the room of the oldest spooled findings of the
// lowest rank below its own (in this commit or earlier ones, never the one being delivered), and is shed
// itself when those are not enough. A segment that lost some lines to that is rewritten without them, so the
// disk holds what the spool counts. shed lists every finding lost, whatever err says; err is a failure to
// write, after which the records are shed and what they would have pushed out is kept.
func (s *Spool) Commit(recs []Record) (shed []Shed, err error) {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.Lock()
	pending := make([]*spoolEntry, len(recs))
	var victims []*spoolEntry
	for i, rec := range recs {
		e := &spoolEntry{size: int64(len(rec.Line)), rank: min(max(rec.Rank, 0), finding.MaxRank), rule: rec.Rule,
			summary: rec.Summary, pending: true}
		if !s.room(e, &victims) {
			shed = append(shed, Shed{Rule: rec.Rule, Rank: e.rank, Index: i})
			continue
		}
		s.add(e)
		pending[i] = e
	}
	// Victims among this commit's own records are shed like those refused; the others are in segments to
	// rewrite.
	touched := map[*segment]bool{}
	for _, v := range victims {
		if v.pending {
			i := slices.Index(pending, v)
			shed = append(shed, Shed{Rule: v.rule, Rank: v.rank, Index: i})
			pending[i] = nil
			continue
		}
		shed = append(shed, Shed{Rule: v.rule, Rank: v.rank, Index: -1})
		touched[v.seg] = true
	}
	s.dropShedTail(len(recs))
	var seg *segment
	var data []byte
	for i, e := range pending {
		if e == nil {
			continue
		}
		if seg == nil {
			seg = &segment{first: s.next}
		}
		e.seq, e.seg, e.off = s.next, seg, int64(len(data))
		s.next++
		seg.n++
		data = append(data, recs[i].Line...)
	}
	if seg != nil {
		seg.live = seg.n
	}
	rewrite := s.planRewrites(touched)
	s.mu.Unlock()

	if seg != nil {
		if err := writeSynced(s.path(seg.first)+tmpSuffix, data); err != nil {
			return s.failCommit(recs, pending, victims, shed, seg, err)
		}
	}
	var errs []error
	s.writeRewrites(rewrite, &errs)
	s.files.Lock()
	defer s.files.Unlock()
	if seg != nil {
		if err := os.Rename(s.path(seg.first)+tmpSuffix, s.path(seg.first)); err != nil {
			os.Remove(s.path(seg.first) + tmpSuffix)
			s.abandon(rewrite)
			return s.failCommit(recs, pending, victims, shed, seg, err)
		}
	}
	if err := s.renameRewrites(rewrite, false); err != nil {
		errs = append(errs, err)
	}
	if seg != nil || len(rewrite) > 0 {
		if err := syncDir(s.dir); err != nil && seg != nil {
			// Whether the new files reached the disk is unknown: take them back, keep what the segment shed.
			os.Remove(s.path(seg.first))
			s.abandon(rewrite)
			return s.failCommit(recs, pending, victims, shed, seg, err)
		} else if err != nil {
			errs = append(errs, err)
		}
	}
	// The new files are durable; the segments they replace go. If a crash undoes that, the old segment is
	// found whole at the next start, the lines shed from it come back, and the spool keeps them.
	if err := s.renameRewrites(rewrite, true); err != nil {
		errs = append(errs, err)
	}
	s.mu.Lock()
	for _, e := range pending {
		if e != nil {
			e.pending = false
		}
	}
	s.applyRewrites(rewrite)
	gone := s.takeEmpty()
	s.compact()
	s.mu.Unlock()
	s.removeSegments(gone, &errs)
	if seg != nil {
		select {
		case s.appended <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
	if len(errs) > 0 {
		return shed, fmt.Errorf("spool %s: %w (check free space and permissions)", s.dir, errors.Join(errs...))
	}
	return shed, nil
}

// abandon removes the files of rewrites that will not happen: their runs, written or already renamed (those
// named like the segment they rewrite are renamed last, so the segment is still whole).
func (s *Spool) abandon(rws []*rewrite) {
	for _, rw := range rws {
		for _, r := range rw.runs {
			os.Remove(s.path(r.first) + tmpSuffix)
			if r.first != rw.old.first && rw.err == nil {
				os.Remove(s.path(r.first))
			}
		}
		rw.err = errAbandoned
	}
}

var errAbandoned = errors.New("abandoned with its commit")

// dropShedTail takes the records of the commit being planned that were shed again out of the index: they were
// added last, and have no seq to keep the index in order by. mu is held.
func (s *Spool) dropShedTail(n int) {
	tail := max(len(s.entries)-n, s.head)
	kept := s.entries[:tail]
	for _, e := range s.entries[tail:] {
		if e.pending && e.dead {
			s.dead--
			continue
		}
		kept = append(kept, e)
	}
	clear(s.entries[len(kept):])
	s.entries = kept
	for r := range s.cursor {
		s.cursor[r] = min(s.cursor[r], tail) // what followed a dropped entry moved down: look at it again
	}
}

// failCommit undoes a commit whose segment could not be written: its records are shed, its victims kept.
func (s *Spool) failCommit(recs []Record, pending, victims []*spoolEntry, shed []Shed, seg *segment, cause error) ([]Shed, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range pending {
		if e != nil {
			s.kill(e)
			shed = append(shed, Shed{Rule: recs[i].Rule, Rank: e.rank, Index: i})
		}
	}
	shed = slices.DeleteFunc(shed, func(sh Shed) bool { return sh.Index < 0 })
	for _, v := range victims {
		if !v.pending {
			s.revive(v)
		}
	}
	slices.SortFunc(shed, func(a, b Shed) int { return cmp.Compare(a.Index, b.Index) })
	return shed, fmt.Errorf("spool segment %d in %s: %w (check free space and permissions)", seg.first, s.dir, cause)
}

// room makes room for e, shedding the oldest findings ranked below it into victims; false (and nothing shed)
// when that is not enough. mu is held.
func (s *Spool) room(e *spoolEntry, victims *[]*spoolEntry) bool {
	if e.summary {
		return s.total.summaryBytes+e.size <= s.summaryRoom
	}
	fits := func() bool {
		return s.total.findingBytes+e.size <= s.opts.MaxBytes && (s.opts.MaxEntries <= 0 || s.total.findings < s.opts.MaxEntries)
	}
	if fits() {
		return true
	}
	if e.size > s.opts.MaxBytes {
		return false
	}
	var n int
	var size int64
	for r := range e.rank {
		n, size = n+s.count[r], size+s.size[r]
	}
	if f := s.flight(); f != nil && !f.summary && f.rank < e.rank {
		n, size = n-1, size-f.size
	}
	if s.total.findingBytes-size+e.size > s.opts.MaxBytes || (s.opts.MaxEntries > 0 && s.total.findings-n >= s.opts.MaxEntries) {
		return false
	}
	for !fits() {
		v := s.oldestBelow(e.rank)
		s.kill(v)
		*victims = append(*victims, v)
	}
	return true
}

// flight is the entry being delivered, if it is live; mu is held.
func (s *Spool) flight() *spoolEntry {
	if s.inflight == 0 {
		return nil
	}
	if i, ok := s.find(s.inflight); ok && !s.entries[i].dead {
		return s.entries[i]
	}
	return nil
}

// oldestBelow is the oldest live finding of the lowest rank below rank, not the one in flight; room checked
// there is one. mu is held.
func (s *Spool) oldestBelow(rank finding.Rank) *spoolEntry {
	for r := range rank {
		if s.count[r] == 0 {
			continue
		}
		s.cursor[r] = max(s.cursor[r], s.head)
		for i := s.cursor[r]; i < len(s.entries); i++ {
			// The one in flight is skipped for good: it stays in flight until it is done with.
			if e := s.entries[i]; !e.dead && !e.summary && e.rank == r && (e.pending || e.seq != s.inflight) {
				return e
			}
			s.cursor[r] = i + 1 // no candidate of rank r up to here: the next search starts after
		}
	}
	panic("spool: room counted findings to shed that are not in the index")
}

// find is the index in entries of seq; mu is held.
func (s *Spool) find(seq uint64) (int, bool) {
	i, ok := slices.BinarySearchFunc(s.entries[s.head:], seq, func(e *spoolEntry, seq uint64) int {
		if e.pending && e.seg == nil {
			return 1 // a record of the commit being planned: after every seq
		}
		return cmp.Compare(e.seq, seq)
	})
	return s.head + i, ok
}

// rewrite is a segment that lost lines to shedding, and the runs of lines it keeps, each to be a segment file
// of its own (a segment holds consecutive seqs).
type rewrite struct {
	old  *segment
	runs []run
	err  error
}

type run struct {
	first    uint64
	from, to int64 // the run's bytes in the old file
	entries  []*spoolEntry
}

// planRewrites finds the runs of live lines of each touched segment; mu is held.
func (s *Spool) planRewrites(touched map[*segment]bool) []*rewrite {
	var out []*rewrite
	for seg := range touched {
		rw := &rewrite{old: seg}
		if seg.live > 0 {
			i, _ := s.find(seg.first)
			var cur *run
			for ; i < len(s.entries) && s.entries[i].seg == seg; i++ {
				e := s.entries[i]
				if e.dead {
					cur = nil
					continue
				}
				if cur == nil || e.seq != cur.first+uint64(len(cur.entries)) {
					rw.runs = append(rw.runs, run{first: e.seq, from: e.off})
					cur = &rw.runs[len(rw.runs)-1]
				}
				cur.entries = append(cur.entries, e)
				cur.to = e.off + e.size
			}
		}
		out = append(out, rw)
	}
	return out
}

// writeRewrites writes each run to a fsynced temporary file. A segment that cannot be rewritten stays as it is
// (its shed lines stay on disk until it is delivered); its error joins errs.
func (s *Spool) writeRewrites(rws []*rewrite, errs *[]error) {
	for _, rw := range rws {
		if len(rw.runs) == 0 {
			continue
		}
		data, err := os.ReadFile(s.path(rw.old.first))
		for i := 0; err == nil && i < len(rw.runs); i++ {
			r := rw.runs[i]
			err = writeSynced(s.path(r.first)+tmpSuffix, data[r.from:r.to])
		}
		if err != nil {
			s.abandon([]*rewrite{rw})
			rw.err = fmt.Errorf("rewrite segment %d without the lines it shed: %w", rw.old.first, err)
			*errs = append(*errs, rw.err)
		}
	}
}

// renameRewrites puts the runs in place: first (replace false) those under new names, which a crash leaves
// next to the old segment, then (replace true) the run named like the old segment, which replaces it, and the
// old segments that keep nothing. files is write-locked.
func (s *Spool) renameRewrites(rws []*rewrite, replace bool) error {
	var errs []error
	for _, rw := range rws {
		if rw.err != nil {
			continue
		}
		for _, r := range rw.runs {
			if (r.first == rw.old.first) == replace {
				if err := os.Rename(s.path(r.first)+tmpSuffix, s.path(r.first)); err != nil {
					rw.err = err
					errs = append(errs, err)
				}
			}
		}
		if replace && rw.err == nil && (len(rw.runs) == 0 || rw.runs[0].first != rw.old.first) {
			if err := os.Remove(s.path(rw.old.first)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// applyRewrites points the entries of the rewritten segments at their new files; mu and files are held.
func (s *Spool) applyRewrites(rws []*rewrite) {
	for _, rw := range rws {
		if rw.err != nil {
			continue
		}
		rw.old.replaced = true
		for _, r := range rw.runs {
			seg := &segment{first: r.first, n: len(r.entries)}
			for _, e := range r.entries {
				e.seg, e.off = seg, e.off-r.from
				if !e.dead {
					seg.live++
				}
			}
			if seg.live == 0 {
				s.empty = append(s.empty, seg)
			}
		}
	}
}

// takeEmpty returns the segments to remove; mu is held.
func (s *Spool) takeEmpty() []*segment {
	gone := slices.DeleteFunc(s.empty, func(seg *segment) bool { return seg.replaced || seg.live != 0 })
	s.empty = nil
	return gone
}

// removeSegments unlinks segments whose every line is done with. The directory is not fsynced: if a crash undoes
// a removal, its lines are delivered again (at least once allows that) or found shed again.
func (s *Spool) removeSegments(gone []*segment, errs *[]error) {
	for _, seg := range gone {
		if err := os.Remove(s.path(seg.first)); err != nil && !errors.Is(err, os.ErrNotExist) {
			*errs = append(*errs, fmt.Errorf("remove delivered spool segment: %w", err))
		}
	}
}

// compact drops dead entries from the index once they are most of it; mu is held.
func (s *Spool) compact() {
	for s.head < len(s.entries) && s.entries[s.head].dead {
		s.head++
	}
	if s.dead < 1024 || s.dead < len(s.entries)/2 {
		return
	}
	live := make([]*spoolEntry, 0, len(s.entries)-s.dead)
	for _, e := range s.entries[s.head:] {
		if !e.dead {
			live = append(live, e)
		}
	}
	s.entries, s.head, s.dead = live, 0, 0
	s.cursor = [finding.MaxRank + 1]int{}
}

// Tidy removes the files of segments delivered since the last Commit. Commit does it too; Tidy is for a spool
// that takes no new findings.
func (s *Spool) Tidy() error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.Lock()
	gone := s.takeEmpty()
	s.compact()
	s.mu.Unlock()
	var errs []error
	s.files.Lock()
	s.removeSegments(gone, &errs)
	s.files.Unlock()
	if len(errs) > 0 {
		return fmt.Errorf("spool %s: %w", s.dir, errors.Join(errs...))
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
	if err != nil {
		os.Remove(path)
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

// Peek returns the oldest entry not yet done with, and marks it in flight: no Commit sheds it until it is
// Removed or Quarantined. ok is false when there is none. An error means the entry could not be read:
// Quarantine it, or it blocks the spool.
func (s *Spool) Peek() (e Entry, ok bool, err error) {
	s.files.RLock()
	defer s.files.RUnlock()
	s.mu.Lock()
	s.compact()
	if s.head == len(s.entries) || s.entries[s.head].pending {
		s.mu.Unlock()
		return Entry{}, false, nil
	}
	head := *s.entries[s.head]
	s.inflight = head.seq
	s.mu.Unlock()
	line := make([]byte, head.size)
	f, err := os.Open(s.path(head.seg.first))
	if err == nil {
		_, err = f.ReadAt(line, head.off)
		f.Close()
	}
	if err != nil {
		return Entry{Seq: head.seq}, true, fmt.Errorf("read spool entry %d: %w", head.seq, err)
	}
	return Entry{Seq: head.seq, Line: line}, true, nil
}

// Remove marks a delivered entry done with; its segment's file goes once all its lines are (at the next Commit
// or Tidy). If a crash comes first, the entry is delivered again, which at-least-once allows.
func (s *Spool) Remove(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forget(seq)
}

// Quarantine takes an entry that cannot be read or decoded out of the way, keeping line (what could be read of
// it, if anything) as <seq>.json.bad for inspection.
func (s *Spool) Quarantine(seq uint64, line []byte) error {
	s.mu.Lock()
	s.forget(seq)
	s.mu.Unlock()
	if line == nil {
		return nil
	}
	if err := writeSynced(s.path(seq)+badSuffix, line); err != nil {
		return fmt.Errorf("keep the unreadable spool entry for inspection: %w", err)
	}
	return nil
}

// forget marks seq done with; mu is held.
func (s *Spool) forget(seq uint64) {
	if seq == s.inflight {
		s.inflight = 0
	}
	if i, ok := s.find(seq); ok && !s.entries[i].dead {
		s.kill(s.entries[i])
	}
	s.compact()
}

// Len is the number of entries and their total size in bytes.
func (s *Spool) Len() (entries int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total.findings + s.total.summaries, s.total.findingBytes + s.total.summaryBytes
}

// Appended has a value after a commit; a reader that found the spool empty waits on it.
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
