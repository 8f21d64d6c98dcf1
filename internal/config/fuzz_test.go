package config

import (
	"bytes"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzParse checks that Parse never panics, that what it accepts is valid (every allow entry passes Check),
// and that an accepted configuration written back as YAML parses again to the same configuration.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"",
		"backend: lsm\nscope: [all]\nenforce: true\n",
		"outputs:\n  format: json\n  file: /var/log/escapewatch.jsonl\n  webhook: {url: \"https://siem.example/hook\", header: Authorization, tokenFile: /t, timeout: 3s}\n",
		"outputs: {webhook: {url: 'http://127.0.0.1:8080/h', header: Authorization, tokenFile: /t, allowPlainHTTPToken: true}}\n",
		"metrics: {addr: \":9464\"}\naggregateWindow: 30s\n",
		"allow:\n  - {origin: host, processName: cgroup-setup, pathname: /sys/fs/cgroup/systemd/release_agent}\n" +
			"  - {containerId: abc, hierarchy: systemd}\n  - {image: \"registry.example/lxc:1\", rule: EW-1003}\n",
		"allow: [{processName: cgagent, pathname: /sys/fs/cgroup/systemd/release_agent}]\n",
		"enforceAllow: [{cgroup: /lxc.payload.sys1}]\nhostReleaseAgents: [/lib/systemd/systemd-cgroups-agent]\n",
		"hostReleaseAgents: []\n",
		"runtimes: {dockerSocket: /var/run/docker.sock, containerdSocket: /run/containerd/containerd.sock}\n",
		"a: &a [x, x]\nb: [*a, *a]\n",
		"backend: [\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(bytes.NewReader(data))
		if err != nil {
			return
		}
		for i, a := range cfg.Allow {
			if err := a.Check(); err != nil {
				t.Fatalf("accepted allow[%d] %v fails Check: %v", i, a, err)
			}
		}
		first, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("Marshal of an accepted configuration: %v", err)
		}
		again, err := Parse(bytes.NewReader(first))
		if err != nil {
			t.Fatalf("our own encoding is refused: %v\n%s", err, first)
		}
		second, err := yaml.Marshal(again)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, second) {
			t.Fatalf("the configuration changed through YAML:\n%s\n%s", first, second)
		}
	})
}
