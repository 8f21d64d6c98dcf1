package enrich

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	imagesapi "github.com/containerd/containerd/api/services/images/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	// containerdNamespaceKey is the gRPC metadata key that scopes a containerd request to a namespace.
	containerdNamespaceKey = "containerd-namespace"
	// mobyNamespace is where Docker has containerd run its containers.
	mobyNamespace = "moby"
)

// containerdAPI asks containerd's gRPC API: the containers service for the container, then the images service
// for the digest of its image.
type containerdAPI struct {
	conn       *grpc.ClientConn
	containers containersapi.ContainersClient
	images     imagesapi.ImagesClient
	namespaces []string
	log        *slog.Logger
}

func newContainerdAPI(connect connector, namespaces []string, log *slog.Logger) (runtimeAPI, error) {
	// passthrough: the target is no address to resolve, the dialer always dials the socket.
	conn, err := grpc.NewClient("passthrough:///containerd",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return connect(ctx) }),
	)
	if err != nil {
		return nil, err
	}
	return &containerdAPI{
		conn:       conn,
		containers: containersapi.NewContainersClient(conn),
		images:     imagesapi.NewImagesClient(conn),
		namespaces: namespaces,
		log:        log,
	}, nil
}

// inspect searches the namespaces in order: the same ID in two namespaces is two containers, and the first
// namespace is the likeliest (k8s.io on a Kubernetes node).
func (a *containerdAPI) inspect(ctx context.Context, id string) (Details, error) {
	for _, ns := range a.namespaces {
		nsCtx := metadata.AppendToOutgoingContext(ctx, containerdNamespaceKey, ns)
		resp, err := a.containers.Get(nsCtx, &containersapi.GetContainerRequest{ID: id})
		if status.Code(err) == codes.NotFound {
			continue
		}
		if err != nil {
			return Details{}, fmt.Errorf("get the container in namespace %s: %w", ns, err)
		}
		if ns == mobyNamespace {
			return a.details(nsCtx, resp.GetContainer()), errForDocker
		}
		return a.details(nsCtx, resp.GetContainer()), nil
	}
	return Details{}, errNotFound
}

func (a *containerdAPI) details(nsCtx context.Context, c *containersapi.Container) Details {
	labels := c.GetLabels()
	d := Details{
		Name:         labels[labelContainerName],
		Image:        c.GetImage(),
		PodName:      labels[labelPodName],
		PodNamespace: labels[labelPodNamespace],
		PodUID:       labels[labelPodUID],
	}
	if d.Name == "" {
		// Containers not made by the CRI plugin (ctr, nerdctl, moby's) have no name label; their ID is the name
		// their tools show.
		d.Name = c.GetID()
	}
	d.ImageDigest = a.imageDigest(nsCtx, d.Image)
	return d
}

// imageDigest returns the digest of the image's target (its manifest or index, as `ctr images ls` shows), or ""
// when the image is gone (containers outlive their images) or the images service fails: the container's
// details are worth reporting without it.
func (a *containerdAPI) imageDigest(nsCtx context.Context, image string) string {
	if image == "" {
		return ""
	}
	resp, err := a.images.Get(nsCtx, &imagesapi.GetImageRequest{Name: image})
	if err != nil {
		if status.Code(err) != codes.NotFound {
			a.log.Debug("get the image digest from containerd", "image", image, "error", err)
		}
		return ""
	}
	return resp.GetImage().GetTarget().GetDigest()
}

func (a *containerdAPI) close() error {
	return a.conn.Close()
}
