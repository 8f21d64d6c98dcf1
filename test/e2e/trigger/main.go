// Command trigger performs one way of opening, renaming or inspecting a file, for the end-to-end tests. Before
// acting it prints "HOSTPID NSPID COMM" on one line so the test knows exactly which process to expect in a finding.
//
//	trigger METHOD PATH [ARG]
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"escapewatch/internal/event"
)

const agentValue = "/escapewatch-e2e-payload\n"

func main() {
	if len(os.Args) < 3 {
		fail(fmt.Errorf("usage: trigger METHOD PATH [ARG]"))
	}
	method, path := os.Args[1], os.Args[2]
	// /proc is the host's (the tests do not remount it), so /proc/self names this process in the host's pid
	// namespace while getpid() answers in its own.
	self, err := os.Readlink("/proc/self")
	if err != nil {
		fail(err)
	}
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		fail(err)
	}
	fmt.Printf("%s %d %s", self, os.Getpid(), comm)
	if err := act(method, path, os.Args[3:]); err != nil {
		fail(fmt.Errorf("%s %s: %w", method, path, err))
	}
}

func act(method, path string, rest []string) error {
	switch method {
	case "open": // open PATH FLAGS, e.g. "O_WRONLY|O_APPEND"
		if len(rest) != 1 {
			return fmt.Errorf("open needs FLAGS")
		}
		flags, err := event.ParseOpenFlags(rest[0])
		if err != nil {
			return err
		}
		fd, err := unix.Open(path, flags, 0o644)
		if err != nil {
			return err
		}
		return writeAndClose(fd, flags)
	case "open2": // open2 PATH FLAGS: the same through open(2) itself (amd64)
		if len(rest) != 1 {
			return fmt.Errorf("open2 needs FLAGS")
		}
		flags, err := event.ParseOpenFlags(rest[0])
		if err != nil {
			return err
		}
		fd, err := legacyOpen(path, flags)
		if err != nil {
			return err
		}
		return writeAndClose(fd, flags)
	case "creat": // creat(2) (amd64)
		fd, err := legacyCreat(path)
		if err != nil {
			return err
		}
		return writeAndClose(fd, unix.O_WRONLY)
	case "openat2":
		fd, err := unix.Openat2(unix.AT_FDCWD, path, &unix.OpenHow{Flags: unix.O_WRONLY})
		if err != nil {
			return err
		}
		return writeAndClose(fd, unix.O_WRONLY)
	case "procfd": // reopen an O_PATH descriptor for writing through /proc/self/fd
		pfd, err := unix.Open(path, unix.O_PATH, 0)
		if err != nil {
			return err
		}
		defer unix.Close(pfd)
		fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(pfd), unix.O_WRONLY, 0)
		if err != nil {
			return err
		}
		return writeAndClose(fd, unix.O_WRONLY)
	case "symlink": // open through a symlink LINK (rest[0]) that points at PATH
		if len(rest) != 1 {
			return fmt.Errorf("symlink needs LINK")
		}
		if err := os.Symlink(path, rest[0]); err != nil {
			return err
		}
		fd, err := unix.Open(rest[0], unix.O_WRONLY, 0)
		if err != nil {
			return err
		}
		return writeAndClose(fd, unix.O_WRONLY)
	case "handle":
		return byHandle(path)
	case "iouring":
		return ioUringOpen(path, false)
	case "iouring-fixed":
		return ioUringOpen(path, true)
	case "iouring-decoys": // iouring-decoys PATH: open and write PATH with io_uring, among no-ops of the same user_data
		return ioUringDecoys(path, false)
	case "iouring-async": // iouring-async PATH: the same, every request in an io-wq worker
		return ioUringDecoys(path, true)
	case "iouring-flood": // iouring-flood PATH: the same, with 20000 requests held in flight meanwhile
		return ioUringFlood(path)
	case "fsconfig": // fsconfig PATH(ignored) NAME VALUE...: a named cgroup v1 context with release_agent, never mounted
		if len(rest) < 2 {
			return errors.New("fsconfig needs NAME VALUE (more pairs may follow)")
		}
		fd, err := unix.Fsopen("cgroup", unix.FSOPEN_CLOEXEC)
		if err != nil {
			return fmt.Errorf("fsopen: %w", err)
		}
		defer unix.Close(fd)
		if err := unix.FsconfigSetString(fd, "name", rest[0]); err != nil {
			return fmt.Errorf("fsconfig name: %w", err)
		}
		for _, value := range rest[1:] { // the kernel refuses a second value
			if err := unix.FsconfigSetString(fd, "release_agent", value); err != nil {
				return fmt.Errorf("fsconfig release_agent=%s: %w", value, err)
			}
		}
		return nil
	case "fsmount": // fsmount PATH(ignored) NAME VALUE: write VALUE into the release_agent of a new hierarchy NAME
		// mounted with fsmount and never attached anywhere: no path names the file
		if len(rest) != 2 {
			return fmt.Errorf("fsmount needs NAME VALUE")
		}
		return writeDetached(rest[0], []byte(rest[1]))
	case "fspick": // fspick PATH NAME VALUE: reconfigure hierarchy NAME mounted at PATH with release_agent=VALUE
		if len(rest) != 2 {
			return fmt.Errorf("fspick needs NAME VALUE")
		}
		fd, err := unix.Fspick(unix.AT_FDCWD, path, unix.FSPICK_CLOEXEC)
		if err != nil {
			return fmt.Errorf("fspick: %w", err)
		}
		defer unix.Close(fd)
		// The options the hierarchy was made with: without "none" the context asks for every controller (EBUSY),
		// and the name may not change (EINVAL).
		if err := unix.FsconfigSetFlag(fd, "none"); err != nil {
			return fmt.Errorf("fsconfig none: %w", err)
		}
		if err := unix.FsconfigSetString(fd, "name", rest[0]); err != nil {
			return fmt.Errorf("fsconfig name: %w", err)
		}
		if err := unix.FsconfigSetString(fd, "release_agent", rest[1]); err != nil {
			return fmt.Errorf("fsconfig release_agent: %w", err)
		}
		return unix.FsconfigReconfigure(fd)
	case "mount-race": // mount-race DIR NAME VALUE COUNT: COUNT cgroup mounts with release_agent=VALUE<i> while
		// another thread keeps flipping a byte of the data; prints the values of the mounts that succeeded
		if len(rest) != 3 {
			return fmt.Errorf("mount-race needs NAME VALUE COUNT")
		}
		count, err := strconv.Atoi(rest[2])
		if err != nil {
			return err
		}
		return mountRace(path, rest[0], rest[1], count)
	case "iouring-write": // iouring-write PATH VALUE: open(2) PATH, write VALUE with IORING_OP_WRITE
		if len(rest) != 1 {
			return fmt.Errorf("iouring-write needs VALUE")
		}
		return ioUringWrite(path, []byte(rest[0]))
	case "iouring-splice": // iouring-splice PATH VALUE: open(2) PATH, write VALUE with IORING_OP_SPLICE from a pipe
		if len(rest) != 1 {
			return fmt.Errorf("iouring-splice needs VALUE")
		}
		return ioUringSplice(path, []byte(rest[0]))
	case "recvfd": // recvfd SOCKET VALUE: write VALUE through a descriptor received on the unix socket SOCKET
		if len(rest) != 1 {
			return fmt.Errorf("recvfd needs VALUE")
		}
		return writeReceived(path, []byte(rest[0]))
	case "writev", "pwrite", "pwritev2", "sendfile", "splice", "copy_file_range", "aio", "aio-deep": // METHOD PATH VALUE: write VALUE into PATH that way
		if len(rest) != 1 {
			return fmt.Errorf("%s needs VALUE", method)
		}
		return writeVia(method, path, []byte(rest[0]))
	case "longpath": // longpath HIERARCHY BASE: open HIERARCHY's release_agent through a path longer than PATH_MAX
		if len(rest) != 1 {
			return fmt.Errorf("longpath needs BASE")
		}
		return openLongPath(path, rest[0])
	case "stat":
		var st unix.Stat_t
		return unix.Stat(path, &st)
	case "access":
		return unix.Access(path, unix.W_OK)
	case "rename": // rename PATH to rest[0]
		if len(rest) != 1 {
			return fmt.Errorf("rename needs NEWPATH")
		}
		return os.Rename(path, rest[0])
	case "rename-rel": // renameat with the directory of rest[0] as dirfd and its base name
		if len(rest) != 1 {
			return fmt.Errorf("rename-rel needs NEWPATH")
		}
		dir, err := unix.Open(filepath.Dir(rest[0]), unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		defer unix.Close(dir)
		return unix.Renameat(unix.AT_FDCWD, path, dir, filepath.Base(rest[0]))
	}
	return fmt.Errorf("unknown method")
}

// writeVia writes value into path with the write-family call method names.
func writeVia(method, path string, value []byte) error {
	fd, err := unix.Open(path, unix.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	switch method {
	case "writev":
		_, err = unix.Writev(fd, [][]byte{value[:1], value[1:]})
	case "pwrite":
		_, err = unix.Pwrite(fd, value, 0)
	case "pwritev2":
		_, err = unix.Pwritev2(fd, [][]byte{value}, 0, unix.RWF_SYNC)
	case "copy_file_range": // from a temporary file holding the value, on another filesystem
		tmp, terr := valueFile(value)
		if terr != nil {
			return terr
		}
		defer tmp.Close()
		_, err = unix.CopyFileRange(int(tmp.Fd()), nil, fd, nil, len(value), 0)
	case "splice": // from a pipe holding the value
		in, perr := valuePipe(value)
		if perr != nil {
			return perr
		}
		defer unix.Close(in)
		_, err = unix.Splice(in, nil, fd, nil, len(value), 0)
	case "sendfile": // from a temporary file holding the value
		tmp, terr := valueFile(value)
		if terr != nil {
			return terr
		}
		defer tmp.Close()
		_, err = unix.Sendfile(fd, int(tmp.Fd()), new(int64), len(value))
	case "aio":
		err = aioWrite(fd, value, 0)
	case "aio-deep":
		err = aioWrite(fd, value, 64)
	}
	return err
}

// iocb is Linux AIO's struct iocb (x86_64, little-endian); fields left zero are blank.
type iocb struct {
	_      uint64 // aio_data
	_      [2]uint32
	opcode uint16
	_      int16
	fd     uint32
	buf    uint64
	nbytes uint64
	_      [3]uint64 // aio_offset (0), aio_reserved2, aio_flags and aio_resfd
}

// ioEvent is struct io_event.
type ioEvent struct {
	_   [2]uint64 // data, obj
	res int64
	_   int64
}

const iocbCmdPwrite = 1

// aioWrite writes value at offset 0 of fd with Linux AIO (io_setup, io_submit, io_getevents): no write syscall.
// The write is the last of one io_submit, after decoys writes of value to /dev/null.
func aioWrite(fd int, value []byte, decoys int) error {
	null, err := unix.Open("/dev/null", unix.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(null)
	var ctx uintptr
	if _, _, errno := unix.Syscall(unix.SYS_IO_SETUP, uintptr(decoys+1), uintptr(unsafe.Pointer(&ctx)), 0); errno != 0 {
		return fmt.Errorf("io_setup: %w", errno)
	}
	defer unix.Syscall(unix.SYS_IO_DESTROY, ctx, 0, 0)
	cbs := make([]*iocb, decoys+1)
	for i := range cbs {
		target := null
		if i == decoys {
			target = fd
		}
		cbs[i] = &iocb{opcode: iocbCmdPwrite, fd: uint32(target), buf: uint64(uintptr(unsafe.Pointer(&value[0]))), nbytes: uint64(len(value))}
	}
	n, _, errno := unix.Syscall(unix.SYS_IO_SUBMIT, ctx, uintptr(len(cbs)), uintptr(unsafe.Pointer(&cbs[0])))
	if errno != 0 || int(n) != len(cbs) {
		return fmt.Errorf("io_submit: %d of %d, %w", n, len(cbs), errno)
	}
	events := make([]ioEvent, len(cbs))
	got := 0
	for got < len(cbs) {
		n, _, errno := unix.Syscall6(unix.SYS_IO_GETEVENTS, ctx, 1, uintptr(len(cbs)-got), uintptr(unsafe.Pointer(&events[got])), 0, 0)
		if errno != 0 {
			return fmt.Errorf("io_getevents: %w", errno)
		}
		got += int(n)
	}
	for _, ev := range events {
		if ev.res < 0 {
			return fmt.Errorf("aio write: %w", unix.Errno(-ev.res))
		}
	}
	return nil
}

// valuePipe returns the read end of a pipe holding value, its write end closed.
func valuePipe(value []byte) (int, error) {
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil {
		return -1, err
	}
	defer unix.Close(p[1])
	if _, err := unix.Write(p[1], value); err != nil {
		unix.Close(p[0])
		return -1, err
	}
	return p[0], nil
}

// valueFile is an unlinked temporary file holding value, read from its start.
func valueFile(value []byte) (*os.File, error) {
	tmp, err := os.CreateTemp("", "value")
	if err != nil {
		return nil, err
	}
	os.Remove(tmp.Name())
	if _, err := tmp.Write(value); err != nil {
		tmp.Close()
		return nil, err
	}
	if _, err := tmp.Seek(0, 0); err != nil {
		tmp.Close()
		return nil, err
	}
	return tmp, nil
}

// writeDetached creates hierarchy name with fsopen/fsconfig/fsmount, leaves the mount detached, and writes
// value into its release_agent relative to the mount's descriptor.
func writeDetached(name string, value []byte) error {
	fd, err := unix.Fsopen("cgroup", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.FsconfigSetFlag(fd, "none"); err != nil {
		return fmt.Errorf("fsconfig none: %w", err)
	}
	if err := unix.FsconfigSetString(fd, "name", name); err != nil {
		return fmt.Errorf("fsconfig name: %w", err)
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fmt.Errorf("fsconfig create: %w", err)
	}
	mnt, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fsmount: %w", err)
	}
	defer unix.Close(mnt)
	agent, err := unix.Openat(mnt, "release_agent", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open release_agent in the detached mount: %w", err)
	}
	defer unix.Close(agent)
	_, err = unix.Write(agent, value)
	return err
}

// writeReceived connects to the unix socket at path, receives one descriptor (SCM_RIGHTS) and writes value
// through it: the writer never opens the file.
func writeReceived(path string, value []byte) error {
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(sock)
	if err := unix.Connect(sock, &unix.SockaddrUnix{Name: path}); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return fmt.Errorf("recvmsg: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return fmt.Errorf("no descriptor received (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return fmt.Errorf("no descriptor received (%v)", err)
	}
	defer unix.Close(fds[0])
	_, err = unix.Write(fds[0], value)
	return err
}

func writeAndClose(fd, flags int) error {
	defer unix.Close(fd)
	if flags&unix.O_ACCMODE == unix.O_RDONLY {
		return nil
	}
	_, err := unix.Write(fd, []byte(agentValue))
	return err
}

// longPathDirs and longPathName make the directory chain of openLongPath: 20 names of 250 bytes, a path longer
// than PATH_MAX (4096) in fewer components than the kernel side's walk takes.
const (
	longPathDirs = 20
	longPathName = 250
)

// openLongPath makes a chain of long-named directories under base (with *at calls: no path names it whole),
// bind-mounts hierarchy on its last directory, and opens the release_agent there for writing, relative to the
// chain. The process must have a mount namespace of its own: the bind mount goes with it.
func openLongPath(hierarchy, base string) error {
	name := strings.Repeat("l", longPathName)
	parent, err := unix.Open(base, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	for i := 1; i < longPathDirs; i++ {
		if err := unix.Mkdirat(parent, name, 0o755); err != nil {
			unix.Close(parent)
			return err
		}
		next, err := unix.Openat(parent, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		unix.Close(parent)
		if err != nil {
			return err
		}
		parent = next
	}
	defer unix.Close(parent)
	if err := unix.Mkdirat(parent, name, 0o755); err != nil {
		return err
	}
	last, err := unix.Openat(parent, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	err = unix.Mount(hierarchy, "/proc/self/fd/"+strconv.Itoa(last), "", unix.MS_BIND, "")
	unix.Close(last)
	if err != nil {
		return fmt.Errorf("bind mount at the end of the chain: %w", err)
	}
	// Looked up from the parent, the last name crosses into the mount.
	fd, err := unix.Openat(parent, name+"/release_agent", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	return writeAndClose(fd, unix.O_WRONLY)
}

// byHandle opens PATH with name_to_handle_at + open_by_handle_at, the way that bypasses path lookup.
func byHandle(path string) error {
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, path, 0)
	if err != nil {
		return fmt.Errorf("name_to_handle_at: %w", err)
	}
	mfd, err := unix.Open(filepath.Dir(path), unix.O_RDONLY|unix.O_DIRECTORY, 0) // O_PATH is refused as mount_fd
	if err != nil {
		return err
	}
	defer unix.Close(mfd)
	fd, err := unix.OpenByHandleAt(mfd, h, unix.O_WRONLY)
	if err != nil {
		return fmt.Errorf("open_by_handle_at: %w", err)
	}
	return writeAndClose(fd, unix.O_WRONLY)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "trigger:", err)
	os.Exit(1)
}

// ptr keeps byte slices alive as raw addresses for the kernel.
func ptr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }

// mountRace mounts count hierarchies at dir with release_agent=value<i>, each while another thread flips the
// first letter of "release_agent" in the data between 'r' and 'x': the kernel copies the data at the syscall's
// entry, so a reader of user memory at its exit may see the other letter. It unmounts each and prints, one per
// line, the values of the mounts that succeeded (the kernel saw the option, so the hierarchy had that agent).
func mountRace(dir, name, value string, count int) error {
	src, fstype := []byte("cgroup\x00"), []byte("cgroup\x00")
	target := append([]byte(dir), 0)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	fmt.Println()
	for i := range count {
		v := fmt.Sprintf("%s%d", value, i)
		data := []byte(fmt.Sprintf("none,name=%s%d,release_agent=%s\x00", name, i, v))
		flip := strings.Index(string(data), "release_agent")
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			p := (*byte)(unsafe.Pointer(&data[flip]))
			for {
				select {
				case <-stop:
					return
				default:
				}
				if *p == 'r' {
					*p = 'x'
				} else {
					*p = 'r'
				}
			}
		}()
		_, _, errno := unix.Syscall6(unix.SYS_MOUNT, uintptr(unsafe.Pointer(&src[0])), uintptr(unsafe.Pointer(&target[0])),
			uintptr(unsafe.Pointer(&fstype[0])), 0, uintptr(unsafe.Pointer(&data[0])), 0)
		close(stop)
		<-done
		if errno == 0 {
			fmt.Println(v)
			if err := unix.Unmount(dir, 0); err != nil {
				return fmt.Errorf("umount: %w", err)
			}
		}
	}
	return nil
}
