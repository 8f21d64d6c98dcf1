// Package config reads escapewatch's YAML configuration file and checks it. Command-line flags override it;
// an invalid file fails at start with the exact key and the reason.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"escapewatch/internal/redact"
	"escapewatch/internal/sensoropt"
	"escapewatch/internal/suppress"
)

// Config is the whole file. Every key is optional; Default() gives the values of a missing key.
type Config struct {
	Backend  string   `yaml:"backend"`
	Scope    []string `yaml:"scope"`
	AnyFS    bool     `yaml:"anyFS"`
	Enforce  bool     `yaml:"enforce"`
	LogLevel string   `yaml:"logLevel"`
	Outputs  Outputs  `yaml:"outputs"`
	Metrics  Metrics  `yaml:"metrics"`
	Runtimes Runtimes `yaml:"runtimes"`
	// EnforceAllow lists writers that enforce lets set release_agent besides the host's own processes (a system
	// container's init, say).
	EnforceAllow []EnforceAllow `yaml:"enforceAllow"`
	// HostReleaseAgents are release_agent values that count as the host's when the sensor finds them already set
	// at start (it cannot know who set a value before it started). The default is systemd's agent; [] trusts
	// none, so every agent set before the start raises EW-1004 when it runs (and is killed under enforce).
	HostReleaseAgents []string `yaml:"hostReleaseAgents"`
	// Allow lists findings that are expected and must not alert (a host's own agent, say).
	Allow []suppress.Allow `yaml:"allow"`
	// Aggregate repeated identical findings (same rule, process, file, value, verdict and action) within this
	// window into one with a count; 0 turns it off.
	AggregateWindow Duration `yaml:"aggregateWindow"`
}

// Outputs says where findings go.
type Outputs struct {
	Format        string   `yaml:"format"` // json or table; default: table on a terminal, json otherwise
	File          string   `yaml:"file"`
	Webhook       *Webhook `yaml:"webhook"`
	SpoolDir      string   `yaml:"spoolDir"`
	SpoolMaxBytes int64    `yaml:"spoolMaxBytes"`
}

// Webhook is an HTTP(S) endpoint that receives each finding as a POST.
type Webhook struct {
	URL       string   `yaml:"url"`
	Header    string   `yaml:"header"`    // e.g. Authorization
	TokenFile string   `yaml:"tokenFile"` // the header's value, read from a file so it stays out of the config
	Timeout   Duration `yaml:"timeout"`
	// AllowPlainHTTPToken lets the token (header, or credentials in the URL) go over http://, where anyone on
	// the path reads it; without it such a webhook is refused.
	AllowPlainHTTPToken bool `yaml:"allowPlainHTTPToken"`
}

// Metrics configures the Prometheus and health endpoint.
type Metrics struct {
	Addr string `yaml:"addr"` // "" turns it off
}

// Runtimes are the container runtimes' API sockets used for enrichment.
type Runtimes struct {
	DockerSocket     string `yaml:"dockerSocket"`
	ContainerdSocket string `yaml:"containerdSocket"`
}

// EnforceAllow is a writer enforce allows: a process in cgroup Cgroup or below it (the path /proc/PID/cgroup
// shows for the unified hierarchy, or on cgroup v1 hosts for the first controller hierarchy).
type EnforceAllow struct {
	Cgroup string `yaml:"cgroup"`
}

// Duration is a time.Duration written as "30s" or "5m" in YAML.
type Duration time.Duration

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration such as 30s or 5m, got %q", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as UnmarshalYAML reads it ("1m0s"), so a configuration written back reads the
// same.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Default returns the configuration of an empty file.
func Default() Config {
	return Config{
		Backend:           "auto",
		Scope:             []string{"container", "namespaced"},
		LogLevel:          "info",
		Outputs:           Outputs{SpoolDir: "/var/lib/escapewatch/spool", SpoolMaxBytes: 64 << 20},
		Metrics:           Metrics{Addr: "127.0.0.1:9464"},
		AggregateWindow:   Duration(time.Minute),
		HostReleaseAgents: []string{"/lib/systemd/systemd-cgroups-agent", "/usr/lib/systemd/systemd-cgroups-agent"},
	}
}

// MaxHostReleaseAgentLen is the longest value the kernel keeps in release_agent (PATH_MAX, with its NUL).
const MaxHostReleaseAgentLen = 4095

// Load reads and checks the file at path over the defaults.
func Load(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	cfg, err := Parse(f)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse reads and checks a configuration over the defaults. Unknown keys are errors: a typo must not silently
// turn a setting off.
func Parse(r io.Reader) (Config, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return Config{}, err
	}
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, explainYAML(err)
	}
	return cfg, cfg.Validate()
}

var unknownField = regexp.MustCompile(`line (\d+): field (\S+) not found in type (?:config|suppress)\.(\w+)`)

// explainYAML rewrites the decoder's Go-flavoured messages in the file's own terms.
func explainYAML(err error) error {
	msg := err.Error()
	if m := unknownField.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("line %s: unknown key %q (in %s; check its spelling against the README's configuration reference)",
			m[1], m[2], sectionOf(m[3]))
	}
	return fmt.Errorf("%s", strings.TrimPrefix(msg, "yaml: "))
}

func sectionOf(goType string) string {
	switch goType {
	case "Config":
		return "the top level"
	case "Outputs":
		return "outputs"
	case "Webhook":
		return "outputs.webhook"
	case "Metrics":
		return "metrics"
	case "Runtimes":
		return "runtimes"
	case "Allow":
		return "an allow entry"
	case "EnforceAllow":
		return "an enforceAllow entry"
	}
	return goType
}

var (
	backends  = sensoropt.Backends()
	origins   = []string{"container", "container-init", "namespaced", "host", "all"}
	formats   = []string{"", "json", "table"}
	logLevels = []string{"debug", "info", "warn", "error"}
)

// Validate checks every value and names the key of the first bad one.
func (c Config) Validate() error {
	if !oneOf(c.Backend, backends) {
		return keyErr("backend", "%q is not one of %s", c.Backend, strings.Join(backends, ", "))
	}
	if len(c.Scope) == 0 {
		return keyErr("scope", "empty: list at least one origin (%s)", strings.Join(origins, ", "))
	}
	for i, o := range c.Scope {
		if !oneOf(o, origins) {
			return keyErr(fmt.Sprintf("scope[%d]", i), "unknown origin %q (want %s)", o, strings.Join(origins, ", "))
		}
	}
	if !oneOf(c.LogLevel, logLevels) {
		return keyErr("logLevel", "%q is not one of %s", c.LogLevel, strings.Join(logLevels, ", "))
	}
	if !oneOf(c.Outputs.Format, formats) {
		return keyErr("outputs.format", "%q is not json or table", c.Outputs.Format)
	}
	if c.Outputs.SpoolMaxBytes < 0 {
		return keyErr("outputs.spoolMaxBytes", "must not be negative")
	}
	if w := c.Outputs.Webhook; w != nil {
		// Only the redacted URL is quoted: its path or query may hold a token.
		u, err := url.Parse(w.URL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return keyErr("outputs.webhook.url", "%s is not an http(s) URL (write it as https://host[:port]/path)", redact.URL(w.URL))
		}
		if (w.Header == "") != (w.TokenFile == "") {
			return keyErr("outputs.webhook.tokenFile", "header and tokenFile go together")
		}
		if u.Scheme == "http" && (w.Header != "" || u.User != nil) && !w.AllowPlainHTTPToken {
			return keyErr("outputs.webhook.url", "%s: http:// would send the token in clear text to anyone on the path: "+
				"use https://, or set outputs.webhook.allowPlainHTTPToken: true for a receiver on a network you trust "+
				"(a sidecar on loopback, say)", redact.URL(w.URL))
		}
		if w.Timeout < 0 {
			return keyErr("outputs.webhook.timeout", "must not be negative")
		}
	}
	if c.AggregateWindow < 0 {
		return keyErr("aggregateWindow", "must not be negative")
	}
	if len(c.EnforceAllow) > sensoropt.MaxEnforceAllow {
		return keyErr("enforceAllow", "%d entries, at most %d", len(c.EnforceAllow), sensoropt.MaxEnforceAllow)
	}
	for i, a := range c.EnforceAllow {
		if err := sensoropt.CheckAllowedCgroup(a.Cgroup); err != nil {
			return keyErr(fmt.Sprintf("enforceAllow[%d].cgroup", i), "%v", err)
		}
	}
	for i, v := range c.HostReleaseAgents {
		if !strings.HasPrefix(v, "/") || len(v) > MaxHostReleaseAgentLen || strings.ContainsRune(v, 0) {
			return keyErr(fmt.Sprintf("hostReleaseAgents[%d]", i), "%q: want an absolute path of at most %d bytes, as the kernel keeps it",
				v, MaxHostReleaseAgentLen)
		}
	}
	for i, a := range c.Allow {
		if err := a.Check(); err != nil {
			key := fmt.Sprintf("allow[%d]", i)
			var e *suppress.EntryError
			if errors.As(err, &e) && e.Field != "" {
				return keyErr(key+"."+e.Field, "%s", e.Problem)
			}
			return keyErr(key, "%v", err)
		}
	}
	return nil
}

// flagOf names the command-line flag that sets a key, so an error reads right whichever way the value came.
var flagOf = map[string]string{
	"backend": "--backend", "logLevel": "--log-level", "outputs.format": "--output",
	"outputs.webhook.url": "--webhook-url", "aggregateWindow": "--aggregate-window",
}

func keyErr(key, format string, args ...any) error {
	name := "key " + key
	if f, ok := flagOf[key]; ok {
		name += " (" + f + ")"
	} else if strings.HasPrefix(key, "scope") {
		name += " (--scope)"
	}
	return fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...))
}

func oneOf(v string, set []string) bool {
	for _, s := range set {
		if v == s {
			return true
		}
	}
	return false
}
