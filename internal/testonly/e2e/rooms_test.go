package e2e

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
	"github.com/zcluster/zcluster/internal/testonly/testkit/chatkit"
	"github.com/zcluster/zcluster/internal/tools/zclient"
	"github.com/zcluster/zcluster/room"
)

// TestGateKilledRoomsAndHooks: a gate killed with SIGKILL (no cleanup)
// takes its sessions out of their rooms and runs the backends'
// OnSessionClosed hooks for them, within the session TTL; members on the
// other gate keep their membership and pushes.
func TestGateKilledRoomsAndHooks(t *testing.T) {
	skipShort(t)
	const msgJoin, msgSaid uint32 = 30, 132
	var (
		mu     sync.Mutex
		closed = map[string]string{}
	)
	c := newCluster(t)
	g1 := c.startGate("gate-1")
	b := c.startBackend("lobby-1", "lobby", func(b *backend.Backend) {
		b.Handle(msgJoin, "join", func(ctx *backend.Context) error {
			if err := ctx.Join(string(ctx.Payload())); err != nil {
				return err
			}
			return ctx.Reply(msgJoin, nil)
		})
		b.OnSessionClosed(func(sid, user string) {
			mu.Lock()
			closed[sid] = user
			mu.Unlock()
		})
	})
	clientAddr := testkit.FreeAddr(t)
	p := startProc(t, c.nodeArgs("gate", "gate-2", "--listen", clientAddr, "--relay", testkit.FreeAddr(t))...)
	c.waitGroupSize("gate", 2, 20*time.Second)
	testkit.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if len(b.Topology().Nodes("gate")) != 2 {
			return fmt.Errorf("backend does not see gate-2 yet")
		}
		return nil
	})

	ann := dial(t, g1)
	chatkit.Login(t, ann, "ann")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bob, err := zclient.Dial(ctx, clientAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	lb := chatkit.Login(t, bob, "bob")
	for _, cl := range []*zclient.Conn{ann, bob} {
		if err := cl.Send(msgJoin, []byte("hall")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := cl.Expect(ctx, msgJoin); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := b.RoomCount(ctx, "hall"); err != nil || n != 2 {
		t.Fatalf("room count = %d, %v; want 2", n, err)
	}

	p.signal(syscall.SIGKILL)
	p.wait(5 * time.Second)
	killed := time.Now()
	testkit.CheckFor(t, testSessionTTL+3*time.Second, 50*time.Millisecond, func() error {
		mu.Lock()
		u, ok := closed[lb.Session]
		mu.Unlock()
		if !ok || u != "bob" {
			return fmt.Errorf("OnSessionClosed not called for bob's session")
		}
		return nil
	})
	hookAfter := time.Since(killed)
	testkit.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		if n, err := b.RoomCount(context.Background(), "hall"); err != nil || n != 1 {
			return fmt.Errorf("room count = %d, %v; want 1 (ann)", n, err)
		}
		return nil
	})
	members, err := b.RoomMembers(context.Background(), "hall")
	if err != nil || len(members) != 1 {
		t.Fatalf("members after the kill = %v, %v; want only ann's session", members, err)
	}
	before := b.RelayStats().EnvelopesSent
	if err := b.PushRoom(context.Background(), "hall", msgSaid, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if d := b.RelayStats().EnvelopesSent - before; d != 1 {
		t.Fatalf("push after the kill sent %d envelopes, want 1 (gate-1)", d)
	}
	if _, _, err := ann.Expect(ctx, msgSaid); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	_, annClosed := closed[""]
	mu.Unlock()
	if annClosed {
		t.Fatal("a hook ran for an empty session")
	}
	t.Logf("gate SIGKILL: OnSessionClosed ran %v after the kill (etcd TTL %v, session TTL %v)", hookAfter.Round(time.Millisecond), testTTL, testSessionTTL)
}

// TestRoomsReclaimedAfterReregistration: when the backends have purged a
// gate's room members (it was away from etcd for longer than SessionTTL/3,
// and they took it for dead) but the gate lived on with its clients, the
// gate writes its members back once it has registered again: room counts
// and pushes reach them as before.
func TestRoomsReclaimedAfterReregistration(t *testing.T) {
	skipShort(t)
	const msgJoin, msgSaid uint32 = 30, 132
	c := newCluster(t)
	g1 := c.startGate("gate-1")
	b := c.startBackend("lobby-1", "lobby", func(b *backend.Backend) {
		b.Handle(msgJoin, "join", func(ctx *backend.Context) error {
			if err := ctx.Join(string(ctx.Payload())); err != nil {
				return err
			}
			return ctx.Reply(msgJoin, nil)
		})
	})
	c.waitGroupSize("lobby", 1, 5*time.Second)
	ann := dial(t, g1)
	chatkit.Login(t, ann, "ann")
	_ = ann.Send(msgJoin, []byte("hall"))
	chatkit.Expect(t, ann, msgJoin)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	count := func() int {
		n, err := b.RoomCount(ctx, "hall")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 1 {
		t.Fatalf("room count %d after the join, want 1", n)
	}

	// What the backends do to a gate they took for dead.
	cli, rdb := c.clients()
	if _, err := room.New(rdb, "").PurgeGate(ctx, "gate-1"); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Fatalf("room count %d after the purge, want 0", n)
	}
	// The gate's lease is lost (as after a partition from etcd): it
	// registers again by itself.
	resp, err := cli.Get(ctx, "/zcluster/nodes/gate/gate-1")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("gate-1's key: %v %v", resp, err)
	}
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	testkit.CheckFor(t, testSessionTTL+5*time.Second, 50*time.Millisecond, func() error {
		if n := count(); n != 1 {
			return fmt.Errorf("room count %d after gate-1 registered again, want 1 (ann, re-claimed)", n)
		}
		return nil
	})
	if err := b.PushRoom(ctx, "hall", msgSaid, []byte("welcome back")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ann.Expect(ctx, msgSaid); err != nil {
		t.Fatal(err)
	}
}
