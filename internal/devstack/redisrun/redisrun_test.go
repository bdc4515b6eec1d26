package redisrun

import (
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestStartProcessRestart(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := StartProcess(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t.Logf("%s on %s", s.Kind(), s.Addr())

	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// Same address, empty data; the client reconnects by itself.
	if _, err := c.Get(ctx, "k").Result(); !errors.Is(err, redis.Nil) {
		t.Fatalf("after restart GET k = %v, want redis.Nil", err)
	}
	s.Close()
	s.Close()
	if err := s.Restart(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Restart after Close = %v, want ErrClosed", err)
	}
	if err := ping(ctx, s.Addr()); err == nil {
		t.Fatal("PING answered after Close")
	}
}

func TestStartMemory(t *testing.T) {
	s, err := StartMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Kind() != "in-process miniredis" {
		t.Fatalf("Kind = %q", s.Kind())
	}
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	if err := c.Set(ctx, "k", "v", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("GET = %q, %v", v, err)
	}
	if err := s.Restart(ctx); !errors.Is(err, ErrNotProcess) {
		t.Fatalf("Restart = %v, want ErrNotProcess", err)
	}
	s.Close()
	s.Close()
}

func TestStartProcessNoBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := StartProcess(context.Background())
	if !errors.Is(err, ErrNoRedisServer) {
		t.Fatalf("err = %v, want ErrNoRedisServer", err)
	}
}
