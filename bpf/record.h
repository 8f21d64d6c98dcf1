/* SPDX-License-Identifier: GPL-2.0 */
/* The records the kernel side hands to user space. Defined once here; bpf2go -type generates the Go side.
 * Every field is explicitly sized and padded (the build uses -Wpadded) so C and Go can never drift apart. */
#ifndef EW_RECORD_H
#define EW_RECORD_H

#define EW_PATH_MAX 4096
#define EW_CGROUP_PATH_MAX 512
#define EW_COMM_LEN 16
#define EW_HOSTNAME_LEN 64

/* First field of every record: what happened. Decoding is a table lookup on it. */
enum ew_kind {
	EW_KIND_FILE_OPEN = 1,	 /* security_file_open */
	EW_KIND_INODE_RENAME = 2, /* security_inode_rename */
	EW_KIND_AGENT_WRITE = 3,  /* a write to the real release_agent, through any file descriptor */
	EW_KIND_NOTIFY_WRITE = 4, /* a write to a cgroup v1 notify_on_release */
	EW_KIND_HELPER_EXEC = 5,  /* the kernel started a user-mode helper (a release agent among them) */
	EW_KIND_MOUNT_OPTION = 6, /* release_agent given as a cgroup v1 mount option (mount, fsconfig, remount) */
};

/* Which kernel path produced the record. */
enum ew_source {
	EW_SOURCE_SYSCALL = 0,
	EW_SOURCE_IO_URING = 1,
};

/* Bits of ew_record.facts: facts the kernel established about the object. */
enum ew_fact {
	EW_FACT_CGROUP1_AGENT = 1 << 0,	 /* the dentry is release_agent at the root of a cgroup v1 superblock */
	EW_FACT_COMPAT_SYSCALL = 1 << 1, /* a 32-bit (ia32) syscall */
	EW_FACT_PATH_TRUNCATED = 1 << 2, /* path was cut (EW_PATH_MAX or the walk's steps): it holds its lower part */
	EW_FACT_DIR_RESOLVED = 1 << 3,	 /* rename: the new name's parent was resolved in the kernel */
	EW_FACT_OLD_VALUE = 1 << 4,	 /* agent write: arg_path2 holds the value before the write */
	EW_FACT_ENABLED = 1 << 5,	 /* notify write: notify_on_release is on after the write */
	EW_FACT_MOUNT_DATA = 1 << 6,	 /* mount option: arg_path holds mount(2)'s whole data string, to parse */
	EW_FACT_CGROUP_CUT = 1 << 7,	 /* cgroup_path is only the lower part of the task's cgroup (too deep or long) */
	EW_FACT_BASE_PATH_TRUNCATED = 1 << 8, /* rename: base_path was cut, as path is with EW_FACT_PATH_TRUNCATED */
	/* helper exec: the program is the current release_agent of a hierarchy (arg_path: its name, setter: who set
	 * the value) */
	EW_FACT_AGENT_CURRENT = 1 << 9,
	/* helper exec: started the way the kernel starts a release agent (2 arguments, 2 environment strings) */
	EW_FACT_AGENT_SHAPED = 1 << 10,
	/* helper exec: a release agent the host did not set: the escape (under --enforce, killed) */
	EW_FACT_AGENT_ESCAPE = 1 << 11,
	/* helper exec: the hierarchy's value is not the one its recorded setter left: a path the sensor does not
	 * watch changed it since */
	EW_FACT_SETTER_STALE = 1 << 12,
	/* agent write: the first value this origin set in this hierarchy (its last setter was another, or none): sent
	 * whatever the origin's budget (emit.h) */
	EW_FACT_NEW_SETTER = 1 << 13,
};

/* How a hierarchy's release_agent got its value (ew_agent_setter.how). */
enum ew_set_how {
	EW_SET_UNKNOWN = 0, /* no record of it */
	EW_SET_SEEDED = 1,  /* the value was there when the sensor started */
	EW_SET_WRITE = 2,   /* a write to release_agent */
	EW_SET_MOUNT = 3,   /* the hierarchy was created (mount(2), fsconfig's create), maybe with release_agent= */
	EW_SET_REMOUNT = 4, /* a remount, or an fspick+fsconfig reconfigure */
};

/* Whether the setter of a value is trusted to choose what the kernel runs as root (ew_agent_setter.trust). */
enum ew_trust {
	EW_TRUST_UNKNOWN = 0, /* who set it is unknown */
	EW_TRUST_HOST = 1,    /* a host process (host mount and pid namespaces) or an --enforce allowed cgroup; or a
			       * value present at start that the configuration names as the host's */
	EW_TRUST_OUTSIDE = 2, /* a process outside the host: a container or namespace */
};

/* The setter of a hierarchy's current release_agent: the kernel side's authoritative record, one per hierarchy. */
struct ew_agent_setter {
	__u64 value_hash; /* FNV-1a (64 bits) of the value the setter left: tells whether it is still the value */
	__u64 boot_ns;	  /* when, boot clock */
	__u64 cgroup_id;  /* the setter's cgroup v2 id */
	__u64 origin_id;  /* the setter's origin (ew_task.origin_id): its cgroup, on v1-only hosts too */
	__u32 how;	  /* enum ew_set_how */
	__u32 trust;	  /* enum ew_trust */
	__u32 host_pid;	  /* the setter's tgid in the initial pid namespace */
	__u32 mnt_ns;
	__u32 pid_ns;
	__u32 hierarchy_id;
	char comm[EW_COMM_LEN];
};

/* What the kernel side did about the operation. */
enum ew_action {
	EW_ACTION_ALERT = 0,  /* reported only */
	EW_ACTION_DENIED = 1, /* refused with EPERM (lsm and fentry backends, --enforce) */
	EW_ACTION_KILLED = 2, /* the process was sent SIGKILL before returning to user space (--enforce) */
};

/* Indexes of the per-CPU counter array, summed by user space. */
enum ew_counter {
	EW_COUNTER_EMITTED = 0,
	EW_COUNTER_DROPPED = 1,	    /* ring buffer full: the record was lost */
	EW_COUNTER_KILL_FAILED = 2, /* --enforce: the kernel refused to send SIGKILL (the record says alert) */
	EW_COUNTER_LOST_RATE = 3,   /* over its origin's budget: not sent (counted per origin too, emit.h) */
	EW_COUNTER_REPEATED = 4,    /* over its origin's budget, the same as the origin's last record sent: counted only */
	EW_COUNTER_UNTRACKED = 5,   /* io_uring requests the legacy tracepoint programs could not follow (table full) */
	EW_COUNTER_MAX = 6,
};

struct ew_task {
	__u64 boot_ns;	      /* bpf_ktime_get_boot_ns() at the event */
	__u64 start_boot_ns;  /* thread start, boot clock */
	__u64 cgroup_id;      /* cgroup v2 id of the task */
	__u64 origin_id;      /* kernfs id of the cgroup cgroup_path names: the unit of fairness (bpf/fairness.h) */
	__u32 host_pid;	      /* tgid in the initial pid namespace */
	__u32 host_tid;
	__u32 host_ppid;
	__u32 pid; /* the same, as the task's own pid namespace sees them */
	__u32 tid;
	__u32 ppid;
	__u32 uid;
	__u32 mnt_ns;
	__u32 pid_ns;
	__u32 cpu;
	char comm[EW_COMM_LEN];
	char hostname[EW_HOSTNAME_LEN]; /* UTS nodename of the task's namespace, NUL-terminated */
};

/* The fixed part of every record. It goes to user space as is, followed by the record's five strings, each
 * with its NUL and no more, in the order of struct ew_record: a record is as long as its strings (ew_emit). */
#define EW_RECORD_HEAD_FIELDS                                                                                   \
	__u32 kind;   /* enum ew_kind */                                                                         \
	__u32 source; /* enum ew_source */                                                                       \
	__s64 ret;                                                                                                \
	__u32 syscall_nr;                                                                                         \
	__u32 facts; /* enum ew_fact bits */                                                                     \
	struct ew_task task;                                                                                      \
	__u64 inode;                                                                                              \
	__u64 ctime_ns;                                                                                           \
	__u32 dev;                                                                                                \
	__u32 file_flags; /* file->f_flags */                                                                    \
	__u32 action;	  /* enum ew_action */                                                                   \
	__u32 pad0;                                                                                               \
	/* helper exec with EW_FACT_AGENT_CURRENT: who set the hierarchy's value */                              \
	struct ew_agent_setter setter;

struct ew_record_head {
	EW_RECORD_HEAD_FIELDS
};

/* A record as the kernel side assembles it (in per-CPU scratch: it outgrows the stack). */
struct ew_record {
	EW_RECORD_HEAD_FIELDS
	char cgroup_path[EW_CGROUP_PATH_MAX];
	/* file_open, agent write: the kernel-resolved pathname. rename: the directory a relative new name starts from */
	char path[EW_PATH_MAX];
	/* file_open: the path string the process passed. rename: the new name as passed. agent write: the value
	 * stored in the hierarchy after the write. helper exec: the hierarchy whose release_agent it is */
	char arg_path[EW_PATH_MAX];
	/* rename: the old name as passed. agent write: the value before (with EW_FACT_OLD_VALUE) */
	char arg_path2[EW_PATH_MAX];
	/* rename: the directory a relative old name starts from. agent and notify write: the hierarchy's name.
	 * helper exec: the program the kernel runs */
	char base_path[EW_PATH_MAX];
};

/* A record as it goes to user space: the head, then the strings packed. They take at most EW_WIRE_STRINGS
 * bytes; the tail room after keeps every copy in bounds at any offset up to that (a per-CPU value must stay under
 * 32 KiB). */
#define EW_WIRE_STRINGS (EW_CGROUP_PATH_MAX + 4 * EW_PATH_MAX)
struct ew_wire {
	struct ew_record_head head;
	char strings[EW_WIRE_STRINGS + EW_PATH_MAX];
};

#endif
