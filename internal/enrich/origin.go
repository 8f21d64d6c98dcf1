package enrich

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"escapewatch/internal/event"
)

// Namespaces identifies a process's mount and pid namespaces by inode number.
type Namespaces struct {
	Mnt, PID uint32
}

// Classifier assigns origin classes relative to the host's namespaces.
type Classifier struct {
	host   Namespaces
	source string

	mu         sync.Mutex
	containers map[string]containerResult // by cgroup path: parsed once per cgroup
}

type containerResult struct {
	c  Container
	ok bool
}

// maxCachedCgroups bounds the cache; when full it starts over (cgroups come and go, their paths are cheap to parse).
const maxCachedCgroups = 4096

// NewClassifier takes the host's namespaces from init (pid 1 of the /proc it is given, "/proc" normally). Run
// inside a container, the sensor needs the host's pid namespace (hostPID) for this to be the host's init.
// When init's links cannot be read (init holds capabilities the sensor lacks, so ptrace access checks refuse),
// the sensor's own namespaces stand for the host's: right for a sensor started on the host.
func NewClassifier(procRoot string) (*Classifier, error) {
	ns, initErr := namespacesOf(procRoot, "1")
	if initErr == nil {
		return &Classifier{host: ns, source: "init", containers: map[string]containerResult{}}, nil
	}
	ns, err := namespacesOf(procRoot, "self")
	if err != nil {
		return nil, fmt.Errorf("find the host's namespaces: %w; %w", initErr, err)
	}
	return &Classifier{host: ns, source: "self", containers: map[string]containerResult{}}, nil
}

// Host returns the namespaces the classifier treats as the host's.
func (c *Classifier) Host() Namespaces { return c.host }

// Source says where the host's namespaces came from: "init" (pid 1) or "self" (the sensor's own process).
func (c *Classifier) Source() string { return c.source }

func (c *Classifier) container(cgroupPath string) (Container, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.containers[cgroupPath]; ok {
		return r.c, r.ok
	}
	if len(c.containers) >= maxCachedCgroups {
		clear(c.containers)
	}
	ctr, ok := ContainerFromCgroup(cgroupPath)
	c.containers[cgroupPath] = containerResult{ctr, ok}
	return ctr, ok
}

func namespacesOf(procRoot, pid string) (Namespaces, error) {
	mnt, err := nsInode(procRoot, pid, "mnt")
	if err != nil {
		return Namespaces{}, err
	}
	pidNS, err := nsInode(procRoot, pid, "pid")
	if err != nil {
		return Namespaces{}, err
	}
	return Namespaces{Mnt: mnt, PID: pidNS}, nil
}

// Classify returns the origin class of a process and its container, if any: container when its cgroup belongs
// to a container runtime, namespaced when its mount or pid namespace is not the host's, host otherwise.
func (c *Classifier) Classify(ns Namespaces, cgroupPath string) (string, Container) {
	if ctr, ok := c.container(cgroupPath); ok {
		return event.OriginContainer, ctr
	}
	if ns != c.host {
		return event.OriginNamespaced, Container{}
	}
	return event.OriginHost, Container{}
}

func nsInode(procRoot, pid, kind string) (uint32, error) {
	link, err := os.Readlink(procRoot + "/" + pid + "/ns/" + kind)
	if err != nil {
		return 0, fmt.Errorf("read the %s namespace of process %s (needs root and the host's /proc): %w", kind, pid, err)
	}
	// The link reads like "mnt:[4026531841]".
	open := strings.IndexByte(link, '[')
	if open < 0 || !strings.HasSuffix(link, "]") {
		return 0, fmt.Errorf("unexpected namespace link %q", link)
	}
	n, err := strconv.ParseUint(link[open+1:len(link)-1], 10, 32)
	if err != nil {
		return 0, fmt.Errorf("unexpected namespace link %q: %w", link, err)
	}
	return uint32(n), nil
}
