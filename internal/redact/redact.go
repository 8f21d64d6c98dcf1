// Package redact keeps secrets out of logs and error messages. Webhook URLs often carry a token in their path
// or query (https://hooks.example/services/T0/B0/SECRET, ?token=...) or credentials in their userinfo, and
// errors about them are logged on every retry.
package redact

import "net/url"

// Marker stands for what was removed.
const Marker = "[redacted]"

// URL returns raw as scheme://host[:port], followed by "/" and Marker when it had anything else (userinfo,
// path, query, fragment). It never returns any part of a URL that does not parse, nor of its path or query.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" || u.Opaque != "" {
		return "(URL " + Marker + ")"
	}
	out := u.Scheme + "://" + u.Host
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawPath != "" || u.RawQuery != "" || u.ForceQuery ||
		u.Fragment != "" {
		out += "/" + Marker
	}
	return out
}
