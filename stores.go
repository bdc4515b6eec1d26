package zcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/zcluster/zcluster/internal/runtime/tcpopt"
	"github.com/zcluster/zcluster/internal/tools/metrics"
	"github.com/zcluster/zcluster/registry"
)

// storeTimeout bounds connecting to etcd and Redis and the startup check
// that they answer.
const storeTimeout = 5 * time.Second

// stores are a node's clients of the cluster's etcd and Redis.
type stores struct {
	etcd       *clientv3.Client
	redis      redis.UniversalClient
	etcdAddrs  string // as given, for messages
	redisAddrs string
	etcdDials  *dialRecorder
}

// etcdLinkTimeout is how long a connection to an etcd member may leave
// sent data unacknowledged (or idle probes unanswered) before it is
// dropped (internal/runtime/tcpopt). Shorter than the smallest lease TTL (1s is
// allowed, but 5s and more is the practice) with room for a reconnect.
const etcdLinkTimeout = 2 * time.Second

// dialRecorder dials etcd's endpoints for gRPC and remembers the last
// failure, so that an etcd that never answers is reported with its cause
// ("connect: connection refused", "no such host", "i/o timeout") rather than
// only "context deadline exceeded". It dials as gRPC's default dialer does,
// without gRPC's HTTP CONNECT proxy support (etcd is dialled directly).
type dialRecorder struct {
	mu   sync.Mutex
	last error
}

// dial is a grpc.WithContextDialer function.
func (d *dialRecorder) dial(ctx context.Context, addr string) (net.Conn, error) {
	network := "tcp"
	if rest, ok := strings.CutPrefix(addr, "unix://"); ok {
		network, addr = "unix", rest
	} else if rest, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", rest
	}
	// A member that stops answering with no reset (partitioned) ends the
	// connection within etcdLinkTimeout, so the client moves to another
	// endpoint before the node's lease runs out.
	conn, err := tcpopt.Dialer(0, etcdLinkTimeout).DialContext(ctx, network, addr)
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case err == nil:
		d.last = nil
	case ctx.Err() != nil && d.last != nil:
		// Cut short by the caller's deadline: the earlier cause says more.
	default:
		d.last = err
	}
	return conn, err
}

// lastErr is the error of the latest failed dial not followed by a
// successful one, or nil.
func (d *dialRecorder) lastErr() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last
}

// openStores creates the etcd and Redis clients for the comma lists
// etcdList and redisList. It does no network I/O: call check for that.
func openStores(etcdList, redisList string) (*stores, error) {
	return openStoresWith(etcdList, redisList, nil)
}

// openStoresWith is openStores whose clients, when m is not nil, time
// every call into m's latency histograms.
func openStoresWith(etcdList, redisList string, m *metrics.Metrics) (*stores, error) {
	eps := splitList(etcdList)
	if len(eps) == 0 {
		return nil, errors.New("--etcd: no endpoint given")
	}
	addrs := splitList(redisList)
	if len(addrs) == 0 {
		return nil, errors.New("--redis: no address given")
	}
	urls := make([]string, len(eps))
	for i, ep := range eps {
		urls[i] = etcdURL(ep)
	}
	dials := &dialRecorder{}
	ecfg := clientv3.Config{
		Endpoints:   urls,
		DialTimeout: storeTimeout,
		// The node logs through slog; etcd's own zap logging is noise here.
		Logger:      zap.NewNop(),
		DialOptions: append(registry.DialOptions(), grpc.WithContextDialer(dials.dial)),
	}
	if m != nil {
		ecfg.DialOptions = append(ecfg.DialOptions, m.EtcdDialOptions()...)
	}
	cli, err := clientv3.New(ecfg)
	if err != nil {
		return nil, fmt.Errorf("etcd at %s: %w", strings.Join(eps, ","), err)
	}
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:       addrs,
		DialTimeout: storeTimeout,
	})
	if m != nil {
		rdb.AddHook(m.RedisHook())
	}
	return &stores{
		etcd:       cli,
		redis:      rdb,
		etcdAddrs:  strings.Join(eps, ","),
		redisAddrs: strings.Join(addrs, ","),
		etcdDials:  dials,
	}, nil
}

// check makes sure etcd (a linearizable read under prefix) and Redis (PING)
// answer, each within storeTimeout.
func (s *stores) check(ctx context.Context, prefix string) error {
	ectx, cancel := context.WithTimeout(ctx, storeTimeout)
	_, err := s.etcd.Get(ectx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	timedOut := err != nil && ectx.Err() != nil
	cancel()
	if timedOut {
		if ctx.Err() != nil {
			return fmt.Errorf("etcd at %s: %w", s.etcdAddrs, ctx.Err())
		}
		// The last dial error names the cause; without one (something
		// answered TCP but not etcd), "context deadline exceeded" rather
		// than a gRPC status.
		cause := s.etcdDials.lastErr()
		if cause == nil {
			cause = context.DeadlineExceeded
		}
		return fmt.Errorf("etcd at %s not reachable within %v: %w", s.etcdAddrs, storeTimeout, cause)
	}
	if err != nil {
		return fmt.Errorf("etcd at %s not reachable: %w", s.etcdAddrs, err)
	}
	rctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	if err := s.redis.Ping(rctx).Err(); err != nil {
		if rctx.Err() != nil {
			err = rctx.Err()
		}
		return fmt.Errorf("redis at %s not reachable: %w", s.redisAddrs, err)
	}
	return nil
}

// Close closes both clients.
func (s *stores) Close() {
	_ = s.redis.Close()
	_ = s.etcd.Close()
}

// splitList splits a comma list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// etcdURL adds http:// to an endpoint without a scheme.
func etcdURL(ep string) string {
	if strings.Contains(ep, "://") {
		return ep
	}
	return "http://" + ep
}
