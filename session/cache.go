package session

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// cache is a bounded map of positive answers that expire, in front of a
// fetch function. Concurrent misses for one key share one fetch. Errors are
// never cached. Safe for concurrent use.
//
// Lock order: cache.mu is a leaf lock; fetch is never called with it held.
type cache[V any] struct {
	ttl time.Duration // how long an answer is kept; <= 0 keeps nothing
	max int           // maximum number of entries
	now func() time.Time

	mu      sync.Mutex
	entries map[string]cacheEntry[V]
	flights map[string]*flight[V]
}

// cacheEntry is one cached answer.
type cacheEntry[V any] struct {
	v   V
	exp time.Time
}

// flight is one fetch in progress; followers wait for done.
type flight[V any] struct {
	done      chan struct{}
	v         V
	err       error
	forgotten bool // set under cache.mu: do not store the result
}

// newCache returns an empty cache.
func newCache[V any](ttl time.Duration, max int, now func() time.Time) *cache[V] {
	return &cache[V]{
		ttl:     ttl,
		max:     max,
		now:     now,
		entries: make(map[string]cacheEntry[V]),
		flights: make(map[string]*flight[V]),
	}
}

// get returns the answer for key: from the cache (hit is true), or from a
// fetch that concurrent callers for the same key share. A caller whose ctx
// ends stops waiting; if the caller running a shared fetch gives up because
// of its own ctx, the others retry with theirs.
func (c *cache[V]) get(ctx context.Context, key string, fetch func(context.Context) (V, error)) (v V, hit bool, err error) {
	for {
		c.mu.Lock()
		if e, ok := c.entries[key]; ok {
			if c.now().Before(e.exp) {
				c.mu.Unlock()
				return e.v, true, nil
			}
			delete(c.entries, key)
		}
		f, ok := c.flights[key]
		if !ok {
			f = &flight[V]{done: make(chan struct{})}
			c.flights[key] = f
			c.mu.Unlock()
			c.lead(ctx, key, f, fetch)
			return f.v, false, f.err
		}
		c.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return v, false, fmt.Errorf("session: lookup %s: %w", key, ctx.Err())
		}
		if isContextErr(f.err) && ctx.Err() == nil {
			continue // the leader's ctx ended, not ours
		}
		return f.v, false, f.err
	}
}

// lead runs fetch for the flight f and publishes its result.
func (c *cache[V]) lead(ctx context.Context, key string, f *flight[V], fetch func(context.Context) (V, error)) {
	start := c.now()
	defer func() {
		c.mu.Lock()
		if c.flights[key] == f {
			delete(c.flights, key)
		}
		if f.err == nil && !f.forgotten && c.ttl > 0 {
			// Expiry counts from before the read, so an answer is never
			// used for longer than ttl after Redis gave it.
			c.store(key, f.v, start.Add(c.ttl))
		}
		c.mu.Unlock()
		close(f.done)
	}()
	f.err = errLookupPanicked // replaced unless fetch panics
	f.v, f.err = fetch(ctx)
}

// store adds an entry, evicting first if the cache is full. c.mu is held.
func (c *cache[V]) store(key string, v V, exp time.Time) {
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.max {
		c.evict()
	}
	c.entries[key] = cacheEntry[V]{v: v, exp: exp}
}

// evict drops expired entries, then arbitrary ones until about a sixteenth
// of the capacity is free, so that its O(n) cost is paid rarely. c.mu is
// held.
func (c *cache[V]) evict() {
	now := c.now()
	for k, e := range c.entries {
		if !now.Before(e.exp) {
			delete(c.entries, k)
		}
	}
	target := c.max - max(1, c.max/16)
	for k := range c.entries {
		if len(c.entries) <= target {
			break
		}
		delete(c.entries, k)
	}
}

// forget drops key, and detaches a fetch in progress for it so that its
// (possibly older) answer is not stored and later callers fetch afresh.
func (c *cache[V]) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, key)
	if f, ok := c.flights[key]; ok {
		f.forgotten = true
		delete(c.flights, key)
	}
}

// len returns the number of entries, expired ones included.
func (c *cache[V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// isContextErr reports whether err comes from a context ending.
func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// clear drops every entry and detaches every fetch in progress.
func (c *cache[V]) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
	for k, f := range c.flights {
		f.forgotten = true
		delete(c.flights, k)
	}
}
