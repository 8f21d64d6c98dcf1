package enrich

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"
)

// outcome is what one runtime made of a lookup.
type outcome int

const (
	outcomeFound       outcome = iota
	outcomeNotFound            // the runtime answered that it does not know the container
	outcomeForDocker           // containerd's thin record of a Docker container: Docker knows more
	outcomeUnavailable         // no answer, and nothing to count: runtime not present, or Runtimes closing
	outcomeFailed              // no answer because of an error worth counting
)

// runtimeAPI is a client of one runtime's API.
type runtimeAPI interface {
	// inspect returns errNotFound when the runtime does not know the container, and the details with
	// errForDocker when it runs the container for Docker.
	inspect(ctx context.Context, id string) (Details, error)
	close() error
}

// connector dials the runtime's socket.
type connector func(ctx context.Context) (net.Conn, error)

// backend is one runtime: its API client, made when needed, and what is remembered about its failures.
type backend struct {
	name, socket string
	dial         dialFunc
	newAPI       func(connector) (runtimeAPI, error)
	log          *slog.Logger

	mu           sync.Mutex
	api          runtimeAPI // nil until needed, and again after the runtime went away
	absentUntil  time.Time  // the socket was missing or refused: leave it alone until then
	absentLogged bool       // the absence was logged; reset when the runtime answers again
	lastWarn     time.Time
}

func newBackend(name, socket string, dial dialFunc, log *slog.Logger, newAPI func(connector) (runtimeAPI, error)) *backend {
	return &backend{name: name, socket: socket, dial: dial, newAPI: newAPI, log: log}
}

// lookup asks the runtime about container id, giving it at most timeout.
func (b *backend) lookup(ctx context.Context, id string, timeout time.Duration) (Details, outcome) {
	api, ok, err := b.client()
	if err != nil {
		b.warn(id, err)
		return Details{}, outcomeFailed
	}
	if !ok {
		return Details{}, outcomeUnavailable
	}
	reqCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d, err := api.inspect(reqCtx, id)
	switch {
	case err == nil:
		b.answered()
		return d, outcomeFound
	case errors.Is(err, errNotFound):
		b.answered()
		return Details{}, outcomeNotFound
	case errors.Is(err, errForDocker):
		b.answered()
		return d, outcomeForDocker
	case ctx.Err() != nil:
		return Details{}, outcomeUnavailable // Runtimes closing
	case b.absent():
		b.drop(api)
		return Details{}, outcomeUnavailable
	}
	b.warn(id, fmt.Errorf("look up container %s in the %s API at %s (check that the runtime is healthy and "+
		"the sensor may use its socket): %w", id, b.name, b.socket, err))
	return Details{}, outcomeFailed
}

// client returns the API client, making it when needed; ok is false while the runtime is known to be absent.
func (b *backend) client() (api runtimeAPI, ok bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if time.Now().Before(b.absentUntil) {
		return nil, false, nil
	}
	if b.api == nil {
		b.api, err = b.newAPI(b.dialSocket)
		if err != nil {
			return nil, false, fmt.Errorf("make a client for the %s API at %s: %w", b.name, b.socket, err)
		}
	}
	return b.api, true, nil
}

// dialSocket is the only way the API clients reach the runtime, so it is where a missing runtime shows: the
// API clients' own errors (a gRPC status, an HTTP client error) do not all keep the errno.
func (b *backend) dialSocket(ctx context.Context) (net.Conn, error) {
	conn, err := b.dial(ctx, b.socket)
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		b.markAbsent(err)
	}
	return conn, err
}

func (b *backend) markAbsent(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.absentUntil = time.Now().Add(absentBackoff)
	if !b.absentLogged {
		b.absentLogged = true
		b.log.Debug("container runtime not present; findings carry what the cgroup path tells",
			"runtime", b.name, "socket", b.socket, "retry_after", absentBackoff, "error", err)
	}
}

func (b *backend) absent() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return time.Now().Before(b.absentUntil)
}

func (b *backend) answered() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.absentLogged = false
}

// drop closes a client whose runtime went away, so that it does not keep reconnecting in the background; the
// next lookup after the backoff makes a new one.
func (b *backend) drop(api runtimeAPI) {
	b.mu.Lock()
	if b.api == api {
		b.api = nil
	}
	b.mu.Unlock()
	if err := api.close(); err != nil {
		b.log.Debug("close container runtime client", "runtime", b.name, "error", err)
	}
}

// warn logs err at most once per warnEvery: failures come in bursts, and Stats counts them all.
func (b *backend) warn(id string, err error) {
	b.mu.Lock()
	now := time.Now()
	quiet := !b.lastWarn.IsZero() && now.Sub(b.lastWarn) < warnEvery
	if !quiet {
		b.lastWarn = now
	}
	b.mu.Unlock()
	if !quiet {
		b.log.Warn("container runtime lookup failed; findings carry what the cgroup path tells "+
			"(more failures in the next minute are only counted)", "runtime", b.name, "container", id, "error", err)
	}
}

func (b *backend) close() error {
	b.mu.Lock()
	api := b.api
	b.api = nil
	b.mu.Unlock()
	if api == nil {
		return nil
	}
	return api.close()
}
