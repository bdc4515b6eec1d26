package redisrun

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestStartCluster(t *testing.T) {
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not on PATH", bin)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := StartCluster(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Logf("%s on %v", c.Kind(), c.Addrs())
	if len(c.Addrs()) != 3 {
		t.Fatalf("addrs %v", c.Addrs())
	}

	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer cc.Close()
	for i := range 300 {
		if err := cc.Set(ctx, fmt.Sprintf("k%d", i), i, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Every master holds a share of the keys.
	var masters, total atomic.Int64
	err = cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		n, err := m.DBSize(ctx).Result()
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("master %s holds no key", m.Options().Addr)
		}
		masters.Add(1)
		total.Add(n)
		return nil
	})
	if err != nil || masters.Load() != 3 || total.Load() != 300 {
		t.Fatalf("masters %d, keys %d, %v", masters.Load(), total.Load(), err)
	}
	// A plain client of one node is redirected for the slots it does not
	// serve: that is why a cluster needs a ClusterClient.
	one := redis.NewClient(&redis.Options{Addr: c.Addrs()[0]})
	defer one.Close()
	var moved int
	for i := range 30 {
		if err := one.Get(ctx, fmt.Sprintf("k%d", i)).Err(); err != nil && strings.HasPrefix(err.Error(), "MOVED") {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("a single-node client was never redirected")
	}

	c.Close()
	c.Close()
	for _, addr := range c.Addrs() {
		if err := ping(ctx, addr); err == nil {
			t.Fatalf("%s answers after Close", addr)
		}
	}
}

func TestStartClusterTooSmall(t *testing.T) {
	if _, err := StartCluster(context.Background(), 2); err == nil {
		t.Fatal("a 2-node cluster was accepted")
	}
	t.Setenv("PATH", t.TempDir())
	if _, err := StartCluster(context.Background(), 3); !errors.Is(err, ErrNoRedisServer) {
		t.Fatalf("err = %v, want ErrNoRedisServer", err)
	}
}
