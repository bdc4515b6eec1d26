package clusternode_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/zcluster/zcluster/internal/runtime/clusternode"
	"github.com/zcluster/zcluster/registry"
	"github.com/zcluster/zcluster/relay"
	"github.com/zcluster/zcluster/zctest"
)

// startNode starts a node (not registered) of a test cluster with one gate
// and returns it with the cluster's etcd client.
func startNode(t *testing.T, id string) (*clusternode.Node, *clientv3.Client) {
	t.Helper()
	c := zctest.Start(t, zctest.Config{Gates: 1})
	etcdClient, redisClient, err := c.Clients()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := clusternode.Start(ctx, clusternode.Config{ID: id, Group: "test", Kind: registry.KindBackend, RelayListen: "127.0.0.1:0",
		Etcd: etcdClient, Redis: redisClient, Secret: c.Secret(), TTL: 2 * time.Second, SessionTTL: 3 * time.Second,
		Handler: func(*relay.Envelope) {}})
	if err != nil {
		t.Fatal(err)
	}
	return n, etcdClient
}

// TestCloseWaitsForGateGoneCallbacks: Close does not return while a
// gate-gone callback is still running (it would go on using the node's
// stores and relay after they closed).
func TestCloseWaitsForGateGoneCallbacks(t *testing.T) {
	n, etcdClient := startNode(t, "watcher-1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	running, release := make(chan struct{}), make(chan struct{})
	returned := make(chan struct{})
	n.OnGateGone(func(gate string) {
		if gate != "gate-x" {
			return
		}
		close(running)
		<-release
		close(returned)
	})
	reg, err := registry.Register(ctx, registry.Config{Client: etcdClient, TTL: 2 * time.Second},
		registry.Node{ID: "gate-x", Group: registry.GateGroup, Kind: registry.KindGate, RelayAddr: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := n.Topology.Node("gate-x"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the node never saw gate-x")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := reg.Close(ctx); err != nil { // gate-x leaves for good
		t.Fatal(err)
	}
	select {
	case <-running:
	case <-ctx.Done():
		t.Fatal("the gate-gone callback never ran")
	}
	closed := make(chan struct{})
	go func() {
		n.Close(ctx)
		close(closed)
	}()
	select {
	case <-closed:
		select {
		case <-returned:
		default:
			t.Fatal("Close returned while a gate-gone callback was still running")
		}
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	select {
	case <-closed:
	case <-ctx.Done():
		t.Fatal("Close never returned")
	}
}

// TestSendToUnknownNodeHonoursCtx: a send to a node the topology does not
// know (yet) waits for it to appear no longer than the caller's ctx allows.
func TestSendToUnknownNodeHonoursCtx(t *testing.T) {
	n, _ := startNode(t, "sender-1")
	defer n.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sctx, scancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer scancel()
	start := time.Now()
	err := n.Relay.Send(sctx, "nobody-1", &relay.Envelope{Kind: relay.KindPush})
	took := time.Since(start)
	// The wait for an unknown node lasts up to a second; a 100 ms ctx must
	// end it (600 ms is generous on a loaded machine and tells them apart).
	if err == nil || took > 600*time.Millisecond {
		t.Fatalf("Send to an unknown node with a 100ms ctx: %v after %v; want an error at the ctx's deadline", err, took)
	}
}
