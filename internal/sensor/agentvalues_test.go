package sensor

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestParseMountedAgents(t *testing.T) {
	cg, err := os.Open("testdata/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	ids, err := parseHierarchyIDs(cg)
	if err != nil {
		t.Fatal(err)
	}
	wantIDs := map[string]uint32{"name=ewesc5421": 886, "cpu": 4, "cpuacct": 4, "name=systemd": 1}
	if !reflect.DeepEqual(ids, wantIDs) {
		t.Fatalf("hierarchy IDs %v, want %v", ids, wantIDs)
	}
	mi, err := os.Open("testdata/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer mi.Close()
	values := map[uint32]string{}
	if err := parseMountedAgents(mi, ids, values); err != nil {
		t.Fatal(err)
	}
	// The cgroup2 mount and a hierarchy missing from the cgroup file are left out; escapes are undone.
	want := map[uint32]string{1: "/lib/systemd/systemd-cgroups-agent", 4: "", 886: `/a b,c=d\e`}
	if !reflect.DeepEqual(values, want) {
		t.Errorf("values %v, want %v", values, want)
	}
}

func TestParseMalformed(t *testing.T) {
	for _, c := range []struct {
		name, cgroup, mountinfo string
	}{
		{"cgroup line without fields", "garbage\n", ""},
		{"cgroup line with a bad ID", "x:cpu:/\n", ""},
		{"mountinfo line without separator", "1:cpu:/\n", "22 1 254:1 / / rw ext4\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ids, err := parseHierarchyIDs(strings.NewReader(c.cgroup))
			if err == nil {
				err = parseMountedAgents(strings.NewReader(c.mountinfo), ids, map[uint32]string{})
			}
			if err == nil {
				t.Errorf("no error for %q / %q", c.cgroup, c.mountinfo)
			}
		})
	}
}
