package sensor

import (
	"bufio"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The kernel side learns each hierarchy's release_agent value, and who set it, when the hierarchy is created or
// remounted and at every write. Hierarchies that existed before the sensor started are added here from their
// mount options, which show release_agent (/proc/PID/mountinfo, in every mount namespace, since a container may
// have mounted a hierarchy the host never did). Their setter is unknown: a value present at start is trusted as
// the host's only when the configuration names it (HostReleaseAgents). A hierarchy mounted nowhere gets no
// record here, and its agent counts as set by an unknown setter.

// agentValueLen is the size of the kernel map's values (struct ew_agent_value: EW_PATH_MAX).
const agentValueLen = len(tracepointEwAgentValue{}.V)

// seedAgentState records the current release_agent of every mounted cgroup v1 hierarchy, keyed by hierarchy ID,
// without replacing what the kernel side recorded since it attached. Values in trusted count as set by the
// host. It returns how many hierarchies it added.
func seedAgentState(maps sharedMaps, procRoot string, trusted []string) (int, error) {
	ids, err := readHierarchyIDs(filepath.Join(procRoot, "self", "cgroup"))
	if err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil // cgroup v2 only: no release_agent anywhere
	}
	values, err := mountedAgentValues(procRoot, ids)
	if err != nil {
		return 0, err
	}
	added := 0
	for id, v := range values {
		if len(v) >= agentValueLen {
			continue // the kernel caps the value at PATH_MAX - 1: not a value it could hold
		}
		buf := make([]byte, agentValueLen)
		copy(buf, v)
		err := maps.agentValues.Update(id, buf, ebpf.UpdateNoExist)
		if err != nil && !errors.Is(err, ebpf.ErrKeyExist) { // exists: written since the programs attached
			return added, fmt.Errorf("record the release_agent of hierarchy %d: %w", id, err)
		}
		setter := tracepointEwAgentSetter{
			ValueHash: valueHash(v), How: uint32(kernelEwSetHowEW_SET_SEEDED),
			Trust: uint32(kernelEwTrustEW_TRUST_UNKNOWN), HierarchyId: id,
		}
		hostValue := v != "" && slices.Contains(trusted, v)
		if hostValue {
			setter.Trust = uint32(kernelEwTrustEW_TRUST_HOST)
			// The value first: a record saying "host" never lacks the value it vouches for.
			if err := maps.hostAgents.Update(id, buf, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
				return added, fmt.Errorf("record the host's release_agent of hierarchy %d: %w", id, err)
			}
		}
		err = maps.agentSetters.Update(id, &setter, ebpf.UpdateNoExist)
		if errors.Is(err, ebpf.ErrKeyExist) {
			if hostValue {
				// Set since the programs attached: the kernel's record is newer. A host value added above
				// stays only if that record is the host's.
				var cur tracepointEwAgentSetter
				if maps.agentSetters.Lookup(id, &cur) == nil && cur.Trust != uint32(kernelEwTrustEW_TRUST_HOST) {
					_ = maps.hostAgents.Delete(id)
				}
			}
			continue
		}
		if err != nil {
			return added, fmt.Errorf("record the setter of hierarchy %d's release_agent: %w", id, err)
		}
		added++
	}
	return added, nil
}

// valueHash is the kernel side's ew_value_hash: FNV-1a, 64 bits, of the value's bytes.
func valueHash(v string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(v))
	return h.Sum64()
}

// readHierarchyIDs maps every token naming a cgroup v1 hierarchy ("cpu", "cpuacct", "name=systemd") to the
// hierarchy's ID, from a /proc/PID/cgroup file: every hierarchy of the machine has a line there.
func readHierarchyIDs(path string) (map[string]uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read the cgroup hierarchies: %w", err)
	}
	defer f.Close()
	return parseHierarchyIDs(f)
}

func parseHierarchyIDs(r io.Reader) (map[string]uint32, error) {
	ids := map[string]uint32{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		id, rest, ok := strings.Cut(sc.Text(), ":")
		tokens, _, ok2 := strings.Cut(rest, ":")
		if !ok || !ok2 {
			return nil, fmt.Errorf("malformed cgroup line %q", sc.Text())
		}
		n, err := strconv.ParseUint(id, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("malformed cgroup line %q: %w", sc.Text(), err)
		}
		if n == 0 {
			continue // the cgroup v2 hierarchy
		}
		for _, tok := range strings.Split(tokens, ",") {
			if tok != "" {
				ids[tok] = uint32(n)
			}
		}
	}
	return ids, sc.Err()
}

// mountedAgentValues reads the release_agent option of every cgroup v1 mount in every mount namespace.
// Processes that exit while they are read are skipped.
func mountedAgentValues(procRoot string, ids map[string]uint32) (map[uint32]string, error) {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	values := map[uint32]string{}
	seen := map[uint64]bool{}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(procRoot, e.Name(), "ns", "mnt"), &st); err != nil || seen[st.Ino] {
			continue
		}
		seen[st.Ino] = true
		f, err := os.Open(filepath.Join(procRoot, e.Name(), "mountinfo"))
		if err != nil {
			continue
		}
		err = parseMountedAgents(f, ids, values)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s/mountinfo: %w", e.Name(), err)
		}
	}
	return values, nil
}

// parseMountedAgents adds to values the release_agent of each cgroup v1 mount in a mountinfo file ("" for a
// hierarchy without one). The hierarchy is found by its name or by any of its controllers.
func parseMountedAgents(r io.Reader, ids map[string]uint32, values map[uint32]string) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		_, after, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			return fmt.Errorf("malformed mountinfo line %q", sc.Text())
		}
		fields := strings.Fields(after)
		if len(fields) < 3 || fields[0] != "cgroup" {
			continue
		}
		id, value := uint32(0), ""
		for _, opt := range strings.Split(fields[2], ",") {
			if v, ok := strings.CutPrefix(opt, "release_agent="); ok {
				value = unescapeOctal(v)
			} else if n, ok := ids[unescapeOctal(opt)]; ok {
				id = n
			}
		}
		if id != 0 {
			values[id] = value
		}
	}
	return sc.Err()
}

// unescapeOctal undoes the kernel's \ooo escapes of mount options (space, tab, newline, comma, '=', '\').
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
