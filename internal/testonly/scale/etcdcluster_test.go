package scale

import (
	"context"
	"fmt"
	"github.com/zcluster/zcluster/internal/testonly/testkit/chatkit"
	"testing"
	"time"

	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/internal/devstack/embedetcd"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
)

// TestEtcdClusterLeaderLoss runs the demo scenario (2 gates, 2 im, 1 echo;
// logins on both gates, cross-gate send, chain-echo, broadcast) on a
// 3-member etcd cluster, every node's etcd client configured with all three
// endpoints. Then the leader member dies: no node loses its registration
// (no re-registration at all), every user stays logged in and reachable, and
// routing and membership keep working through the new leader.
func TestEtcdClusterLeaderLoss(t *testing.T) {
	needScale(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ec, err := embedetcd.StartCluster(ctx, t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ec.Close)
	t.Logf("etcd cluster: %v, leader m%d", ec.Endpoints(), ec.Leader())

	h := newHarness(t, ec.Endpoints(), singleRedis(testkit.Redis(t)))
	g1 := h.startGate("gate-1")
	g2 := h.startGate("gate-2")
	h.startBackend("im-1", chat.GroupIM)
	h.startBackend("im-2", chat.GroupIM)
	h.startBackend("echo-1", chat.GroupEcho)
	h.waitGroupSize(chat.GroupIM, 2, 10*time.Second)
	h.waitGroupSize(chat.GroupEcho, 1, 10*time.Second)

	users := []chatUser{
		{"alice", dial(t, g1)}, {"bob", dial(t, g2)},
		{"carol", dial(t, g1)}, {"dave", dial(t, g2)},
	}
	for _, u := range users {
		chatkit.Login(t, u.conn, u.name)
	}
	chatRound(t, users, "before")

	leader := ec.Leader()
	if leader < 0 {
		t.Fatal("no etcd leader")
	}
	// The member's raft halts at once; its listeners close within a few
	// seconds (gRPC gives open streams a grace period).
	killed := time.Now()
	stopped := make(chan time.Duration, 1)
	go func() {
		_ = ec.StopMember(leader)
		stopped <- time.Since(killed)
	}()
	testkit.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if ec.Running(leader) {
			return fmt.Errorf("m%d still running", leader)
		}
		return nil
	})
	next, err := ec.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	elected := time.Since(killed)
	closed := <-stopped
	t.Logf("stopped leader m%d: m%d leads %v later; the old member's listeners were closed after %v",
		leader, next, elected.Round(time.Millisecond), closed.Round(time.Millisecond))

	// Traffic right after the loss, while clients move to live members.
	chatRound(t, users, "during")

	// Three lease TTLs: a node that had lost its lease would have noticed
	// and registered again by now.
	deadline := time.Now().Add(3 * testTTL)
	for time.Now().Before(deadline) {
		if total, unreg := h.reregistrations(); total != 0 || unreg != 0 {
			t.Fatalf("after the leader loss: %d re-registrations, %d nodes unregistered: %v", total, unreg, h.registrations())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, g := range []interface {
		ID() string
		LoggedIn() int
	}{g1, g2} {
		if n := g.LoggedIn(); n != 2 {
			t.Fatalf("%s has %d logged-in sessions, want 2", g.ID(), n)
		}
	}
	for _, u := range users {
		select {
		case <-u.conn.Done():
			t.Fatalf("%s was disconnected", u.name)
		default:
		}
	}
	chatRound(t, users, "after")

	// Membership still flows through etcd: a new backend joins and a
	// stopped one leaves, as every gate sees.
	h.startBackend("im-3", chat.GroupIM)
	h.waitGroupSize(chat.GroupIM, 3, 10*time.Second)
	h.stopBackend("im-1")
	h.waitGroupSize(chat.GroupIM, 2, 10*time.Second)
	chatRound(t, users, "membership")
	if total, unreg := h.reregistrations(); total != 0 || unreg != 0 {
		t.Fatalf("%d re-registrations, %d unregistered: %v", total, unreg, h.registrations())
	}
	t.Logf("nodes: %v", h.registrations())
}
