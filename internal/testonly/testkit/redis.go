package testkit

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/zcluster/zcluster/internal/devstack/redisrun"
)

// redisStartTimeout bounds how long a test waits for its redis-server.
const redisStartTimeout = 20 * time.Second

// requireRedis reports whether the environment demands a real redis-server
// (ZC_TEST_REDIS=require, as CI sets it).
func requireRedis() bool { return os.Getenv("ZC_TEST_REDIS") == "require" }

// Redis returns the address of a Redis for this test: a real redis-server
// child when one is on PATH. When it is missing: if the environment sets
// ZC_TEST_REDIS=require (CI does) the test fails with a clear message;
// otherwise it falls back to an in-process miniredis and says so with t.Log.
// Cleanup stops it.
func Redis(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), redisStartTimeout)
	defer cancel()
	s, err := redisrun.StartProcess(ctx)
	switch {
	case err == nil:
	case errors.Is(err, redisrun.ErrNoRedisServer) && !requireRedis():
		t.Logf("testkit: %v; falling back to in-process miniredis (set ZC_TEST_REDIS=require to forbid this)", err)
		if s, err = redisrun.StartMemory(); err != nil {
			t.Fatalf("testkit: %v", err)
		}
	case errors.Is(err, redisrun.ErrNoRedisServer):
		t.Fatalf("testkit: ZC_TEST_REDIS=require but %v: install redis-server", err)
	default:
		t.Fatalf("testkit: %v", err)
	}
	t.Cleanup(s.Close)
	return s.Addr()
}

// RedisServer is like Redis but returns the *redisrun.Server, for tests that
// restart it. It needs a real redis-server: without one the test is skipped,
// or fails under ZC_TEST_REDIS=require.
func RedisServer(t testing.TB) *redisrun.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), redisStartTimeout)
	defer cancel()
	s, err := redisrun.StartProcess(ctx)
	switch {
	case err == nil:
	case errors.Is(err, redisrun.ErrNoRedisServer) && !requireRedis():
		t.Skipf("testkit: %v; this test needs a real redis-server", err)
	case errors.Is(err, redisrun.ErrNoRedisServer):
		t.Fatalf("testkit: ZC_TEST_REDIS=require but %v: install redis-server", err)
	default:
		t.Fatalf("testkit: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}
