package sensor

import (
	"errors"
	"fmt"
	"path"
	"strconv"

	"golang.org/x/sys/unix"
)

const cgroupSuperMagic = 0x27e0eb

// renameTargetsAgent decides, for a refused rename whose new name ends in release_agent, whether that name is
// the real release_agent: the one at the root of a cgroup v1 hierarchy, not a file of that name elsewhere nor a
// child cgroup directory. (Successful renames never are; the kernel drops them.) The kernel decides for plain names; a name with a directory part is resolved here, inside
// the renaming process's root, since a BPF program cannot walk a path. When that is impossible (the process is
// gone, or the directory's path was cut) the attempt is kept: a miss is worse than the rare noise of a refused
// rename to that name.
func (c *converter) renameTargetsAgent(r *Record) bool {
	if r.Has(kernelEwFactEW_FACT_CGROUP1AGENT) {
		return true
	}
	if r.Has(kernelEwFactEW_FACT_DIR_RESOLVED) {
		return false
	}
	if r.Has(kernelEwFactEW_FACT_PATH_TRUNCATED) {
		return true // the new name's directory is known by its lower part only: it cannot be resolved
	}
	dir := path.Dir(joinDir(r.Path, r.ArgPath))
	real, err := c.isHierarchyRoot(r.Task.HostPID, dir)
	if err != nil {
		return true
	}
	return real
}

// isHierarchyRoot reports whether dir, resolved as process pid sees it, is the root of a cgroup v1 hierarchy:
// on cgroupfs and holding a regular file release_agent (only a v1 root has one).
func (c *converter) isHierarchyRoot(pid uint32, dir string) (bool, error) {
	root, err := unix.Open(c.procRoot+"/"+strconv.FormatUint(uint64(pid), 10)+"/root", unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return false, fmt.Errorf("open the process's root: %w", err)
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, dir, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("resolve %s: %w", dir, err)
	}
	defer unix.Close(fd)
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return false, fmt.Errorf("statfs %s: %w", dir, err)
	}
	if fs.Type != cgroupSuperMagic {
		return false, nil
	}
	var st unix.Stat_t
	if err := unix.Fstatat(fd, "release_agent", &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false, nil
	}
	return st.Mode&unix.S_IFMT == unix.S_IFREG, nil
}
