// Package enrich tells where a process runs: which container (from its cgroup path) and which origin class
// (container, namespaced, host) the rules see.
package enrich

import (
	"regexp"
	"strings"
)

// Container runtimes recognised from cgroup paths.
const (
	RuntimeDocker     = "docker"
	RuntimeContainerd = "containerd"
	RuntimeCRIO       = "crio"
	RuntimePodman     = "podman"
)

// Container is what a cgroup path says about the container a process runs in.
type Container struct {
	ID      string
	Runtime string
}

var containerID = regexp.MustCompile(`^[0-9a-f]{64}$`)

// cgroupLayouts maps how each runtime names a container's cgroup (systemd and cgroupfs drivers, cgroup v1 and
// v2) to the runtime. The ID is the 64-hex-digit part of the component.
var cgroupLayouts = []struct {
	prefix, suffix string
	parent         string // required parent component for bare IDs ("" = any)
	runtime        string // "" when the layout does not tell the runtime
	monitor        bool   // a runtime's monitor process (conmon), not the container itself
}{
	{"crio-conmon-", ".scope", "", "", true},
	{"libpod-conmon-", ".scope", "", "", true},
	{"docker-", ".scope", "", RuntimeDocker, false},
	{"cri-containerd-", ".scope", "", RuntimeContainerd, false},
	{"crio-", ".scope", "", RuntimeCRIO, false},
	{"libpod-", ".scope", "", RuntimePodman, false},
	{"", "", "docker", RuntimeDocker, false},
	{"", "", "libpod_parent", RuntimePodman, false},
	{"", "", "", "", false}, // kubepods with the cgroupfs driver, containerd namespaces: runtime unknown
}

// ContainerFromCgroup finds the container a cgroup path belongs to. The innermost matching component wins,
// so a container nested in another reports the inner one. ok is false for host cgroups.
func ContainerFromCgroup(path string) (c Container, ok bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i := len(parts) - 1; i >= 0; i-- {
		part := parts[i]
		parent := ""
		if i > 0 {
			parent = parts[i-1]
		}
		for _, l := range cgroupLayouts {
			if !strings.HasPrefix(part, l.prefix) || !strings.HasSuffix(part, l.suffix) {
				continue
			}
			id := strings.TrimSuffix(strings.TrimPrefix(part, l.prefix), l.suffix)
			if !containerID.MatchString(id) {
				continue
			}
			if l.prefix == "" && l.parent != "" && l.parent != parent {
				continue
			}
			if l.monitor {
				break // keep looking outward
			}
			return Container{ID: id, Runtime: l.runtime}, true
		}
	}
	return Container{}, false
}
