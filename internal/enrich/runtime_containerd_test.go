package enrich

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// fakeContainerd serves containerd's containers and images services from testdata/runtime/containerd.json.
type fakeContainerd struct {
	containers map[string]*containersapi.Container // by namespace + "/" + ID
	images     map[string]*imagesapi.Image         // by namespace + "/" + name
	gate       gate                                // holds container answers while open
	gets       atomic.Int64                        // container Get requests
}

// recordedContainerd is the layout of containerd.json; the messages are protojson.
type recordedContainerd struct {
	Containers []struct {
		Namespace string
		Container json.RawMessage
	}
	Images []struct {
		Namespace string
		Image     json.RawMessage
	}
}

func newFakeContainerd(t *testing.T) *fakeContainerd {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "runtime", "containerd.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec recordedContainerd
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatalf("decode containerd.json: %v", err)
	}
	f := &fakeContainerd{containers: map[string]*containersapi.Container{}, images: map[string]*imagesapi.Image{}}
	for _, c := range rec.Containers {
		var msg containersapi.Container
		if err := protojson.Unmarshal(c.Container, &msg); err != nil {
			t.Fatalf("decode a recorded container: %v", err)
		}
		f.containers[c.Namespace+"/"+msg.GetID()] = &msg
	}
	for _, i := range rec.Images {
		var msg imagesapi.Image
		if err := protojson.Unmarshal(i.Image, &msg); err != nil {
			t.Fatalf("decode a recorded image: %v", err)
		}
		f.images[i.Namespace+"/"+msg.GetName()] = &msg
	}
	return f
}

// namespaceOf returns the request's namespace, refusing requests without one as containerd does.
func namespaceOf(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if ns := md.Get(containerdNamespaceKey); len(ns) == 1 && ns[0] != "" {
		return ns[0], nil
	}
	return "", status.Error(codes.FailedPrecondition, "namespace is required: failed precondition")
}

type fakeContainers struct {
	containersapi.UnimplementedContainersServer
	f *fakeContainerd
}

func (s fakeContainers) Get(ctx context.Context, req *containersapi.GetContainerRequest) (*containersapi.GetContainerResponse, error) {
	s.f.gets.Add(1)
	if !s.f.gate.pass(ctx) {
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	ns, err := namespaceOf(ctx)
	if err != nil {
		return nil, err
	}
	c, ok := s.f.containers[ns+"/"+req.GetID()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "container %q in namespace %q: not found", req.GetID(), ns)
	}
	return &containersapi.GetContainerResponse{Container: c}, nil
}

type fakeImages struct {
	imagesapi.UnimplementedImagesServer
	f *fakeContainerd
}

func (s fakeImages) Get(ctx context.Context, req *imagesapi.GetImageRequest) (*imagesapi.GetImageResponse, error) {
	ns, err := namespaceOf(ctx)
	if err != nil {
		return nil, err
	}
	i, ok := s.f.images[ns+"/"+req.GetName()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "image %q: not found", req.GetName())
	}
	return &imagesapi.GetImageResponse{Image: i}, nil
}

// serveContainerd serves f on a unix socket until the test ends and returns the socket's path.
func serveContainerd(t *testing.T, f *fakeContainerd) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "containerd.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatalf("listen on %s: %v", socket, err)
	}
	srv := grpc.NewServer()
	containersapi.RegisterContainersServer(srv, fakeContainers{f: f})
	imagesapi.RegisterImagesServer(srv, fakeImages{f: f})
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return socket
}

func TestRuntimesContainerd(t *testing.T) {
	tests := []struct {
		name     string
		c        Container
		want     Details
		wantGets int64 // one per namespace asked
	}{
		{"CRI container in k8s.io", Container{ID: kubeProxyID, Runtime: RuntimeContainerd}, kubeProxyDetails, 1},
		{"runtime unknown from the cgroup path", Container{ID: kubeProxyID}, kubeProxyDetails, 1},
		{"sandbox whose image is gone", Container{ID: sandboxID, Runtime: RuntimeContainerd}, Details{
			Name:         sandboxID,
			Image:        "registry.k8s.io/pause:3.10",
			PodName:      "kube-proxy-8xk2v",
			PodNamespace: "kube-system",
			PodUID:       "0c9d8e7f-6a5b-4c3d-8e2f-1a0b9c8d7e6f",
		}, 1},
		{"ctr container in the last namespace", Container{ID: redisID, Runtime: RuntimeContainerd}, Details{
			Name:        redisID,
			Image:       "docker.io/library/redis:7.4",
			ImageDigest: "sha256:bc4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a",
		}, 3},
		{"Docker's container in the moby namespace", Container{ID: nginxID}, Details{Name: nginxID}, 2},
		{"not found in any namespace", Container{ID: unknownID, Runtime: RuntimeContainerd}, Details{}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeContainerd(t)
			r, logs := testRuntimes(t, RuntimeOptions{ContainerdSocket: serveContainerd(t, f)}, nil)
			if got := r.Lookup(t.Context(), tt.c); got != tt.want {
				t.Errorf("Lookup(%+v) = %+v, want %+v", tt.c, got, tt.want)
			}
			if n := f.gets.Load(); n != tt.wantGets {
				t.Errorf("%d container requests, want %d", n, tt.wantGets)
			}
			if s := r.Stats(); s.Errors != 0 || s.Misses != 1 {
				t.Errorf("Stats() = %+v, want 1 miss and no errors", s)
			}
			if n := logs.count(slog.LevelWarn); n != 0 {
				t.Errorf("%d warnings logged, want none", n)
			}
		})
	}
}

// With the runtime unknown, containerd is asked first and Docker when containerd does not know the ID or runs
// it for Docker.
func TestRuntimesUnknownRuntimeOrder(t *testing.T) {
	docker := newFakeDocker()
	docker.files[kubeProxyID] = "docker-inspect-nginx.json" // would answer nginxDetails if asked
	containerd := newFakeContainerd(t)
	r, _ := testRuntimes(t, RuntimeOptions{
		DockerSocket:     serveDocker(t, docker),
		ContainerdSocket: serveContainerd(t, containerd),
	}, nil)

	if got := r.Lookup(t.Context(), Container{ID: kubeProxyID}); got != kubeProxyDetails {
		t.Errorf("Lookup of a container both know = %+v, want containerd's %+v", got, kubeProxyDetails)
	}
	if n := docker.requests.Load(); n != 0 {
		t.Errorf("Docker asked %d times about a container containerd knows, want 0", n)
	}
	if got := r.Lookup(t.Context(), Container{ID: nginxID}); got != nginxDetails {
		t.Errorf("Lookup of a Docker container = %+v, want Docker's %+v", got, nginxDetails)
	}
	if got := r.Lookup(t.Context(), Container{ID: criDockerdID}); got != criDockerdDetails {
		t.Errorf("Lookup of a container only Docker knows = %+v, want %+v", got, criDockerdDetails)
	}
	if n := containerd.gets.Load(); n != 1+2+3 {
		t.Errorf("containerd asked %d times, want 6 (1, 2 to find moby, then 3 namespaces)", n)
	}
	if s := r.Stats(); s.Errors != 0 {
		t.Errorf("Stats() = %+v, want no errors", s)
	}
}

// containerd's record of a Docker container is the answer when Docker cannot say more, but only for a short
// time: Docker may answer later.
func TestRuntimesDockerRecordInContainerd(t *testing.T) {
	r, _ := testRuntimes(t, RuntimeOptions{
		ContainerdSocket: serveContainerd(t, newFakeContainerd(t)),
		CacheTTL:         time.Hour,
	}, nil)
	if got, want := r.Lookup(t.Context(), Container{ID: nginxID}), (Details{Name: nginxID}); got != want {
		t.Errorf("Lookup with Docker absent = %+v, want containerd's %+v", got, want)
	}
	r.mu.Lock()
	expires := r.cache[nginxID].expires
	r.mu.Unlock()
	if left := time.Until(expires); left > absentBackoff {
		t.Errorf("answer kept for %v, want at most %v while Docker is absent", left, absentBackoff)
	}
}
