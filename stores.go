package zcluster

import (
	"context"
	"errors"
	"fmt"
	"github.com/zcluster/zcluster/registry"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/zcluster/zcluster/internal/metrics"
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
	ecfg := clientv3.Config{
		Endpoints:   urls,
		DialTimeout: storeTimeout,
		// The node logs through slog; etcd's own zap logging is noise here.
		Logger:      zap.NewNop(),
		DialOptions: registry.DialOptions(),
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
	}, nil
}

// check makes sure etcd (a linearizable read under prefix) and Redis (PING)
// answer, each within storeTimeout.
func (s *stores) check(ctx context.Context, prefix string) error {
	ectx, cancel := context.WithTimeout(ctx, storeTimeout)
	_, err := s.etcd.Get(ectx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil && ectx.Err() != nil {
		err = ectx.Err() // "context deadline exceeded" rather than a gRPC status
	}
	cancel()
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
