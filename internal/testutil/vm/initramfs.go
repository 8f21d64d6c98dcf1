package vm

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
)

// initramfs builds the guest root as a cpio archive. It writes each entry's parent directories before it,
// since the kernel's unpacker creates no missing ones, and refuses two entries for one guest path rather
// than let the later one win.
type initramfs struct {
	cw   *cpioWriter
	seen map[string]bool // guest paths written, directories included
}

// writeInitramfs creates file dst and lets build fill it with entries.
func writeInitramfs(dst string, build func(*initramfs) error) error {
	f, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("create the initramfs: %w", err)
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	b := &initramfs{cw: &cpioWriter{w: bw}, seen: map[string]bool{"/": true}}
	if err := build(b); err != nil {
		return err
	}
	if err := b.cw.close(); err != nil {
		return fmt.Errorf("write the initramfs: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write the initramfs: %w", err)
	}
	return f.Close()
}

// addFiles adds files (guest path -> host path) in guest path order, so that the archive is the same
// for the same files.
func (b *initramfs) addFiles(files map[string]string) error {
	for _, g := range slices.Sorted(maps.Keys(files)) {
		if err := b.addHostPath(g, files[g]); err != nil {
			return err
		}
	}
	return nil
}

// claim checks that guest is a clean absolute path not written yet, writes its missing parent
// directories and returns its archive name.
func (b *initramfs) claim(guest string) (string, error) {
	if !path.IsAbs(guest) || path.Clean(guest) != guest || guest == "/" {
		return "", fmt.Errorf("guest path %q: want a clean absolute path below /", guest)
	}
	if b.seen[guest] {
		return "", fmt.Errorf("guest path %s given twice (a Files entry may not overlap another or the init's own files)", guest)
	}
	if err := b.parents(path.Dir(guest)); err != nil {
		return "", err
	}
	b.seen[guest] = true
	return guest[1:], nil
}

func (b *initramfs) parents(dir string) error {
	if b.seen[dir] {
		return nil
	}
	if err := b.parents(path.Dir(dir)); err != nil {
		return err
	}
	b.seen[dir] = true
	return b.cw.dir(dir[1:], 0o755)
}

func (b *initramfs) addBytes(guest string, perm os.FileMode, data []byte) error {
	name, err := b.claim(guest)
	if err != nil {
		return err
	}
	return b.cw.file(name, perm, int64(len(data)), bytes.NewReader(data))
}

func (b *initramfs) addCharDev(guest string, perm os.FileMode, major, minor uint32) error {
	name, err := b.claim(guest)
	if err != nil {
		return err
	}
	return b.cw.charDev(name, perm, major, minor)
}

// addHostPath adds host at guest: a regular file (symlinks to one followed) or a directory tree, whose
// symlinks are kept as symlinks.
func (b *initramfs) addHostPath(guest, host string) error {
	fi, err := os.Stat(host)
	if err != nil {
		return fmt.Errorf("file for guest path %s: %w", guest, err)
	}
	if fi.IsDir() {
		return b.addTree(guest, host)
	}
	return b.addEntry(guest, host, fi)
}

func (b *initramfs) addTree(guest, host string) error {
	// The walk would take a symlinked root for a symlink, not the tree the caller named.
	root, err := filepath.EvalSymlinks(host)
	if err != nil {
		return fmt.Errorf("copy %s to guest %s: %w", host, guest, err)
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("copy %s to guest %s: %w", p, guest, err)
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		g := path.Join(guest, filepath.ToSlash(rel))
		if d.IsDir() && b.seen[g] {
			return nil // already made as a parent of an earlier entry
		}
		fi, err := d.Info()
		if err != nil {
			return fmt.Errorf("copy %s to guest %s: %w", p, g, err)
		}
		return b.addEntry(g, p, fi)
	})
}

// addEntry adds one directory, symlink or regular file.
func (b *initramfs) addEntry(guest, host string, fi fs.FileInfo) error {
	name, err := b.claim(guest)
	if err != nil {
		return err
	}
	switch {
	case fi.IsDir():
		return b.cw.dir(name, fi.Mode())
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(host)
		if err != nil {
			return fmt.Errorf("copy %s to guest %s: %w", host, guest, err)
		}
		return b.cw.symlink(name, target)
	case fi.Mode().IsRegular():
		return b.addFile(name, host, fi)
	}
	return fmt.Errorf("copy %s to guest %s: only regular files, directories and symlinks can be copied, not %v", host, guest, fi.Mode().Type())
}

func (b *initramfs) addFile(name, host string, fi fs.FileInfo) error {
	f, err := os.Open(host)
	if err != nil {
		return fmt.Errorf("copy %s to the guest: %w", host, err)
	}
	defer f.Close()
	return b.cw.file(name, fi.Mode(), fi.Size(), f)
}
