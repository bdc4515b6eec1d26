// Package zctest runs a whole zcluster in one process, for tests and demos:
// an embedded etcd, a Redis (a redis-server child when one is on PATH, else
// an in-process miniredis), and gates and backends running the handlers
// under test, each with its own etcd and Redis clients as separate
// processes have. Test clients speak the real client protocol through the
// gates.
//
//	func TestJoin(t *testing.T) {
//		c := zctest.Start(t, zctest.Config{Backend: setupGame, Groups: []string{"game"}})
//		alice := c.Client(t, 0).Login("alice")
//		alice.SendJSON(MsgJoin, JoinRequest{Room: "lobby"})
//		var r JoinReply
//		alice.ExpectJSON(MsgJoin, &r)
//	}
//
// New and the Cluster methods that return errors need no testing.T: the
// demo command of a binary built with zcluster.Main uses them too.
package zctest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/cluster"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/internal/devstack/embedetcd"
	"github.com/zcluster/zcluster/internal/devstack/redisrun"
	"github.com/zcluster/zcluster/registry"
)

// Defaults of Config: short TTLs so that a stopped node leaves quickly.
const (
	DefaultTTL        = 2 * time.Second
	DefaultSessionTTL = 6 * time.Second
	// StartTimeout bounds starting the stores and each node.
	StartTimeout = 30 * time.Second
	// ReadyTimeout bounds WaitReady in Start.
	ReadyTimeout = 15 * time.Second
	// StopTimeout bounds Close.
	StopTimeout = 20 * time.Second
)

// ErrNoRedisServer is returned by New when Config.RequireRedisServer asks
// for a real redis-server and none is on PATH.
var ErrNoRedisServer = redisrun.ErrNoRedisServer

// Config says what a test cluster runs. The zero value is a cluster of
// stores only; Start adds two gates by default.
type Config struct {
	// Gate registers gate handlers on every gate. When nil, gates get the
	// test login (LoginMsgID: the payload is the user name).
	Gate func(*gate.Gate) error
	// Backend registers backend handlers on every backend; it may switch
	// on b.Group().
	Backend func(*backend.Backend) error
	// Gates is the number of gates New starts: gate-1 ... gate-N.
	Gates int
	// Groups lists the backend groups New starts one backend of each:
	// <group>-1.
	Groups []string

	// EtcdEndpoints, if set, are used instead of starting an embedded
	// etcd (e.g. a 3-member cluster the test manages itself).
	EtcdEndpoints []string
	// RedisAddr, if set, is used instead of starting a Redis.
	RedisAddr string
	// NewRedis, if set, makes each node's Redis client instead of a
	// client of RedisAddr (e.g. a Redis Cluster client); RedisAddr is then
	// only reported.
	NewRedis func() redis.UniversalClient
	// RequireRedisServer makes New fail rather than fall back to the
	// in-process miniredis when no redis-server is on PATH. Start sets it
	// when the environment variable ZC_TEST_REDIS is "require" (as the
	// project's CI does).
	RequireRedisServer bool
	// Secret authenticates relay links (default: random).
	Secret []byte
	// TTL and SessionTTL are every node's etcd lease TTL and Redis session
	// TTL (defaults DefaultTTL and DefaultSessionTTL).
	TTL, SessionTTL time.Duration
	// Logger receives the nodes' logs (default: warnings and errors on
	// stderr).
	Logger *slog.Logger
	// Version is the version nodes publish.
	Version string
	// GateConfig and BackendConfig, if set, adjust each node's
	// configuration before it is created.
	GateConfig    func(*gate.Config)
	BackendConfig func(*backend.Config)
	// Out, if set, gets a line per store started (for demos).
	Out func(format string, args ...any)
}

// Cluster is a running test cluster. Its methods are safe for concurrent
// use.
type Cluster struct {
	cfg     Config
	etcd    *embedetcd.Server // nil when Config.EtcdEndpoints were given
	etcdEPs []string
	etcdDir string
	redis   *redisrun.Server // nil when Config.RedisAddr was given
	rAddr   string

	mu       sync.Mutex
	gates    []*gate.Gate
	backends []*backend.Backend
	closers  []func()
	closed   bool
}

// New starts the stores, then Config.Gates gates and one backend per
// Config.Groups, and waits until every node sees every other. On error
// everything started is stopped.
func New(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.Secret == nil {
		cfg.Secret = make([]byte, 32)
		_, _ = rand.Read(cfg.Secret) // never fails (crypto/rand)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if cfg.Out == nil {
		cfg.Out = func(string, ...any) {}
	}
	c := &Cluster{cfg: cfg}
	defer func() {
		if err != nil {
			_ = c.Close()
			if ctx.Err() != nil {
				err = fmt.Errorf("interrupted while starting: %w", err)
			}
		}
	}()
	sctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	if len(cfg.EtcdEndpoints) > 0 {
		c.etcdEPs = cfg.EtcdEndpoints
	} else {
		if c.etcdDir, err = os.MkdirTemp("", "zctest-etcd-"); err != nil {
			return nil, fmt.Errorf("etcd data dir: %w", err)
		}
		if c.etcd, err = embedetcd.Start(sctx, c.etcdDir); err != nil {
			return nil, fmt.Errorf("embedded etcd: %w", err)
		}
		c.etcdEPs = c.etcd.Endpoints()
		cfg.Out("etcd: embedded, %s", strings.Join(c.etcdEPs, ","))
	}
	if cfg.NewRedis != nil {
		c.rAddr = cfg.RedisAddr
	} else if err := c.startRedis(sctx); err != nil {
		return nil, err
	}
	for i := range cfg.Gates {
		if _, err := c.StartGate(sctx, fmt.Sprintf("gate-%d", i+1)); err != nil {
			return nil, err
		}
	}
	for _, g := range cfg.Groups {
		if _, err := c.StartBackend(sctx, g+"-1", g); err != nil {
			return nil, err
		}
	}
	if err := c.WaitReady(ctx, ReadyTimeout); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cluster) startRedis(ctx context.Context) error {
	if c.cfg.RedisAddr != "" {
		c.rAddr = c.cfg.RedisAddr
		return nil
	}
	s, err := redisrun.StartProcess(ctx)
	switch {
	case err == nil:
		c.cfg.Out("redis: %s on %s", s.Kind(), s.Addr())
	case errors.Is(err, redisrun.ErrNoRedisServer) && !c.cfg.RequireRedisServer:
		if s, err = redisrun.StartMemory(); err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		c.cfg.Out("redis: in-process miniredis on %s (install redis-server for a real one)", s.Addr())
	default:
		return fmt.Errorf("redis: %w", err)
	}
	c.redis, c.rAddr = s, s.Addr()
	return nil
}

// NodeOption adjusts one node started by StartGate or StartBackend.
type NodeOption func(*nodeOptions)

type nodeOptions struct {
	listen, relay string
	gateSetup     []func(*gate.Gate) error
	backendSetup  []func(*backend.Backend) error
	gateCfg       []func(*gate.Config)
	backendCfg    []func(*backend.Config)
	noApp         bool
}

// Listen sets a gate's client address (default 127.0.0.1:0, a free port).
func Listen(addr string) NodeOption { return func(o *nodeOptions) { o.listen = addr } }

// RelayAt sets the node's relay address (default 127.0.0.1:0).
func RelayAt(addr string) NodeOption { return func(o *nodeOptions) { o.relay = addr } }

// GateSetup registers more gate handlers after Config.Gate.
func GateSetup(fn func(*gate.Gate) error) NodeOption {
	return func(o *nodeOptions) { o.gateSetup = append(o.gateSetup, fn) }
}

// BackendSetup registers more backend handlers after Config.Backend.
func BackendSetup(fn func(*backend.Backend) error) NodeOption {
	return func(o *nodeOptions) { o.backendSetup = append(o.backendSetup, fn) }
}

// GateConfig adjusts this gate's configuration (after Config.GateConfig).
func GateConfig(fn func(*gate.Config)) NodeOption {
	return func(o *nodeOptions) { o.gateCfg = append(o.gateCfg, fn) }
}

// BackendConfig adjusts this backend's configuration (after
// Config.BackendConfig).
func BackendConfig(fn func(*backend.Config)) NodeOption {
	return func(o *nodeOptions) { o.backendCfg = append(o.backendCfg, fn) }
}

// WithoutApp skips Config.Gate or Config.Backend (and the test login) for
// this node: only its own GateSetup or BackendSetup run.
func WithoutApp() NodeOption { return func(o *nodeOptions) { o.noApp = true } }

func collect(opts []NodeOption) nodeOptions {
	o := nodeOptions{listen: "127.0.0.1:0", relay: "127.0.0.1:0"}
	for _, fn := range opts {
		fn(&o)
	}
	return o
}

// Clients returns a new etcd client and Redis client of the cluster's
// stores, closed by Close.
func (c *Cluster) Clients() (*clientv3.Client, redis.UniversalClient, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: c.etcdEPs, DialTimeout: 5 * time.Second,
		Logger: zap.NewNop(), DialOptions: registry.DialOptions(),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("etcd client: %w", err)
	}
	var rdb redis.UniversalClient
	if c.cfg.NewRedis != nil {
		rdb = c.cfg.NewRedis()
	} else {
		rdb = redis.NewClient(&redis.Options{Addr: c.rAddr})
	}
	c.mu.Lock()
	c.closers = append(c.closers, func() { _ = rdb.Close(); _ = cli.Close() })
	c.mu.Unlock()
	return cli, rdb, nil
}

// node is the cluster.Node part shared by gates and backends: fresh
// store clients (closed by Close) and the cluster-wide settings.
func (c *Cluster) node(id, relay string) (cluster.Node, error) {
	cli, rdb, err := c.Clients()
	if err != nil {
		return cluster.Node{}, err
	}
	return cluster.Node{
		ID:          id,
		RelayListen: relay,
		Etcd:        cli,
		Redis:       rdb,
		Secret:      c.cfg.Secret,
		TTL:         c.cfg.TTL,
		SessionTTL:  c.cfg.SessionTTL,
		Version:     c.cfg.Version,
		Logger:      c.cfg.Logger,
	}, nil
}

// StartGate creates and starts a gate called id running Config.Gate (or
// the test login) and the options' setups.
func (c *Cluster) StartGate(ctx context.Context, id string, opts ...NodeOption) (*gate.Gate, error) {
	o := collect(opts)
	node, err := c.node(id, o.relay)
	if err != nil {
		return nil, err
	}
	cfg := gate.Config{Node: node, ClientListen: o.listen}
	if c.cfg.GateConfig != nil {
		c.cfg.GateConfig(&cfg)
	}
	for _, fn := range o.gateCfg {
		fn(&cfg)
	}
	g, err := gate.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("gate %s: %w", id, err)
	}
	setups := o.gateSetup
	if !o.noApp {
		app := c.cfg.Gate
		if app == nil {
			app = testLogin
		}
		setups = append([]func(*gate.Gate) error{app}, setups...)
	}
	for _, fn := range setups {
		if err := fn(g); err != nil {
			return nil, fmt.Errorf("gate %s setup: %w", id, err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	if err := g.Start(sctx); err != nil {
		return nil, fmt.Errorf("gate %s start: %w", id, err)
	}
	c.mu.Lock()
	c.gates = append(c.gates, g)
	c.mu.Unlock()
	return g, nil
}

// StartBackend creates and starts a backend called id serving group,
// running Config.Backend and the options' setups.
func (c *Cluster) StartBackend(ctx context.Context, id, group string, opts ...NodeOption) (*backend.Backend, error) {
	o := collect(opts)
	node, err := c.node(id, o.relay)
	if err != nil {
		return nil, err
	}
	cfg := backend.Config{Node: node, Group: group}
	if c.cfg.BackendConfig != nil {
		c.cfg.BackendConfig(&cfg)
	}
	for _, fn := range o.backendCfg {
		fn(&cfg)
	}
	b, err := backend.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", id, err)
	}
	setups := o.backendSetup
	if !o.noApp && c.cfg.Backend != nil {
		setups = append([]func(*backend.Backend) error{c.cfg.Backend}, setups...)
	}
	for _, fn := range setups {
		if err := fn(b); err != nil {
			return nil, fmt.Errorf("backend %s setup: %w", id, err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	if err := b.Start(sctx); err != nil {
		return nil, fmt.Errorf("backend %s start: %w", id, err)
	}
	c.mu.Lock()
	c.backends = append(c.backends, b)
	c.mu.Unlock()
	return b, nil
}

// Gates returns the running gates in start order.
func (c *Cluster) Gates() []*gate.Gate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*gate.Gate(nil), c.gates...)
}

// Backends returns the running backends in start order.
func (c *Cluster) Backends() []*backend.Backend {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*backend.Backend(nil), c.backends...)
}

// EtcdEndpoints returns the etcd client URLs.
func (c *Cluster) EtcdEndpoints() []string { return append([]string(nil), c.etcdEPs...) }

// RedisAddr returns the Redis address.
func (c *Cluster) RedisAddr() string { return c.rAddr }

// RedisKind says which Redis runs: "redis-server 7.x", "miniredis", or ""
// when Config.RedisAddr was given.
func (c *Cluster) RedisKind() string {
	if c.redis == nil {
		return ""
	}
	return c.redis.Kind()
}

// Secret returns the relay secret, for nodes started outside the kit.
func (c *Cluster) Secret() []byte { return c.cfg.Secret }

// topoNode is what WaitReady needs of a gate or a backend.
type topoNode interface {
	ID() string
	Topology() *registry.Topology
}

// WaitReady waits until every running node sees every running gate and
// backend in its topology, so that traffic does not race the etcd
// watches.
func (c *Cluster) WaitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		lag := c.lag()
		if lag == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not ready after %v: %s", timeout, lag)
		case <-tick.C:
		}
	}
}

// lag says which node does not yet see which group in full, or "".
func (c *Cluster) lag() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	want := map[string]int{}
	var nodes []topoNode
	for _, g := range c.gates {
		want[registry.GateGroup]++
		nodes = append(nodes, g)
	}
	for _, b := range c.backends {
		want[b.Group()]++
		nodes = append(nodes, b)
	}
	for _, n := range nodes {
		for group, w := range want {
			if got := len(n.Topology().Nodes(group)); got != w {
				return fmt.Sprintf("%s sees %d nodes in group %s, want %d", n.ID(), got, group, w)
			}
		}
	}
	return ""
}

// StopGate shuts the gate down cleanly (its clients are told why) and
// forgets it.
func (c *Cluster) StopGate(ctx context.Context, g *gate.Gate) error {
	c.mu.Lock()
	for i, x := range c.gates {
		if x == g {
			c.gates = append(c.gates[:i], c.gates[i+1:]...)
			break
		}
	}
	c.mu.Unlock()
	return g.Shutdown(ctx)
}

// StopBackend shuts the backend down cleanly and forgets it.
func (c *Cluster) StopBackend(ctx context.Context, b *backend.Backend) error {
	c.mu.Lock()
	for i, x := range c.backends {
		if x == b {
			c.backends = append(c.backends[:i], c.backends[i+1:]...)
			break
		}
	}
	c.mu.Unlock()
	return b.Shutdown(ctx)
}

// Close stops the gates (clients are told why), then the backends, then
// Redis and etcd, and removes etcd's data. It reports a stop that did not
// finish within StopTimeout. Close is idempotent.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	gates, backends, closers := c.gates, c.backends, c.closers
	c.gates, c.backends, c.closers = nil, nil, nil
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), StopTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, g := range gates {
		wg.Go(func() { _ = g.Shutdown(ctx) })
	}
	wg.Wait()
	for _, b := range backends {
		wg.Go(func() { _ = b.Shutdown(ctx) })
	}
	wg.Wait()
	timedOut := ctx.Err() != nil
	for _, fn := range closers {
		fn()
	}
	if c.redis != nil {
		c.redis.Close()
	}
	if c.etcd != nil {
		c.etcd.Close()
	}
	if c.etcdDir != "" {
		_ = os.RemoveAll(c.etcdDir)
	}
	if timedOut {
		return fmt.Errorf("cluster did not stop within %v", StopTimeout)
	}
	return nil
}
