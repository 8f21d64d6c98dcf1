package vm

import (
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
)

// cpioWriter writes a "newc" cpio archive, the format the kernel unpacks as an initramfs
// (Documentation/driver-api/early-userspace/buffer-format.rst).
type cpioWriter struct {
	w   io.Writer
	ino uint32
	off int64 // bytes written so far, for the 4-byte alignment
}

const (
	cpioTrailer = "TRAILER!!!"
	maxCpioFile = 1<<32 - 1 // the size field has 8 hex digits
)

// unixMode converts a Go file mode to the st_mode bits that cpio stores.
func unixMode(m os.FileMode) uint32 {
	mode := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		mode |= syscall.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		mode |= syscall.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		mode |= syscall.S_ISVTX
	}
	switch {
	case m.IsDir():
		mode |= syscall.S_IFDIR
	case m&os.ModeSymlink != 0:
		mode |= syscall.S_IFLNK
	case m&os.ModeCharDevice != 0:
		mode |= syscall.S_IFCHR
	default:
		mode |= syscall.S_IFREG
	}
	return mode
}

// header writes one entry's header and name; name has no leading slash. Every entry gets its own inode
// and one link, so the kernel never takes two entries for hard links of one file.
func (c *cpioWriter) header(name string, mode uint32, size int64, rdevMajor, rdevMinor uint32) error {
	c.ino++
	nlink := 1
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		nlink = 2
	}
	fields := []any{c.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, len(name) + 1, 0}
	if _, err := c.Write(fmt.Appendf(nil, "070701"+strings.Repeat("%08X", len(fields)), fields...)); err != nil {
		return err
	}
	if _, err := c.Write(append([]byte(name), 0)); err != nil {
		return err
	}
	return c.pad()
}

// Write writes raw archive bytes and counts them.
func (c *cpioWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.off += int64(n)
	return n, err
}

// pad aligns the next header or data to 4 bytes, as newc requires.
func (c *cpioWriter) pad() error {
	if r := c.off % 4; r != 0 {
		_, err := c.Write(make([]byte, 4-r))
		return err
	}
	return nil
}

func (c *cpioWriter) dir(name string, perm os.FileMode) error {
	return c.header(name, unixMode(perm|os.ModeDir), 0, 0, 0)
}

func (c *cpioWriter) symlink(name, target string) error {
	if err := c.header(name, unixMode(0o777|os.ModeSymlink), int64(len(target)), 0, 0); err != nil {
		return err
	}
	if _, err := c.Write([]byte(target)); err != nil {
		return err
	}
	return c.pad()
}

func (c *cpioWriter) charDev(name string, perm os.FileMode, major, minor uint32) error {
	return c.header(name, unixMode(perm|os.ModeDevice|os.ModeCharDevice), 0, major, minor)
}

// file writes a regular file of exactly size bytes read from r.
func (c *cpioWriter) file(name string, perm os.FileMode, size int64, r io.Reader) error {
	if size > maxCpioFile {
		return fmt.Errorf("%s: %d bytes is more than a newc cpio entry holds (4 GiB)", name, size)
	}
	if err := c.header(name, unixMode(perm), size, 0, 0); err != nil {
		return err
	}
	n, err := io.CopyN(c, r, size)
	if err != nil {
		return fmt.Errorf("copy %s (%d of %d bytes; did it change while being read?): %w", name, n, size, err)
	}
	return c.pad()
}

// close writes the trailer that ends the archive.
func (c *cpioWriter) close() error {
	return c.header(cpioTrailer, 0, 0, 0, 0)
}
