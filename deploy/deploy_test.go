package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const manifestPath = "kubernetes/escapewatch.yaml"

// runFlags are the flags of `escapewatch run` a deployment may use; each takes a value.
var runFlags = map[string]bool{
	"--backend": true, "--scope": true, "--config": true, "--metrics-addr": true, "--output": true,
	"--output-file": true, "--webhook-url": true, "--spool-dir": true,
}

// podCapabilities are the capabilities the sensor needs in a pod, and no more (the manifest says why each).
var podCapabilities = []corev1.Capability{"BPF", "DAC_READ_SEARCH", "PERFMON", "SYS_ADMIN", "SYS_PTRACE", "SYS_RESOURCE"}

// hostMounts are the host paths the pod may see, each mounted at the same path, since the sensor reads them where
// the host has them.
var hostMounts = []struct {
	path        string
	readOnly    bool
	typ         corev1.HostPathType
	propagation corev1.MountPropagationMode // "" for the default (None)
}{
	// Kernel filesystems exist wherever the sensor can run; DirectoryOrCreate would make directories in sysfs.
	{"/sys/kernel/btf", true, corev1.HostPathDirectory, ""},
	{"/sys/kernel/security", true, corev1.HostPathDirectory, ""},
	{"/sys/kernel/tracing", true, corev1.HostPathDirectory, ""},
	{"/sys/kernel/debug", true, corev1.HostPathDirectory, ""},
	{"/sys/fs/bpf", true, corev1.HostPathDirectory, ""},
	{"/run/containerd", true, corev1.HostPathDirectoryOrCreate, corev1.MountPropagationHostToContainer},
	// The spool, the only host path the sensor writes.
	{"/var/lib/escapewatch", false, corev1.HostPathDirectoryOrCreate, ""},
}

// manifests is the decoded manifest file, one object of each kind.
type manifests struct {
	ns *corev1.Namespace
	sa *corev1.ServiceAccount
	ds *appsv1.DaemonSet
}

// decodeManifests splits a multi-document YAML stream and decodes each document strictly into its Kubernetes
// API type: an unknown or misspelt field, or a duplicated key, is an error, as the API server's strict field
// validation (kubectl's default) makes it at apply time.
func decodeManifests(r io.Reader) (manifests, error) {
	var m manifests
	docs := k8syaml.NewYAMLReader(bufio.NewReader(r))
	for i := 1; ; i++ {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return m, fmt.Errorf("document %d: %w", i, err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return m, fmt.Errorf("document %d: %w", i, err)
		}
		var obj any
		switch gvk := tm.APIVersion + " " + tm.Kind; {
		case gvk == " " && len(bytes.TrimSpace(stripComments(doc))) == 0:
			continue
		case gvk == "v1 Namespace" && m.ns == nil:
			m.ns = &corev1.Namespace{}
			obj = m.ns
		case gvk == "v1 ServiceAccount" && m.sa == nil:
			m.sa = &corev1.ServiceAccount{}
			obj = m.sa
		case gvk == "apps/v1 DaemonSet" && m.ds == nil:
			m.ds = &appsv1.DaemonSet{}
			obj = m.ds
		default:
			return m, fmt.Errorf("document %d: unexpected object %q (want one each of v1 Namespace, v1 ServiceAccount, apps/v1 DaemonSet)", i, gvk)
		}
		if err := decodeStrict(doc, obj); err != nil {
			return m, fmt.Errorf("document %d (%s): %w", i, tm.Kind, err)
		}
	}
	if m.ns == nil || m.sa == nil || m.ds == nil {
		return m, errors.New("want one each of Namespace, ServiceAccount and DaemonSet")
	}
	return m, nil
}

// decodeStrict decodes one YAML document the way the API server reads a request under strict field validation:
// duplicate keys are errors, and field names match case-sensitively (encoding/json, and so sigs.k8s.io/yaml's
// UnmarshalStrict, would take "readOnlyRootFileSystem" for readOnlyRootFilesystem).
func decodeStrict(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := sigsjson.UnmarshalStrict(j, obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// stripComments drops YAML comment lines, so that a document of comments alone counts as empty.
func stripComments(doc []byte) []byte {
	var out bytes.Buffer
	for line := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out.Write(line)
		}
	}
	return out.Bytes()
}

func loadManifests(t *testing.T) manifests {
	t.Helper()
	f, err := os.Open(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := decodeManifests(f)
	if err != nil {
		t.Fatalf("%s: %v", manifestPath, err)
	}
	return m
}

// runArgs checks a command line of `escapewatch run` against runFlags and returns the flags' values.
func runArgs(args []string) (map[string]string, error) {
	if len(args) == 0 || args[0] != "run" {
		return nil, fmt.Errorf("args %q: want the run command first", args)
	}
	flags := map[string]string{}
	for i := 1; i < len(args); i++ {
		flag, value, hasValue := strings.Cut(args[i], "=")
		if !runFlags[flag] {
			return nil, fmt.Errorf("args %q: %q is not a flag of escapewatch run (want one of --backend, --scope, --config, --metrics-addr, --output, --output-file, --webhook-url, --spool-dir)", args, args[i])
		}
		if !hasValue {
			if i+1 == len(args) {
				return nil, fmt.Errorf("args %q: %s has no value", args, flag)
			}
			i++
			value = args[i]
		}
		if _, dup := flags[flag]; dup {
			return nil, fmt.Errorf("args %q: %s given twice", args, flag)
		}
		flags[flag] = value
	}
	return flags, nil
}

func TestRunArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"run"}, true},
		{[]string{"run", "--metrics-addr", "0.0.0.0:9464", "--spool-dir=/s"}, true},
		{[]string{"--metrics-addr", "x"}, false},
		{[]string{"run", "--metrics-adr", "x"}, false},
		{[]string{"run", "--enforce", "x"}, false},
		{[]string{"run", "--spool-dir"}, false},
		{[]string{"run", "--scope", "a", "--scope", "b"}, false},
	} {
		if _, err := runArgs(tc.args); (err == nil) != tc.ok {
			t.Errorf("runArgs(%q): %v, want ok %v", tc.args, err, tc.ok)
		}
	}
}

// TestDecodeIsStrict: the checks below are only worth something if a misspelt field fails instead of vanishing.
func TestDecodeIsStrict(t *testing.T) {
	data, err := os.ReadFile(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, from, to string }{
		{"misspelt field", "readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true"},
		{"unknown field", "hostPID: true", "hostPID: true\n      hostPid: true"},
		{"duplicate key", "hostPID: true", "hostPID: true\n      hostPID: false"},
		{"wrong type", "containerPort: 9464", "containerPort: metrics"},
		{"unknown kind", "kind: ServiceAccount", "kind: ServiceAcount"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !bytes.Contains(data, []byte(tc.from)) {
				t.Fatalf("%s no longer contains %q: update this test", manifestPath, tc.from)
			}
			broken := bytes.Replace(data, []byte(tc.from), []byte(tc.to), 1)
			if _, err := decodeManifests(bytes.NewReader(broken)); err == nil {
				t.Errorf("decoding with %q replaced by %q succeeded, want an error", tc.from, tc.to)
			}
		})
	}
}

// metricsPort is the port of --metrics-addr.
func metricsPort(t *testing.T, c corev1.Container) int32 {
	t.Helper()
	flags, err := runArgs(c.Args)
	if err != nil {
		t.Fatal(err)
	}
	host, port, err := net.SplitHostPort(flags["--metrics-addr"])
	if err != nil {
		t.Fatalf("--metrics-addr %q: %v", flags["--metrics-addr"], err)
	}
	// Loopback would serve neither Prometheus nor the kubelet's probes, which come from outside the pod.
	if host != "0.0.0.0" && host != "" && host != "::" {
		t.Fatalf("--metrics-addr %q: listen on every address of the pod, not %q", flags["--metrics-addr"], host)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		t.Fatalf("--metrics-addr %q: %v", flags["--metrics-addr"], err)
	}
	return int32(n)
}

// portNumber resolves a probe's port (a number or a container port's name).
func portNumber(c corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return -1
}

func TestDaemonSet(t *testing.T) {
	m := loadManifests(t)
	pod := m.ds.Spec.Template.Spec
	if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
		t.Fatalf("%d containers and %d init containers, want one container", len(pod.Containers), len(pod.InitContainers))
	}
	c := pod.Containers[0]
	port := metricsPort(t, c)

	for _, tc := range []struct {
		name string
		ok   bool
		got  any
	}{
		{"objects share the namespace", m.sa.Namespace == m.ns.Name && m.ds.Namespace == m.ns.Name,
			[]string{m.ns.Name, m.sa.Namespace, m.ds.Namespace}},
		// hostPID and hostPath volumes are refused by the baseline Pod Security Standard.
		{"namespace admits privileged pods", m.ns.Labels["pod-security.kubernetes.io/enforce"] == "privileged", m.ns.Labels},
		{"service account without token", m.sa.AutomountServiceAccountToken != nil && !*m.sa.AutomountServiceAccountToken,
			show(m.sa.AutomountServiceAccountToken)},
		{"pod uses the service account", pod.ServiceAccountName == m.sa.Name, pod.ServiceAccountName},
		{"pod without token", pod.AutomountServiceAccountToken != nil && !*pod.AutomountServiceAccountToken,
			show(pod.AutomountServiceAccountToken)},
		{"selector matches the pod", m.ds.Spec.Selector != nil && len(m.ds.Spec.Selector.MatchLabels) > 0 &&
			matches(m.ds.Spec.Selector.MatchLabels, m.ds.Spec.Template.Labels), m.ds.Spec.Selector},
		{"rolling update", m.ds.Spec.UpdateStrategy.Type == appsv1.RollingUpdateDaemonSetStrategyType, m.ds.Spec.UpdateStrategy},
		{"host PID namespace", pod.HostPID, pod.HostPID},
		{"not the host's network or IPC", !pod.HostNetwork && !pod.HostIPC, []bool{pod.HostNetwork, pod.HostIPC}},
		{"node-critical priority", pod.PriorityClassName == "system-node-critical", pod.PriorityClassName},
		{"tolerates every taint", slices.ContainsFunc(pod.Tolerations, func(t corev1.Toleration) bool {
			return t.Key == "" && t.Operator == corev1.TolerationOpExists && t.Effect == ""
		}), pod.Tolerations},
		// The README tells users to replace this exact placeholder.
		{"placeholder image", c.Image == "ghcr.io/escapewatch/escapewatch:latest", c.Image},
		{"metrics container port", portNumber(c, intstr.FromString("metrics")) == port, c.Ports},
		{"readiness probe on /readyz", c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil &&
			c.ReadinessProbe.HTTPGet.Path == "/readyz" && portNumber(c, c.ReadinessProbe.HTTPGet.Port) == port, c.ReadinessProbe},
		{"liveness probe on /healthz", c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil &&
			c.LivenessProbe.HTTPGet.Path == "/healthz" && portNumber(c, c.LivenessProbe.HTTPGet.Port) == port, c.LivenessProbe},
		{"scrape annotations", matches(map[string]string{"prometheus.io/scrape": "true",
			"prometheus.io/port": strconv.Itoa(int(port)), "prometheus.io/path": "/metrics"}, m.ds.Spec.Template.Annotations),
			m.ds.Spec.Template.Annotations},
		{"requests and limits", resourcesBounded(c.Resources), c.Resources},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.ok {
				t.Errorf("got %+v", tc.got)
			}
		})
	}
}

func matches(want, labels map[string]string) bool {
	for k, v := range want {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// resourcesBounded: CPU and memory are requested and limited, with requests within limits.
func resourcesBounded(r corev1.ResourceRequirements) bool {
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := r.Requests[name]
		lim, okLim := r.Limits[name]
		if !okReq || !okLim || req.Cmp(lim) > 0 {
			return false
		}
	}
	return true
}

func TestSecurityContext(t *testing.T) {
	m := loadManifests(t)
	c := m.ds.Spec.Template.Spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("no securityContext")
	}
	var add, drop []corev1.Capability
	if sc.Capabilities != nil {
		add, drop = slices.Clone(sc.Capabilities.Add), sc.Capabilities.Drop
		slices.Sort(add)
	}
	for _, tc := range []struct {
		name string
		ok   bool
		got  any
	}{
		{"not privileged", sc.Privileged == nil || !*sc.Privileged, show(sc.Privileged)},
		// The API server refuses allowPrivilegeEscalation: false next to SYS_ADMIN.
		{"allowPrivilegeEscalation unset", sc.AllowPrivilegeEscalation == nil, show(sc.AllowPrivilegeEscalation)},
		{"read-only root filesystem", sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem, show(sc.ReadOnlyRootFilesystem)},
		{"root", sc.RunAsUser != nil && *sc.RunAsUser == 0, show(sc.RunAsUser)},
		{"drops every capability", slices.Equal(drop, []corev1.Capability{"ALL"}), drop},
		{"adds exactly the needed ones", slices.Equal(add, podCapabilities), add},
		{"seccomp profile set", sc.SeccompProfile != nil &&
			(sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault || sc.SeccompProfile.Type == corev1.SeccompProfileTypeUnconfined),
			sc.SeccompProfile},
		// The runtimes' default AppArmor profiles deny mount and /sys/kernel/security.
		{"AppArmor unconfined", sc.AppArmorProfile != nil && sc.AppArmorProfile.Type == corev1.AppArmorProfileTypeUnconfined,
			sc.AppArmorProfile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.ok {
				t.Errorf("got %+v", tc.got)
			}
		})
	}
}

func TestMounts(t *testing.T) {
	m := loadManifests(t)
	pod := m.ds.Spec.Template.Spec
	c := pod.Containers[0]
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	mounts := map[string]corev1.VolumeMount{} // by host path
	emptyDirs := map[string]corev1.VolumeMount{}
	for _, vm := range c.VolumeMounts {
		v, ok := volumes[vm.Name]
		switch {
		case !ok:
			t.Errorf("volumeMount %q names no volume", vm.Name)
		case v.HostPath != nil:
			mounts[path.Clean(v.HostPath.Path)] = vm
		case v.EmptyDir != nil:
			emptyDirs[vm.MountPath] = vm
		default:
			t.Errorf("volume %q is neither a hostPath nor an emptyDir", vm.Name)
		}
	}

	for _, want := range hostMounts {
		t.Run(want.path, func(t *testing.T) {
			vm, ok := mounts[want.path]
			if !ok {
				t.Fatalf("host path %s is not mounted", want.path)
			}
			delete(mounts, want.path)
			if vm.MountPath != want.path {
				t.Errorf("mounted at %s, want the host's own path %s", vm.MountPath, want.path)
			}
			if vm.ReadOnly != want.readOnly {
				t.Errorf("readOnly = %v, want %v", vm.ReadOnly, want.readOnly)
			}
			if got := volumes[vm.Name].HostPath.Type; got == nil || *got != want.typ {
				t.Errorf("hostPath type = %v, want %q", got, want.typ)
			}
			if got := ptrValue(vm.MountPropagation); got != want.propagation {
				t.Errorf("mountPropagation = %q, want %q", got, want.propagation)
			}
		})
	}
	// /proc in particular: with hostPID the container's own /proc already shows every process of the node.
	for p := range mounts {
		t.Errorf("host path %s is mounted but not in the list of what the sensor needs", p)
	}

	// The root filesystem is read-only: what the sensor writes must be on a writable mount.
	flags, err := runArgs(c.Args)
	if err != nil {
		t.Fatal(err)
	}
	writable := []string{}
	for _, vm := range c.VolumeMounts {
		if !vm.ReadOnly {
			writable = append(writable, vm.MountPath)
		}
	}
	for _, dir := range []string{flags["--spool-dir"], "/tmp"} {
		if !slices.ContainsFunc(writable, func(mp string) bool { return dir == mp || strings.HasPrefix(dir, mp+"/") }) {
			t.Errorf("%s is on no writable mount (writable: %q)", dir, writable)
		}
	}
	if _, ok := emptyDirs["/tmp"]; !ok {
		t.Errorf("/tmp is not an emptyDir: selftest needs it for its mount points")
	}
}

// show is a pointer's value for messages: "nil" or what it points to.
func show[T any](p *T) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

func ptrValue[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
