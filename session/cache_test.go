package session

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestCacheLeaderCanceled: when the caller running a shared fetch gives up,
// a waiting caller with a live context fetches for itself.
func TestCacheLeaderCanceled(t *testing.T) {
	clk := &fakeClock{}
	c := newCache[int](time.Second, 10, clk.now)
	var fetches atomic.Int32
	started := make(chan struct{})
	fetch := func(ctx context.Context) (int, error) {
		if fetches.Add(1) == 1 {
			close(started)
			<-ctx.Done()
			return 0, fmt.Errorf("wrapped: %w", ctx.Err())
		}
		return 42, nil
	}

	leaderCtx, cancel := context.WithCancel(context.Background())
	leaderErr := make(chan error, 1)
	go func() {
		_, _, err := c.get(leaderCtx, "k", fetch)
		leaderErr <- err
	}()
	<-started
	follower := make(chan int, 1)
	go func() {
		v, _, err := c.get(context.Background(), "k", fetch)
		if err != nil {
			t.Error(err)
		}
		follower <- v
	}()
	time.Sleep(10 * time.Millisecond) // let the follower join the flight
	cancel()
	if err := <-leaderErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("leader err = %v, want context.Canceled", err)
	}
	if v := <-follower; v != 42 {
		t.Fatalf("follower got %d, want 42", v)
	}
	if v, hit, err := c.get(context.Background(), "k", fetch); !hit || v != 42 || err != nil {
		t.Fatalf("after: %d, hit %v, %v", v, hit, err)
	}
}

// TestCacheForgetInFlight: a fetch that was under way when the key was
// forgotten does not store its (possibly stale) answer.
func TestCacheForgetInFlight(t *testing.T) {
	clk := &fakeClock{}
	c := newCache[string](time.Second, 10, clk.now)
	c.get(context.Background(), "k", func(context.Context) (string, error) {
		c.forget("k") // e.g. the session was rebound while we read
		return "old", nil
	})
	if c.len() != 0 {
		t.Fatal("answer of a forgotten fetch was cached")
	}
}

func TestCacheBounded(t *testing.T) {
	clk := &fakeClock{}
	c := newCache[int](time.Second, 32, clk.now)
	for i := range 1000 {
		c.get(context.Background(), fmt.Sprint(i), func(context.Context) (int, error) { return i, nil })
		if c.len() > 32 {
			t.Fatalf("%d entries, max 32", c.len())
		}
	}
	// Expired entries go first.
	clk.advance(2 * time.Second)
	c.get(context.Background(), "new", func(context.Context) (int, error) { return 0, nil })
	if c.len() > 32 {
		t.Fatalf("%d entries", c.len())
	}
}

func TestNewID(t *testing.T) {
	const n = 100000
	seen := make(map[string]struct{}, n)
	for range n {
		id := NewID()
		if len(id) != 26 || strings.ContainsAny(id, "|:") || strings.ToLower(id) != id {
			t.Fatalf("bad id %q", id)
		}
		if _, dup := seen[id]; dup {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = struct{}{}
	}
	tok := NewToken()
	if len(tok) != 16 || strings.Trim(tok, "0123456789abcdef") != "" {
		t.Fatalf("bad token %q", tok)
	}
}
