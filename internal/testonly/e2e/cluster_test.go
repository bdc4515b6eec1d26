package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/internal/devstack/embedetcd"
	"github.com/zcluster/zcluster/internal/devstack/redisrun"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
	"github.com/zcluster/zcluster/internal/tools/zclient"
	"github.com/zcluster/zcluster/zctest"
)

const (
	testTTL        = 2 * time.Second
	testSessionTTL = 6 * time.Second
)

// cluster is an in-process test cluster: one embedded etcd, one Redis, and
// any number of gates and backends, each with its own etcd and Redis
// clients as separate processes would have. The nodes are built by the
// public test kit (zctest); this keeps the helpers the e2e tests share
// (startGate, startBackend, clients, the maps of nodes by id) and owns the
// etcd, which fault tests stop and restart.
type cluster struct {
	t         *testing.T
	kit       *zctest.Cluster
	etcd      *embedetcd.Server
	redisAddr string
	secret    []byte
	log       *slog.Logger

	mu       sync.Mutex
	gates    map[string]*gate.Gate
	backends map[string]*backend.Backend
	closers  []func() // store clients, closed after the nodes

	inboxMax int // 0: default (reliable_test.go)
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	return newClusterOn(t, testkit.Redis(t))
}

// newClusterRedis is newCluster on a redis-server child the test can stop,
// restart or flush.
func newClusterRedis(t *testing.T) (*cluster, *redisrun.Server) {
	t.Helper()
	srv := testkit.RedisServer(t)
	return newClusterOn(t, srv.Addr()), srv
}

func newClusterOn(t *testing.T, redisAddr string) *cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := embedetcd.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatalf("embedded etcd: %v", err)
	}
	t.Cleanup(e.Close)
	kit, err := zctest.New(ctx, zctest.Config{
		EtcdEndpoints: e.Endpoints(), RedisAddr: redisAddr,
		Secret: []byte("e2e-secret"), TTL: testTTL, SessionTTL: testSessionTTL,
	})
	if err != nil {
		t.Fatalf("zctest: %v", err)
	}
	c := &cluster{
		t:         t,
		kit:       kit,
		etcd:      e,
		redisAddr: redisAddr,
		secret:    []byte("e2e-secret"),
		log:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: e2eLogLevel()})),
		gates:     map[string]*gate.Gate{},
		backends:  map[string]*backend.Backend{},
	}
	t.Cleanup(c.stopAll)
	return c
}

func (c *cluster) clients() (*clientv3.Client, redis.UniversalClient) {
	c.t.Helper()
	cli, rdb, err := c.kit.Clients()
	if err != nil {
		c.t.Fatal(err)
	}
	return cli, rdb
}

// startGate starts a gate running the chat app (plus extra setup).
func (c *cluster) startGate(id string, setup ...func(*gate.Gate)) *gate.Gate {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	g, err := c.kit.StartGate(ctx, id, zctest.WithoutApp(),
		zctest.GateConfig(func(cfg *gate.Config) {
			cfg.RequestTimeout, cfg.Logger, cfg.InboxMax = 3*time.Second, c.log, c.inboxMax
		}),
		zctest.GateSetup(func(g *gate.Gate) error {
			chat.SetupGate(g)
			for _, s := range setup {
				s(g)
			}
			return nil
		}))
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.gates[id] = g
	c.mu.Unlock()
	return g
}

// startBackend starts a backend of group; with no setup it runs the chat app.
func (c *cluster) startBackend(id, group string, setup ...func(*backend.Backend)) *backend.Backend {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	b, err := c.kit.StartBackend(ctx, id, group, zctest.WithoutApp(),
		zctest.BackendConfig(func(cfg *backend.Config) {
			cfg.CallTimeout, cfg.Logger, cfg.InboxMax = 3*time.Second, c.log, c.inboxMax
		}),
		zctest.BackendSetup(func(b *backend.Backend) error {
			if len(setup) == 0 {
				return chat.SetupBackend(b)
			}
			for _, s := range setup {
				s(b)
			}
			return nil
		}))
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.backends[id] = b
	c.mu.Unlock()
	return b
}

func (c *cluster) stopAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, g := range c.gates {
		_ = g.Shutdown(ctx)
	}
	for _, b := range c.backends {
		_ = b.Shutdown(ctx)
	}
	for _, fn := range c.closers {
		fn()
	}
	if err := c.kit.Close(); err != nil {
		c.t.Errorf("zctest: %v", err)
	}
}

// waitGroupSize waits until every gate sees n nodes in group.
func (c *cluster) waitGroupSize(group string, n int, timeout time.Duration) {
	c.t.Helper()
	testkit.CheckFor(c.t, timeout, 20*time.Millisecond, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		for id, g := range c.gates {
			if got := len(g.Topology().Nodes(group)); got != n {
				return fmt.Errorf("gate %s sees %d nodes in %s, want %d", id, got, group, n)
			}
		}
		return nil
	})
}

func dial(t *testing.T, g *gate.Gate) *zclient.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := zclient.Dial(ctx, g.ListenAddr())
	if err != nil {
		t.Fatalf("dial %s: %v", g.ID(), err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

type errorFrame struct {
	MsgID uint32 `json:"msg_id"`
	Error string `json:"error"`
}

func decodeError(t *testing.T, f zclient.Frame) errorFrame {
	t.Helper()
	var e errorFrame
	if err := json.Unmarshal(f.Payload, &e); err != nil {
		t.Fatalf("error frame %q: %v", f.Payload, err)
	}
	return e
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// zclusterBinary builds cmd/zcluster once per test run.
func zclusterBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "zcluster-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "zcluster")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/zcluster/zcluster/cmd/zcluster")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func splitHostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		t.Fatal(err)
	}
	return host, port
}

// proc is a zcluster node running as a real process.
type proc struct {
	t    *testing.T
	args []string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startProc runs the zcluster binary with args; it is killed at cleanup.
func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, args: args}
	p.start()
	t.Cleanup(func() { p.signal(syscall.SIGKILL); p.wait(5 * time.Second) })
	return p
}

func (p *proc) start() {
	p.t.Helper()
	p.cmd = exec.Command(zclusterBinary(p.t), p.args...)
	p.cmd.Stdout, p.cmd.Stderr = os.Stderr, os.Stderr
	p.done = make(chan struct{})
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	go func(cmd *exec.Cmd, done chan struct{}) {
		p.err = cmd.Wait()
		close(done)
	}(p.cmd, p.done)
}

func (p *proc) signal(sig syscall.Signal) {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// wait waits for the process to exit and reports whether it did.
func (p *proc) wait(timeout time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// nodeArgs are the common flags of a process node in this cluster.
func (c *cluster) nodeArgs(kind, id string, extra ...string) []string {
	args := []string{kind, "--id", id,
		"--etcd", strings.Join(c.etcd.Endpoints(), ","), "--redis", c.redisAddr,
		"--secret", string(c.secret), "--ttl", testTTL.String(), "--session-ttl", testSessionTTL.String(),
		"--log-level", e2eLogLevel().String()}
	return append(args, extra...)
}

// e2eLogLevel is warn, or ZC_E2E_LOG (debug, info) to see the nodes' logs.
func e2eLogLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("ZC_E2E_LOG"))); err != nil || os.Getenv("ZC_E2E_LOG") == "" {
		return slog.LevelWarn
	}
	return l
}
