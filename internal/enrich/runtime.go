package enrich

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Details is what a runtime's API says about a container. Empty fields are unknown.
type Details struct {
	Name, Image, ImageDigest      string
	PodName, PodNamespace, PodUID string
}

// RuntimeOptions configures Runtimes. Zero fields take the defaults given beside them.
type RuntimeOptions struct {
	DockerSocket     string // default "/var/run/docker.sock"
	ContainerdSocket string // default "/run/containerd/containerd.sock"
	// ContainerdNamespaces to search, in order; default {"k8s.io", "moby", "default"}
	ContainerdNamespaces []string
	MaxWait              time.Duration // longest a Lookup blocks waiting for an API answer; default 100ms
	CacheTTL             time.Duration // how long an answer (also "not found") is kept; default 5 min
	Timeout              time.Duration // per runtime asked (containerd: the namespace search and image); default 2s
	Logger               *slog.Logger
}

// RuntimeStats counts lookups for metrics.
type RuntimeStats struct {
	Hits     uint64 // Lookups answered from the cache
	Misses   uint64 // Lookups that found no fresh answer in the cache and started or joined an API lookup
	Errors   uint64 // API requests that failed for another reason than "not found" or "runtime not present"
	InFlight int64  // API lookups running now
}

// Kubernetes labels set by the CRI implementations (containerd's CRI plugin, cri-dockerd, dockershim).
const (
	labelPodName       = "io.kubernetes.pod.name"
	labelPodNamespace  = "io.kubernetes.pod.namespace"
	labelPodUID        = "io.kubernetes.pod.uid"
	labelContainerName = "io.kubernetes.container.name"
)

const (
	// absentBackoff is how long a runtime whose socket is missing or refuses is left alone: most hosts run one
	// runtime, and dialing the others per event would cost a syscall each for nothing.
	absentBackoff = 30 * time.Second
	// warnEvery spaces out warnings of one runtime's failures, which tend to come in bursts.
	warnEvery = time.Minute
	// maxCachedContainers bounds the cache: a host runs far fewer containers at once.
	maxCachedContainers = 4096
)

var (
	// errNotFound is a runtime's answer that it does not know the container.
	errNotFound = errors.New("container not found")
	// errForDocker comes with the details of a container that containerd runs for Docker (namespace moby): its
	// record there has no name, no image name and no labels, Docker's API has them.
	errForDocker = errors.New("container run by containerd for Docker")
)

// dialFunc connects to a unix socket; tests count dials through it.
type dialFunc func(ctx context.Context, path string) (net.Conn, error)

func dialUnix(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", path)
}

// Runtimes looks containers up in the runtimes' APIs, in the background, with a cache keyed by container ID.
type Runtimes struct {
	opts       RuntimeOptions
	docker     *backend
	containerd *backend

	ctx    context.Context // ends background lookups on Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	cache map[string]*cacheEntry

	hits, misses, errs atomic.Uint64
	inFlight           atomic.Int64
}

// cacheEntry is one container's answer, or the promise of one while done is open.
type cacheEntry struct {
	done    chan struct{}
	details Details   // set before done closes
	expires time.Time // set before done closes
}

// NewRuntimes returns Runtimes that dial the sockets only when a lookup needs them.
func NewRuntimes(opts RuntimeOptions) *Runtimes {
	return newRuntimes(opts, dialUnix)
}

func newRuntimes(opts RuntimeOptions, dial dialFunc) *Runtimes {
	opts = opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	r := &Runtimes{opts: opts, ctx: ctx, cancel: cancel, cache: map[string]*cacheEntry{}}
	r.docker = newBackend(RuntimeDocker, opts.DockerSocket, dial, opts.Logger, newDockerAPI)
	r.containerd = newBackend(RuntimeContainerd, opts.ContainerdSocket, dial, opts.Logger, func(c connector) (runtimeAPI, error) {
		return newContainerdAPI(c, opts.ContainerdNamespaces, opts.Logger)
	})
	return r
}

func (o RuntimeOptions) withDefaults() RuntimeOptions {
	if o.DockerSocket == "" {
		o.DockerSocket = "/var/run/docker.sock"
	}
	if o.ContainerdSocket == "" {
		o.ContainerdSocket = "/run/containerd/containerd.sock"
	}
	if o.ContainerdNamespaces == nil {
		o.ContainerdNamespaces = []string{"k8s.io", "moby", "default"}
	}
	if o.MaxWait <= 0 {
		o.MaxWait = 100 * time.Millisecond
	}
	if o.CacheTTL <= 0 {
		o.CacheTTL = 5 * time.Minute
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Lookup returns what is known about c, waiting at most MaxWait (or until ctx ends) for an answer not yet cached.
// A lookup still running after the wait completes in the background and fills the cache for the next event.
// Which APIs are asked depends on c.Runtime: "docker" -> Docker; "containerd" -> containerd; "" -> containerd
// then Docker (also when containerd runs the container for Docker: Docker's API has its name, image and
// labels); others -> none (return Details{}).
func (r *Runtimes) Lookup(ctx context.Context, c Container) Details {
	backends := r.backendsFor(c.Runtime)
	if len(backends) == 0 || c.ID == "" {
		return Details{}
	}
	e, fresh := r.entry(c.ID, backends)
	if fresh {
		r.hits.Add(1)
		return e.details
	}
	r.misses.Add(1)
	timer := time.NewTimer(r.opts.MaxWait)
	defer timer.Stop()
	select {
	case <-e.done:
		return e.details
	case <-timer.C:
	case <-ctx.Done():
	}
	return Details{}
}

func (r *Runtimes) backendsFor(runtime string) []*backend {
	switch runtime {
	case RuntimeDocker:
		return []*backend{r.docker}
	case RuntimeContainerd:
		return []*backend{r.containerd}
	case "":
		return []*backend{r.containerd, r.docker}
	}
	return nil
}

// entry returns the cache entry for id, starting a lookup when there is none or it expired. fresh says the
// entry holds an answer that has not expired.
func (r *Runtimes) entry(id string, backends []*backend) (e *cacheEntry, fresh bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.cache[id]; ok {
		select {
		case <-e.done:
			if time.Now().Before(e.expires) {
				return e, true
			}
		default:
			return e, false // in flight: join it
		}
	}
	if r.ctx.Err() != nil {
		// Closed: answer "unknown" at once rather than start work nobody waits for.
		e = &cacheEntry{done: make(chan struct{})}
		close(e.done)
		return e, false
	}
	r.makeRoom()
	e = &cacheEntry{done: make(chan struct{})}
	r.cache[id] = e
	r.inFlight.Add(1)
	r.wg.Go(func() { r.resolve(id, backends, e) })
	return e, false
}

// makeRoom keeps the cache bounded: past the bound it drops expired answers, then, if that was not enough,
// all answers (lookups in flight stay: callers wait on them). r.mu is held.
func (r *Runtimes) makeRoom() {
	if len(r.cache) < maxCachedContainers {
		return
	}
	now := time.Now()
	r.dropFinished(func(e *cacheEntry) bool { return !now.Before(e.expires) })
	if len(r.cache) >= maxCachedContainers {
		r.dropFinished(func(*cacheEntry) bool { return true })
	}
}

func (r *Runtimes) dropFinished(drop func(*cacheEntry) bool) {
	for id, e := range r.cache {
		select {
		case <-e.done:
			if drop(e) {
				delete(r.cache, id)
			}
		default:
		}
	}
}

// resolve asks the backends about id and fills e.
func (r *Runtimes) resolve(id string, backends []*backend, e *cacheEntry) {
	defer r.inFlight.Add(-1)
	d, answered := r.ask(id, backends)
	ttl := r.opts.CacheTTL
	if !answered {
		// A runtime that may know the container could not say: ask again soon rather than keep "unknown" (or a
		// thin answer) for a whole TTL.
		ttl = min(ttl, absentBackoff)
	}
	e.details, e.expires = d, time.Now().Add(ttl)
	close(e.done)
}

// ask returns the first answer of the backends, in order. answered is false when one of them could not answer.
func (r *Runtimes) ask(id string, backends []*backend) (d Details, answered bool) {
	answered = true
	for _, b := range backends {
		got, out := b.lookup(r.ctx, id, r.opts.Timeout)
		switch out {
		case outcomeFound:
			return got, true
		case outcomeForDocker:
			d = got // better than nothing if Docker, asked next, cannot say more
		case outcomeFailed:
			r.errs.Add(1)
			answered = false
		case outcomeUnavailable:
			answered = false
		}
	}
	return d, answered
}

// Stats returns the counters for metrics.
func (r *Runtimes) Stats() RuntimeStats {
	return RuntimeStats{Hits: r.hits.Load(), Misses: r.misses.Load(), Errors: r.errs.Load(), InFlight: r.inFlight.Load()}
}

// Close ends background lookups, waits for them and closes the connections to the runtimes. Lookups after
// Close return Details{} unless cached.
func (r *Runtimes) Close() error {
	// Under r.mu so that no lookup starts between the cancel and the Wait.
	r.mu.Lock()
	r.cancel()
	r.mu.Unlock()
	r.wg.Wait()
	return errors.Join(r.docker.close(), r.containerd.close())
}
