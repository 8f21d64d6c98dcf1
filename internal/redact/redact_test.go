package redact

import (
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for _, tt := range []struct {
		raw, want string
		secrets   []string // must not appear
	}{
		{"https://siem.example", "https://siem.example", nil},
		{"https://siem.example/", "https://siem.example", nil},
		{"https://siem.example:8443/hook", "https://siem.example:8443/[redacted]", []string{"hook"}},
		{"https://hooks.example/services/T0/B0/s3cr3t", "https://hooks.example/[redacted]", []string{"s3cr3t", "services"}},
		{"http://siem.example/?token=s3cr3t", "http://siem.example/[redacted]", []string{"s3cr3t", "token"}},
		{"https://user:s3cr3t@siem.example", "https://siem.example/[redacted]", []string{"s3cr3t", "user"}},
		{"https://siem.example#s3cr3t", "https://siem.example/[redacted]", []string{"s3cr3t"}},
		{"https://siem.example?", "https://siem.example/[redacted]", nil},
		{"https://[::1]:8443/x", "https://[::1]:8443/[redacted]", nil},
		{"https://siem example/s3cr3t%zz", "(URL [redacted])", []string{"s3cr3t", "siem"}},
		{"siem.example/s3cr3t", "(URL [redacted])", []string{"s3cr3t"}},
		{"mailto:s3cr3t@example", "(URL [redacted])", []string{"s3cr3t"}},
		{"", "(URL [redacted])", nil},
	} {
		t.Run(tt.raw, func(t *testing.T) {
			got := URL(tt.raw)
			if got != tt.want {
				t.Errorf("URL(%q) = %q, want %q", tt.raw, got, tt.want)
			}
			for _, s := range tt.secrets {
				if strings.Contains(got, s) {
					t.Errorf("URL(%q) = %q still holds %q", tt.raw, got, s)
				}
			}
		})
	}
}
