package embedetcd

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestClusterSurvivesLeaderLoss: a 3-member cluster keeps serving reads and
// writes through a client configured with every endpoint after its leader is
// stopped, elects another leader, and takes the member back with its data.
func TestClusterSurvivesLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-member etcd cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := StartCluster(ctx, t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Size() != 3 || len(c.Endpoints()) != 3 {
		t.Fatalf("size %d, endpoints %v", c.Size(), c.Endpoints())
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "/k", "v1"); err != nil {
		t.Fatal(err)
	}
	leader := c.Leader()
	if leader < 0 {
		t.Fatal("no leader after StartCluster")
	}
	if err := c.StopMember(leader); err != nil {
		t.Fatal(err)
	}
	if c.Running(leader) {
		t.Fatal("stopped member still running")
	}
	next, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if next == leader {
		t.Fatalf("leader %d is the stopped member", next)
	}
	// The client moves to a live member by itself.
	if err := retry(ctx, func(ctx context.Context) error {
		_, err := cli.Put(ctx, "/k", "v2")
		return err
	}); err != nil {
		t.Fatal(err)
	}

	if err := c.RestartMember(ctx, leader); err != nil {
		t.Fatal(err)
	}
	// The restarted member catches up: a read served by it alone sees v2.
	one, err := clientv3.New(clientv3.Config{Endpoints: []string{c.MemberEndpoint(leader)}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	if err := retry(ctx, func(ctx context.Context) error {
		resp, err := one.Get(ctx, "/k", clientv3.WithSerializable())
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v2" {
			return fmt.Errorf("restarted member reads %v", resp.Kvs)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	if err := c.StopMember(7); !errors.Is(err, ErrMemberIndex) {
		t.Fatalf("StopMember(7) = %v, want ErrMemberIndex", err)
	}
	c.Close()
	c.Close()
	if err := c.RestartMember(ctx, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("RestartMember after Close = %v, want ErrClosed", err)
	}
}

// retry calls fn with a 1s deadline until it succeeds or ctx ends.
func retry(ctx context.Context, fn func(context.Context) error) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		err := fn(cctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
