package sensor

// Syscall names by number, native x86_64 and ia32, for the calls the tracepoint backend watches (the numbers in
// bpf/syscall.h).
var (
	syscallNames = map[uint32]string{
		2: "open", 85: "creat", 257: "openat", 304: "open_by_handle_at", 437: "openat2",
		82: "rename", 264: "renameat", 316: "renameat2", 165: "mount", 431: "fsconfig",
		1: "write", 18: "pwrite64", 20: "writev", 40: "sendfile", 275: "splice", 296: "pwritev", 326: "copy_file_range",
		328: "pwritev2", 209: "io_submit",
	}
	compatSyscallNames = map[uint32]string{
		5: "open", 8: "creat", 295: "openat", 342: "open_by_handle_at", 437: "openat2",
		38: "rename", 302: "renameat", 353: "renameat2", 21: "mount",
		4: "write", 146: "writev", 181: "pwrite64", 187: "sendfile", 239: "sendfile64", 313: "splice", 334: "pwritev",
		377: "copy_file_range", 379: "pwritev2", 248: "io_submit",
	}
)
