package enrich

import "testing"

func TestContainerFromCgroup(t *testing.T) {
	const id = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80a"
	const id2 = "aa1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80b"
	tests := []struct {
		name, path string
		wantID, rt string
		wantOK     bool
	}{
		{"docker cgroupfs v1", "/docker/" + id, id, RuntimeDocker, true},
		{"docker systemd v2", "/system.slice/docker-" + id + ".scope", id, RuntimeDocker, true},
		{"containerd CRI systemd", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-" + id + ".scope", id, RuntimeContainerd, true},
		{"kubepods cgroupfs", "/kubepods/besteffort/pod0b5b0f5c-1111-2222-3333-444455556666/" + id, id, "", true},
		{"cri-o", "/kubepods.slice/kubepods-pod1.slice/crio-" + id + ".scope", id, RuntimeCRIO, true},
		{"cri-o conmon is not the container", "/kubepods.slice/kubepods-pod1.slice/crio-conmon-" + id + ".scope", "", "", false},
		{"podman", "/machine.slice/libpod-" + id + ".scope", id, RuntimePodman, true},
		{"podman cgroupfs", "/libpod_parent/" + id, id, RuntimePodman, true},
		{"nested: innermost wins", "/docker/" + id + "/docker/" + id2, id2, RuntimeDocker, true},
		{"docker with a sub-cgroup", "/system.slice/docker-" + id + ".scope/init", id, RuntimeDocker, true},
		{"host session", "/user.slice/user-0.slice/session-3.scope", "", "", false},
		{"root", "/", "", "", false},
		{"short hex is not an id", "/docker/3f1b2c4d", "", "", false},
		{"uppercase hex is not an id", "/docker/3F1B2C4D5E6F708192A3B4C5D6E7F8091A2B3C4D5E6F708192A3B4C5D6E7F80A", "", "", false},
		{"empty", "", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, ok := ContainerFromCgroup(tt.path)
			if ok != tt.wantOK || c.ID != tt.wantID || c.Runtime != tt.rt {
				t.Errorf("ContainerFromCgroup(%q) = %+v, %v; want {%s %s}, %v", tt.path, c, ok, tt.wantID, tt.rt, tt.wantOK)
			}
		})
	}
}
