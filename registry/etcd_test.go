package registry

import (
	"context"
	"log/slog"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/zcluster/zcluster/internal/devstack/embedetcd"
)

// startEtcd starts an embedded etcd with its data in a temp dir, closed when
// the test ends.
func startEtcd(t *testing.T) *embedetcd.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := embedetcd.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// newClient connects to endpoints; the client is closed when the test ends.
func newClient(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// testLogger writes to the test's output (shown on failure or with -v).
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testConfig is a Config for cli with a short TTL and the test's logger,
// without route memory (its keys outlive a node on purpose: see
// TestRouteMemory), so that a closed registration leaves nothing behind.
func testConfig(t *testing.T, cli *clientv3.Client, ttl time.Duration) Config {
	return Config{Client: cli, TTL: ttl, Logger: testLogger(t), RouteMemory: -1}
}

// checkFor polls fn every poll until it returns nil or timeout passes.
func checkFor(t *testing.T, timeout, poll time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not after %v: %v", timeout, err)
		}
		time.Sleep(poll)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
