package backend_test

import (
	"context"
	"errors"
	"testing"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/cluster"
	"github.com/zcluster/zcluster/relay"
	"github.com/zcluster/zcluster/session"
	"github.com/zcluster/zcluster/zctest"
)

// TestMethodsBeforeStart: a backend's methods that need the cluster answer
// ErrNotStarted before Start (they used to panic on a nil node), and its
// getters return zero values.
func TestMethodsBeforeStart(t *testing.T) {
	c := zctest.Start(t, zctest.Config{Gates: 1})
	etcdClient, redisClient, err := c.Clients()
	if err != nil {
		t.Fatal(err)
	}
	b, err := backend.New(backend.Config{
		Node:  cluster.Node{ID: "early-1", RelayListen: "127.0.0.1:0", Etcd: etcdClient, Redis: redisClient, Secret: c.Secret()},
		Group: "early",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	checks := map[string]error{
		"PushRoom":  b.PushRoom(ctx, "r", 1, nil),
		"PingRedis": b.PingRedis(ctx),
	}
	_, checks["RoomCount"] = b.RoomCount(ctx, "r")
	_, checks["OnlineCount"] = b.OnlineCount(ctx)
	_, checks["RoomMembers"] = b.RoomMembers(ctx, "r")
	_, checks["Deliver"] = b.Deliver(ctx, "u", 1, nil)
	checks["DeliverAsync"] = b.DeliverAsync("u", 1, nil, func(backend.Delivery, error) {})
	for name, err := range checks {
		if !errors.Is(err, backend.ErrNotStarted) {
			t.Errorf("%s before Start: %v, want ErrNotStarted", name, err)
		}
	}
	if b.RelayAddr() != "" || b.Topology() != nil || b.Reregistrations() != 0 || b.RelayPeers() != nil ||
		b.RelayStats() != (relay.Stats{}) || b.SessionStats() != (session.Stats{}) {
		t.Error("getters before Start return non-zero values")
	}
}
