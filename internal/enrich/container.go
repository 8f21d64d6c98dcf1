// Package enrich tells where a process runs: which container (from its cgroup path, then from the runtime's
// API) and which origin class (container, namespaced, host) the rules see.
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
	RuntimeLXC        = "lxc"
)

// Container is what a cgroup path says about the container a process runs in.
type Container struct {
	ID      string
	Runtime string // "" when the layout does not tell (kubepods with the cgroupfs driver)
	PodUID  string // the Kubernetes pod, when the path has a kubepods pod component
}

var (
	hexID = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// Pod components: "pod<uid>" (cgroupfs) or "kubepods-<qos>-pod<uid>.slice" with "_" for "-" (systemd).
	podComponent = regexp.MustCompile(`(?:^|-)pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$`)
)

// layout is how one runtime names a container's cgroup.
type layout struct {
	prefix, suffix string
	parent         string // required parent component ("" = any)
	runtime        string
	monitor        bool // the runtime's monitor process (conmon, lxc monitor), not the container: keep looking outward
	anyName        bool // the ID is a name (LXC), not 64 hex digits
}

// layouts, most specific first; systemd and cgroupfs drivers, cgroup v1 and v2.
var layouts = []layout{
	{prefix: "crio-conmon-", suffix: ".scope", monitor: true},
	{prefix: "libpod-conmon-", suffix: ".scope", monitor: true},
	{prefix: "docker-", suffix: ".scope", runtime: RuntimeDocker},
	{prefix: "cri-containerd-", suffix: ".scope", runtime: RuntimeContainerd},
	{prefix: "crio-", suffix: ".scope", runtime: RuntimeCRIO},
	{prefix: "libpod-", suffix: ".scope", runtime: RuntimePodman},
	{prefix: "libpod-", parent: "libpod_parent", runtime: RuntimePodman},
	{parent: "docker", runtime: RuntimeDocker},
	{parent: "libpod_parent", runtime: RuntimePodman},
	{prefix: "lxc.monitor.", monitor: true, anyName: true},
	{prefix: "lxc.payload.", runtime: RuntimeLXC, anyName: true},
	{parent: "lxc", runtime: RuntimeLXC, anyName: true},
	{}, // a bare ID anywhere: kubepods with the cgroupfs driver, containerd namespaces; runtime unknown
}

// match returns the container ID when part (below parent) is this layout's container component.
func (l layout) match(part, parent string) (string, bool) {
	if !strings.HasPrefix(part, l.prefix) || !strings.HasSuffix(part, l.suffix) || l.parent != "" && l.parent != parent {
		return "", false
	}
	id := strings.TrimSuffix(strings.TrimPrefix(part, l.prefix), l.suffix)
	if l.anyName {
		return id, id != ""
	}
	return id, hexID.MatchString(id)
}

// ContainerFromCgroup finds the container a cgroup path belongs to. The innermost matching component wins, so
// a container nested in another reports the inner one. ok is false for host cgroups.
func ContainerFromCgroup(path string) (c Container, ok bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i := len(parts) - 1; i >= 0 && !ok; i-- {
		parent := ""
		if i > 0 {
			parent = parts[i-1]
		}
		for _, l := range layouts {
			id, matched := l.match(parts[i], parent)
			if !matched {
				continue
			}
			if !l.monitor {
				c, ok = Container{ID: id, Runtime: l.runtime}, true
			}
			break
		}
	}
	if ok {
		c.PodUID = podUID(parts)
	}
	return c, ok
}

func podUID(parts []string) string {
	for _, part := range parts {
		if m := podComponent.FindStringSubmatch(part); m != nil {
			return strings.ReplaceAll(m[1], "_", "-")
		}
	}
	return ""
}
