package sensor

// Syscall names by number, native arm64 (asm-generic's table: no open, creat or rename) and AArch32, for the
// calls the tracepoint backend watches (the numbers in bpf/syscall.h).
var (
	syscallNames = map[uint32]string{
		56: "openat", 265: "open_by_handle_at", 437: "openat2",
		38: "renameat", 276: "renameat2", 40: "mount", 431: "fsconfig",
		64: "write", 68: "pwrite64", 66: "writev", 71: "sendfile", 76: "splice", 70: "pwritev", 285: "copy_file_range",
		287: "pwritev2", 2: "io_submit",
	}
	compatSyscallNames = map[uint32]string{
		5: "open", 8: "creat", 322: "openat", 371: "open_by_handle_at", 437: "openat2",
		38: "rename", 329: "renameat", 382: "renameat2", 21: "mount",
		4: "write", 146: "writev", 181: "pwrite64", 187: "sendfile", 239: "sendfile64", 340: "splice", 362: "pwritev",
		391: "copy_file_range", 393: "pwritev2", 246: "io_submit",
	}
)
