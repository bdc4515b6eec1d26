package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/internal/embedetcd"
	"github.com/zcluster/zcluster/internal/redisrun"
)

// cluster is a whole zcluster in this process: embedded etcd, a Redis
// (redis-server child, else miniredis), gates and im backends running the
// chat app.
type cluster struct {
	etcd     *embedetcd.Server
	etcdDir  string
	redis    *redisrun.Server
	clients  []*clientv3.Client
	rdbs     []redis.UniversalClient
	gates    []*gate.Gate
	backends []*backend.Server
}

func (c *cluster) gateAddrs() []string {
	out := make([]string, len(c.gates))
	for i, g := range c.gates {
		out[i] = g.ClientAddr()
	}
	return out
}

// startCluster starts etcd, Redis, nGates gates and nBackends backends of
// group im, and waits until every gate routes msgID 4 and every node sees
// every gate.
func startCluster(ctx context.Context, nGates, nBackends int, log *slog.Logger) (_ *cluster, err error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c := &cluster{}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	if c.etcdDir, err = os.MkdirTemp("", "zcluster-bench-etcd-"); err != nil {
		return nil, fmt.Errorf("bench: etcd dir: %w", err)
	}
	if c.etcd, err = embedetcd.Start(ctx, c.etcdDir); err != nil {
		return nil, fmt.Errorf("bench: embedded etcd: %w", err)
	}
	c.redis, err = redisrun.StartProcess(ctx)
	if errors.Is(err, redisrun.ErrNoRedisServer) {
		c.redis, err = redisrun.StartMemory()
	}
	if err != nil {
		return nil, fmt.Errorf("bench: redis: %w", err)
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	stores := func() (*clientv3.Client, redis.UniversalClient, error) {
		ec, err := clientv3.New(clientv3.Config{Endpoints: c.etcd.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return nil, nil, fmt.Errorf("bench: etcd client: %w", err)
		}
		rc := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{c.redis.Addr()}})
		c.clients = append(c.clients, ec)
		c.rdbs = append(c.rdbs, rc)
		return ec, rc, nil
	}
	for i := range nGates {
		ec, rc, err := stores()
		if err != nil {
			return nil, err
		}
		g, err := gate.New(gate.Config{
			ID: fmt.Sprintf("gate-%d", i+1), ClientListen: "127.0.0.1:0", RelayListen: "127.0.0.1:0",
			Etcd: ec, Redis: rc, Secret: secret, TTL: 5 * time.Second, Logger: log,
			SendQueue: 16 << 20,
		})
		if err != nil {
			return nil, err
		}
		chat.SetupGate(g)
		if err := g.Start(ctx); err != nil {
			return nil, err
		}
		c.gates = append(c.gates, g)
	}
	for i := range nBackends {
		ec, rc, err := stores()
		if err != nil {
			return nil, err
		}
		b, err := backend.New(backend.Config{
			ID: fmt.Sprintf("im-%d", i+1), Group: chat.GroupIM, RelayListen: "127.0.0.1:0",
			Etcd: ec, Redis: rc, Secret: secret, TTL: 5 * time.Second, Logger: log,
		})
		if err != nil {
			return nil, err
		}
		if err := chat.SetupBackend(b); err != nil {
			return nil, err
		}
		if err := b.Start(ctx); err != nil {
			return nil, err
		}
		c.backends = append(c.backends, b)
	}
	return c, c.waitReady(ctx)
}

func (c *cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		ready := true
		for _, g := range c.gates {
			if _, ok := g.Topology().Route(chat.MsgEcho); !ok || len(g.Topology().Nodes(chat.GroupIM)) != len(c.backends) {
				ready = false
			}
		}
		for _, b := range c.backends {
			if len(b.Topology().Nodes("gate")) != len(c.gates) {
				ready = false
			}
		}
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: cluster not ready: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (c *cluster) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, g := range c.gates {
		_ = g.Shutdown(ctx)
	}
	for _, b := range c.backends {
		_ = b.Shutdown(ctx)
	}
	for _, ec := range c.clients {
		_ = ec.Close()
	}
	for _, rc := range c.rdbs {
		_ = rc.Close()
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
}

// inboxCalls sums the backends' Redis round trips for reliable inbox
// appends.
func (c *cluster) inboxCalls() uint64 {
	var n uint64
	for _, b := range c.backends {
		n += b.InboxStats().RedisCalls
	}
	return n
}
