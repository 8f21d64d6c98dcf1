// Package deploy holds escapewatch's deployment files: a Kubernetes DaemonSet (kubernetes/escapewatch.yaml) and a
// hardened systemd unit (systemd/escapewatch.service). It has no code; its tests hold the files to the sensor's
// command line, endpoints and needs, so that a change on either side that breaks a deployment fails here.
package deploy
