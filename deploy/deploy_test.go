package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"escapewatch/internal/ociimage"
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
		{"wrong type", "periodSeconds: 5", "periodSeconds: often"},
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

// metricsPort is the port of --metrics-addr, which must be the pod's loopback: on the pod's IP any other pod
// could read the counters and hold the endpoint's connections.
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
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		t.Fatalf("--metrics-addr %q: listen on the pod's loopback (127.0.0.1), not %q: other pods must not reach it "+
			"(see metrics-networkpolicy.yaml to expose it to Prometheus only)", flags["--metrics-addr"], host)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		t.Fatalf("--metrics-addr %q: %v", flags["--metrics-addr"], err)
	}
	return int32(n)
}

// probes reports whether p runs `escapewatch probe` on path of the loopback endpoint at port: the kubelet's
// httpGet probes go to the pod's IP, which a loopback endpoint does not serve.
func probes(p *corev1.Probe, port int32, path string) bool {
	want := []string{ociimage.BinaryPath, "probe", fmt.Sprintf("http://127.0.0.1:%d%s", port, path)}
	return p != nil && p.Exec != nil && p.HTTPGet == nil && p.TCPSocket == nil && p.GRPC == nil &&
		slices.Equal(p.Exec.Command, want)
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
		// Nothing listens on the pod's IP; a declared port (or a hostPort) would only invite traffic to it.
		{"no container port", len(c.Ports) == 0, c.Ports},
		{"readiness probe on /readyz", probes(c.ReadinessProbe, port, "/readyz"), c.ReadinessProbe},
		{"liveness probe on /healthz", probes(c.LivenessProbe, port, "/healthz"), c.LivenessProbe},
		// A scrape annotation would send Prometheus to the pod's IP, where nothing answers.
		{"no scrape annotations", !slices.ContainsFunc(slices.Collect(maps.Keys(m.ds.Spec.Template.Annotations)),
			func(k string) bool { return strings.HasPrefix(k, "prometheus.io/") }), m.ds.Spec.Template.Annotations},
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

const networkPolicyPath = "kubernetes/metrics-networkpolicy.yaml"

// TestMetricsNetworkPolicy: the optional policy that exposes the metrics admits only selected pods of a selected
// namespace, on the metrics port, to the sensor's pods.
func TestMetricsNetworkPolicy(t *testing.T) {
	m := loadManifests(t)
	data, err := os.ReadFile(networkPolicyPath)
	if err != nil {
		t.Fatal(err)
	}
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(data, &tm); err != nil {
		t.Fatal(err)
	}
	if tm.APIVersion != "networking.k8s.io/v1" || tm.Kind != "NetworkPolicy" {
		t.Fatalf("%s: %s %s, want networking.k8s.io/v1 NetworkPolicy", networkPolicyPath, tm.APIVersion, tm.Kind)
	}
	var np networkingv1.NetworkPolicy
	if err := decodeStrict(data, &np); err != nil {
		t.Fatalf("%s: %v", networkPolicyPath, err)
	}
	port := metricsPort(t, m.ds.Spec.Template.Spec.Containers[0])
	// An empty selector selects everything: each peer must name its namespace and its pods.
	narrow := func(p networkingv1.NetworkPolicyPeer) bool {
		return p.IPBlock == nil && p.NamespaceSelector != nil && len(p.NamespaceSelector.MatchLabels) > 0 &&
			p.PodSelector != nil && len(p.PodSelector.MatchLabels) > 0
	}
	spec := np.Spec
	for _, tc := range []struct {
		name string
		ok   bool
		got  any
	}{
		{"in the sensor's namespace", np.Namespace == m.ns.Name, np.Namespace},
		{"selects the sensor's pods", len(spec.PodSelector.MatchLabels) > 0 &&
			matches(spec.PodSelector.MatchLabels, m.ds.Spec.Template.Labels), spec.PodSelector},
		{"ingress only", slices.Equal(spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}), spec.PolicyTypes},
		{"one rule, from named pods of a named namespace", len(spec.Ingress) == 1 && len(spec.Ingress[0].From) > 0 &&
			!slices.ContainsFunc(spec.Ingress[0].From, func(p networkingv1.NetworkPolicyPeer) bool { return !narrow(p) }), spec.Ingress},
		{"the metrics port only", len(spec.Ingress) == 1 && len(spec.Ingress[0].Ports) == 1 &&
			ptrValue(spec.Ingress[0].Ports[0].Protocol) == corev1.ProtocolTCP && spec.Ingress[0].Ports[0].Port != nil &&
			spec.Ingress[0].Ports[0].Port.IntValue() == int(port) && spec.Ingress[0].Ports[0].EndPort == nil, spec.Ingress},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.ok {
				t.Errorf("got %+v", tc.got)
			}
		})
	}
}
