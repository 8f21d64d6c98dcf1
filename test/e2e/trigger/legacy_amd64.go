package main

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// legacyOpen calls open(2) itself (x86-64 keeps it beside openat; Go's os and unix call openat).
func legacyOpen(path string, flags int) (int, error) {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return -1, err
	}
	fd, _, errno := unix.Syscall(unix.SYS_OPEN, uintptr(unsafe.Pointer(p)), uintptr(flags), 0o644)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

// legacyCreat calls creat(2): open for writing, created and truncated.
func legacyCreat(path string) (int, error) {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return -1, err
	}
	fd, _, errno := unix.Syscall(unix.SYS_CREAT, uintptr(unsafe.Pointer(p)), 0o644, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}
