package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string // "" = valid
		check   func(t *testing.T, c Config)
	}{
		{name: "empty file gives the defaults", yaml: "", check: func(t *testing.T, c Config) {
			if c.Backend != "auto" || strings.Join(c.Scope, ",") != "container,namespaced" || c.Metrics.Addr != "127.0.0.1:9464" ||
				time.Duration(c.AggregateWindow) != time.Minute {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{name: "full file", yaml: `
backend: lsm
scope: [all]
enforce: true
outputs:
  format: json
  file: /var/log/escapewatch.jsonl
  webhook: {url: "https://siem.example/hook", header: Authorization, tokenFile: /etc/escapewatch/token, timeout: 3s}
metrics: {addr: ":9464"}
allow:
  - {processName: systemd, origin: host}
aggregateWindow: 30s
`, check: func(t *testing.T, c Config) {
			if c.Backend != "lsm" || !c.Enforce || c.Outputs.Webhook.URL != "https://siem.example/hook" ||
				time.Duration(c.Outputs.Webhook.Timeout) != 3*time.Second || len(c.Allow) != 1 || c.Allow[0].ProcessName != "systemd" ||
				time.Duration(c.AggregateWindow) != 30*time.Second {
				t.Errorf("parsed: %+v", c)
			}
		}},
		{name: "unknown top-level key", yaml: "backnd: lsm\n", wantErr: `line 1: unknown key "backnd" (in the top level`},
		{name: "unknown nested key", yaml: "outputs:\n  fromat: json\n", wantErr: `line 2: unknown key "fromat" (in outputs`},
		{name: "bad backend", yaml: "backend: ebpf\n", wantErr: `key backend (--backend): "ebpf" is not one of auto, lsm`},
		{name: "bad scope entry", yaml: "scope: [container, pods]\n", wantErr: `key scope[1] (--scope): unknown origin "pods"`},
		{name: "empty scope", yaml: "scope: []\n", wantErr: "key scope (--scope): empty"},
		{name: "bad format", yaml: "outputs: {format: xml}\n", wantErr: `key outputs.format (--output): "xml" is not json or table`},
		{name: "bad webhook url", yaml: "outputs: {webhook: {url: 'ftp://x'}}\n", wantErr: `key outputs.webhook.url (--webhook-url): ftp://x is not an http(s) URL`},
		{name: "webhook url with a secret", yaml: "outputs: {webhook: {url: 'https://siem example/s3cr3t'}}\n",
			wantErr: `key outputs.webhook.url (--webhook-url): (URL [redacted]) is not an http(s) URL`},
		{name: "token over http", yaml: "outputs: {webhook: {url: 'http://siem.example/hook', header: Authorization, tokenFile: /t}}\n",
			wantErr: "key outputs.webhook.url (--webhook-url): http://siem.example/[redacted]: http:// would send the token in clear text"},
		{name: "credentials over http", yaml: "outputs: {webhook: {url: 'http://u:p@siem.example'}}\n", wantErr: "allowPlainHTTPToken: true"},
		{name: "token over http allowed", yaml: "outputs: {webhook: {url: 'http://127.0.0.1:8080/hook', header: Authorization, tokenFile: /t, allowPlainHTTPToken: true}}\n",
			check: func(t *testing.T, c Config) {
				if !c.Outputs.Webhook.AllowPlainHTTPToken {
					t.Errorf("parsed: %+v", c.Outputs.Webhook)
				}
			}},
		{name: "header without token", yaml: "outputs: {webhook: {url: 'https://x', header: Authorization}}\n", wantErr: "key outputs.webhook.tokenFile: header and tokenFile go together"},
		{name: "bad duration", yaml: "aggregateWindow: soon\n", wantErr: `want a duration such as 30s or 5m, got "soon"`},
		{name: "empty allow entry", yaml: "allow: [{}]\n", wantErr: "key allow[0]: empty entry would allow every finding"},
		{name: "bad allow origin", yaml: "allow: [{origin: moon}]\n", wantErr: `key allow[0].origin: unknown origin "moon"`},
		{name: "allow entry a container satisfies alone", yaml: "allow:\n  - {processName: cgagent, pathname: /sys/fs/cgroup/systemd/release_agent}\n",
			wantErr: "key allow[0]: {processName: cgagent, pathname: /sys/fs/cgroup/systemd/release_agent} can be matched by any container"},
		{name: "allow process name the kernel cuts", yaml: "allow: [{origin: host, processName: systemd-cgroups-agent-installer}]\n",
			wantErr: `key allow[0].processName: "systemd-cgroups-agent-installer" is 31 bytes`},
		{name: "allow path in a container", yaml: "allow: [{containerId: abc, pathname: /sys/fs/cgroup/systemd/release_agent}]\n",
			wantErr: "key allow[0].pathname:"},
		{name: "allow EW-1004", yaml: "allow: [{origin: host, rule: EW-1004}]\n", wantErr: "key allow[0].rule: EW-1004 cannot be allowed"},
		{name: "allow by identity and hierarchy", yaml: `
allow:
  - {containerId: abc, hierarchy: systemd, processName: systemd}
  - {image: "registry.example/lxc:1", rule: EW-1003}
  - {origin: host, executable: /usr/sbin/cgmgr, pathname: /sys/fs/cgroup/cgmgr/release_agent}
`, check: func(t *testing.T, c Config) {
			if len(c.Allow) != 3 || c.Allow[0].Hierarchy != "systemd" || c.Allow[1].Image != "registry.example/lxc:1" {
				t.Errorf("parsed: %+v", c.Allow)
			}
		}},
		{name: "allow unknown key", yaml: "allow: [{proces: systemd}]\n", wantErr: `line 1: unknown key "proces" (in an allow entry`},
		{name: "too many enforce allow", yaml: "enforceAllow: [" + strings.Repeat("{cgroup: /a},", 16) + "{cgroup: /b}]\n",
			wantErr: "key enforceAllow: 17 entries, at most 16"},
		{name: "wrong type", yaml: "enforce: maybe\n", wantErr: "cannot unmarshal"},
		{name: "enforce allow", yaml: "enforce: true\nenforceAllow: [{cgroup: /lxc.payload.web}]\n", check: func(t *testing.T, c Config) {
			if len(c.EnforceAllow) != 1 || c.EnforceAllow[0].Cgroup != "/lxc.payload.web" {
				t.Errorf("parsed: %+v", c.EnforceAllow)
			}
		}},
		{name: "enforce allow relative", yaml: "enforceAllow: [{cgroup: lxc.payload.web}]\n", wantErr: `key enforceAllow[0].cgroup: allowed cgroup "lxc.payload.web": want an absolute cgroup path`},
		{name: "enforce allow root", yaml: "enforceAllow: [{cgroup: /}]\n", wantErr: "would allow every process"},
		{name: "enforce allow empty", yaml: "enforceAllow: [{}]\n", wantErr: "key enforceAllow[0].cgroup"},
		{name: "enforce allow trailing slash", yaml: "enforceAllow: [{cgroup: /machine.slice/}]\n", wantErr: "remove the trailing slash"},
		{name: "enforce allow too long", yaml: "enforceAllow: [{cgroup: /" + strings.Repeat("x", 127) + "}]\n", wantErr: "at most 127"},
		{name: "host release agents default", yaml: "", check: func(t *testing.T, c Config) {
			if len(c.HostReleaseAgents) != 2 || c.HostReleaseAgents[1] != "/usr/lib/systemd/systemd-cgroups-agent" {
				t.Errorf("default: %q", c.HostReleaseAgents)
			}
		}},
		{name: "host release agents none", yaml: "hostReleaseAgents: []\n", check: func(t *testing.T, c Config) {
			if len(c.HostReleaseAgents) != 0 {
				t.Errorf("parsed: %q", c.HostReleaseAgents)
			}
		}},
		{name: "host release agent relative", yaml: "hostReleaseAgents: [agent]\n", wantErr: `key hostReleaseAgents[0]: "agent": want an absolute path`},
		{name: "host release agent too long", yaml: "hostReleaseAgents: [/" + strings.Repeat("x", 4095) + "]\n", wantErr: "at most 4095 bytes"},
		{name: "enforce allow unknown key", yaml: "enforceAllow: [{container: abc}]\n", wantErr: `unknown key "container" (in an enforceAllow entry`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader(tt.yaml))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "escapewatch.yaml")
	if err := os.WriteFile(path, []byte("backend: nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "key backend") {
		t.Fatalf("error %v, want the path and the key", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("missing file: want an error")
	}
}

// TestReadmeExample: the README's configuration example loads as it stands (it once allowed a 31-byte process
// name, which can never match).
func TestReadmeExample(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "## Configuration\n")
	_, block, ok2 := strings.Cut(section, "```yaml\n")
	example, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README.md has no ```yaml block under ## Configuration")
	}
	c, err := Parse(strings.NewReader(example))
	if err != nil {
		t.Fatalf("the README's example: %v", err)
	}
	if len(c.Allow) == 0 || c.Outputs.Webhook == nil {
		t.Errorf("the README's example lost its allow entries or webhook: %+v", c)
	}
}
