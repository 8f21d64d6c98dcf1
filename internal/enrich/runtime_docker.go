package enrich

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// maxDockerResponse bounds what is read of an inspect answer; real ones are a few KiB, more with a large env.
const maxDockerResponse = 4 << 20

// dockerAPI asks the Docker Engine API over its unix socket. The version-less path lets the daemon pick its own
// API version: the fields read here are in every version, and daemons drop support for old pinned versions.
type dockerAPI struct {
	client    *http.Client
	transport *http.Transport
}

func newDockerAPI(connect connector) (runtimeAPI, error) {
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return connect(ctx) },
		// Lookups come one container at a time; one kept connection saves a dial per lookup.
		MaxIdleConns: 1,
	}
	return &dockerAPI{client: &http.Client{Transport: t}, transport: t}, nil
}

// dockerInspect is the part of GET /containers/{id}/json that Details needs.
type dockerInspect struct {
	Name   string // "/name"
	Image  string // the image ID, "sha256:..."
	Config struct {
		Image  string // the image as the user named it
		Labels map[string]string
	}
}

func (a *dockerAPI) inspect(ctx context.Context, id string) (Details, error) {
	// The host part is ignored: the transport always dials the socket.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/containers/"+url.PathEscape(id)+"/json", nil)
	if err != nil {
		return Details{}, fmt.Errorf("make the inspect request: %w", err)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return Details{}, err
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, maxDockerResponse)
	// Read to the end so that the connection can serve the next lookup.
	defer io.Copy(io.Discard, body)
	switch resp.StatusCode {
	case http.StatusOK:
		return decodeDockerInspect(body)
	case http.StatusNotFound:
		return Details{}, errNotFound
	}
	return Details{}, dockerStatusError(resp.StatusCode, body)
}

func decodeDockerInspect(r io.Reader) (Details, error) {
	var in dockerInspect
	if err := json.NewDecoder(r).Decode(&in); err != nil {
		return Details{}, fmt.Errorf("decode the inspect answer (is the socket the Docker daemon's?): %w", err)
	}
	return Details{
		Name:         strings.TrimPrefix(in.Name, "/"),
		Image:        in.Config.Image,
		ImageDigest:  in.Image,
		PodName:      in.Config.Labels[labelPodName],
		PodNamespace: in.Config.Labels[labelPodNamespace],
		PodUID:       in.Config.Labels[labelPodUID],
	}, nil
}

// dockerStatusError reports an unexpected status with the daemon's own message, which says what went wrong.
func dockerStatusError(code int, body io.Reader) error {
	var msg struct{ Message string }
	if err := json.NewDecoder(body).Decode(&msg); err != nil || msg.Message == "" {
		return fmt.Errorf("docker answered %s", http.StatusText(code))
	}
	return fmt.Errorf("docker answered %s: %s", http.StatusText(code), msg.Message)
}

func (a *dockerAPI) close() error {
	a.transport.CloseIdleConnections()
	return nil
}
