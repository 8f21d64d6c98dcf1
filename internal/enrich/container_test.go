package enrich

import "testing"

func TestContainerFromCgroup(t *testing.T) {
	const id = "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80a"
	const id2 = "aa1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80b"
	const uid = "0b5b0f5c-1111-2222-3333-444455556666"
	const uidSystemd = "0b5b0f5c_1111_2222_3333_444455556666"
	tests := []struct {
		name, path string
		wantID, rt string
		wantOK     bool
		podUID     string
	}{
		{"docker cgroupfs v1", "/docker/" + id, id, RuntimeDocker, true, ""},
		{"docker systemd v2", "/system.slice/docker-" + id + ".scope", id, RuntimeDocker, true, ""},
		{"containerd CRI systemd v2", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidSystemd + ".slice/cri-containerd-" + id + ".scope", id, RuntimeContainerd, true, uid},
		{"kubepods cgroupfs v1 besteffort", "/kubepods/besteffort/pod" + uid + "/" + id, id, "", true, uid},
		{"kubepods cgroupfs v1 guaranteed", "/kubepods/pod" + uid + "/" + id, id, "", true, uid},
		{"cri-o systemd", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidSystemd + ".slice/crio-" + id + ".scope", id, RuntimeCRIO, true, uid},
		{"cri-o conmon is not the container", "/kubepods.slice/kubepods-pod" + uidSystemd + ".slice/crio-conmon-" + id + ".scope", "", "", false, ""},
		{"dockershim in kubepods", "/kubepods.slice/kubepods-pod" + uidSystemd + ".slice/docker-" + id + ".scope", id, RuntimeDocker, true, uid},
		{"containerd plain namespace", "/default/" + id, id, "", true, ""},
		{"podman rootless", "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id + ".scope", id, RuntimePodman, true, ""},
		{"podman v1 cgroupfs conmon-less", "/libpod_parent/libpod-" + id, id, RuntimePodman, true, ""},
		{"lxc v1", "/lxc/web1", "web1", RuntimeLXC, true, ""},
		{"lxc v2 payload", "/lxc.payload.web1", "web1", RuntimeLXC, true, ""},
		{"lxc payload sub-cgroup", "/lxc.payload.web1/system.slice/cron.service", "web1", RuntimeLXC, true, ""},
		{"lxc monitor is not the container", "/lxc.monitor.web1", "", "", false, ""},
		{"kubepods slice without a container is the host", "/kubepods.slice/kubepods-besteffort.slice", "", "", false, ""},
		{"podman", "/machine.slice/libpod-" + id + ".scope", id, RuntimePodman, true, ""},
		{"podman cgroupfs", "/libpod_parent/" + id, id, RuntimePodman, true, ""},
		{"nested: innermost wins", "/docker/" + id + "/docker/" + id2, id2, RuntimeDocker, true, ""},
		{"docker with a sub-cgroup", "/system.slice/docker-" + id + ".scope/init", id, RuntimeDocker, true, ""},
		{"host session", "/user.slice/user-0.slice/session-3.scope", "", "", false, ""},
		{"root", "/", "", "", false, ""},
		{"short hex is not an id", "/docker/3f1b2c4d", "", "", false, ""},
		{"uppercase hex is not an id", "/docker/3F1B2C4D5E6F708192A3B4C5D6E7F8091A2B3C4D5E6F708192A3B4C5D6E7F80A", "", "", false, ""},
		{"empty", "", "", "", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, ok := ContainerFromCgroup(tt.path)
			want := Container{ID: tt.wantID, Runtime: tt.rt, PodUID: tt.podUID}
			if ok != tt.wantOK || c != want {
				t.Errorf("ContainerFromCgroup(%q) = %+v, %v; want %+v, %v", tt.path, c, ok, want, tt.wantOK)
			}
		})
	}
}
