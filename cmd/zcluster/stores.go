package main

import (
	"fmt"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/zcluster/zcluster/registry"
)

// stores are one demo node's clients of the demo's etcd and Redis.
type stores struct {
	etcd  *clientv3.Client
	redis redis.UniversalClient
}

// openStores creates the clients; it does no network I/O.
func openStores(etcdList, redisAddr string) (*stores, error) {
	eps := splitList(etcdList)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: eps, DialTimeout: startTimeout, Logger: zap.NewNop(),
		DialOptions: registry.DialOptions(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd at %s: %w", etcdList, err)
	}
	return &stores{etcd: cli, redis: redis.NewClient(&redis.Options{Addr: redisAddr})}, nil
}

// Close closes both clients.
func (s *stores) Close() {
	_ = s.redis.Close()
	_ = s.etcd.Close()
}
