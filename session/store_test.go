package session

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/zcluster/zcluster/internal/testonly/testkit"
)

// newClient returns a client of addr, closed at cleanup.
func newClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newStore returns a Store on c; mutate may change the Config first.
func newStore(t *testing.T, c redis.UniversalClient, mutate func(*Config)) *Store {
	t.Helper()
	cfg := Config{Client: c, TTL: 10 * time.Second}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testCtx returns a context that ends with the test, bounded to 30s.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// checkTTL fails unless key exists with a TTL in (0, max].
func checkTTL(t *testing.T, c *redis.Client, key string, max time.Duration) {
	t.Helper()
	d, err := c.PTTL(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if d <= 0 || d > max {
		t.Fatalf("PTTL %s = %v, want in (0, %v]", key, d, max)
	}
}

// owner returns a fresh owner on gate.
func owner(gate string) Owner { return Owner{Gate: gate, Token: NewToken()} }

func TestNewValidates(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	for name, cfg := range map[string]Config{
		"no client":         {},
		"short TTL":         {Client: c, TTL: 500 * time.Millisecond},
		"CacheTTL over TTL": {Client: c, TTL: 2 * time.Second, CacheTTL: 3 * time.Second},
		"negative size":     {Client: c, CacheSize: -1},
	} {
		if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", name, err)
		}
	}
	s, err := New(Config{Client: c, TTL: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if s.owners.ttl != 1500*time.Millisecond || s.prefix != DefaultPrefix || s.RefreshInterval() != time.Second {
		t.Fatalf("defaults: cache TTL %v, prefix %q, refresh %v", s.owners.ttl, s.prefix, s.RefreshInterval())
	}
}

func TestBindRoundTrip(t *testing.T) {
	ctx := testCtx(t)
	c := newClient(t, testkit.Redis(t))
	s := newStore(t, c, nil)
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	sid, o := NewID(), owner("gate-1")

	if err := s.BindSession(ctx, sid, o); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Owner(ctx, sid); err != nil || got != o {
		t.Fatalf("Owner = %v, %v; want %v", got, err, o)
	}
	if prev, err := s.BindUser(ctx, "alice", sid); err != nil || prev != "" {
		t.Fatalf("BindUser = %q, %v; want \"\"", prev, err)
	}
	if prev, err := s.BindUser(ctx, "alice", sid); err != nil || prev != "" {
		t.Fatalf("BindUser again = %q, %v; want \"\" (own session is no one to kick)", prev, err)
	}
	if got, err := s.UserSession(ctx, "alice"); err != nil || got != sid {
		t.Fatalf("UserSession = %q, %v; want %q", got, err, sid)
	}
	checkTTL(t, c, "zc:s:"+sid, 10*time.Second)
	checkTTL(t, c, "zc:u:alice", 10*time.Second)
	if v := c.Get(ctx, "zc:s:"+sid).Val(); v != "gate-1|"+o.Token {
		t.Fatalf("stored record %q", v)
	}

	// Compare-and-delete refuses other values.
	if ok, err := s.UnbindUser(ctx, "alice", NewID()); err != nil || ok {
		t.Fatalf("UnbindUser(other sid) = %v, %v; want false", ok, err)
	}
	if ok, err := s.UnbindSession(ctx, sid, owner("gate-1")); err != nil || ok {
		t.Fatalf("UnbindSession(other token) = %v, %v; want false", ok, err)
	}
	if ok, err := s.UnbindUser(ctx, "alice", sid); err != nil || !ok {
		t.Fatalf("UnbindUser = %v, %v; want true", ok, err)
	}
	if ok, err := s.UnbindSession(ctx, sid, o); err != nil || !ok {
		t.Fatalf("UnbindSession = %v, %v; want true", ok, err)
	}
	if _, err := s.Owner(ctx, sid); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Owner after unbind: %v, want ErrNotFound", err)
	}
	if _, err := s.UserSession(ctx, "alice"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("UserSession after unbind: %v, want ErrNotFound", err)
	}
	if n := c.DBSize(ctx).Val(); n != 0 {
		t.Fatalf("%d keys left", n)
	}

	// Bad arguments never reach Redis.
	if err := s.BindSession(ctx, "", o); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("empty sid: %v", err)
	}
	if err := s.BindSession(ctx, sid, Owner{Gate: "g", Token: "a|b"}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("token with '|': %v", err)
	}
	if _, err := s.BindUser(ctx, "", sid); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("empty user: %v", err)
	}
	// A gate id may hold '|': the token never does.
	odd := Owner{Gate: "dc|1", Token: NewToken()}
	if err := s.BindSession(ctx, sid, odd); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Owner(ctx, sid); err != nil || got != odd {
		t.Fatalf("Owner = %v, %v; want %v", got, err, odd)
	}
	c.Set(ctx, "zc:s:bad", "nopipe", time.Minute)
	if _, err := s.Owner(ctx, "bad"); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("malformed record: %v", err)
	}
}

// TestLateUnbind: the cleanup of a taken-over session arrives after the
// takeover and must not touch the new records.
func TestLateUnbind(t *testing.T) {
	ctx := testCtx(t)
	s := newStore(t, newClient(t, testkit.Redis(t)), nil)
	s1, a := NewID(), owner("gate-a")
	s2, b := NewID(), owner("gate-b")

	if err := s.BindSession(ctx, s1, a); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BindUser(ctx, "alice", s1); err != nil {
		t.Fatal(err)
	}
	// alice logs in on gate B.
	if err := s.BindSession(ctx, s2, b); err != nil {
		t.Fatal(err)
	}
	prev, err := s.BindUser(ctx, "alice", s2)
	if err != nil || prev != s1 {
		t.Fatalf("takeover BindUser = %q, %v; want %q", prev, err, s1)
	}
	// Gate A's cleanup of s1 arrives last.
	if ok, err := s.UnbindUser(ctx, "alice", s1); err != nil || ok {
		t.Fatalf("late UnbindUser = %v, %v; want false", ok, err)
	}
	if ok, err := s.UnbindSession(ctx, s1, a); err != nil || !ok {
		t.Fatalf("late UnbindSession = %v, %v; want true", ok, err)
	}
	if got, err := s.UserSession(ctx, "alice"); err != nil || got != s2 {
		t.Fatalf("UserSession = %q, %v; want %q", got, err, s2)
	}
	if got, err := s.Owner(ctx, s2); err != nil || got != b {
		t.Fatalf("Owner(s2) = %v, %v; want %v", got, err, b)
	}
	if sid, o, err := s.LookupUser(ctx, "alice"); err != nil || sid != s2 || o != b {
		t.Fatalf("LookupUser = %q, %v, %v", sid, o, err)
	}
}

// TestTakeoverConcurrent: many logins of the same users race with the
// cleanups of the sessions they displace. At the end each user names the
// session of its last BindUser, whose record is intact, and every displaced
// session is gone.
func TestTakeoverConcurrent(t *testing.T) {
	ctx := testCtx(t)
	s := newStore(t, newClient(t, testkit.Redis(t)), nil)
	const users, perUser = 4, 16

	type conn struct {
		user, sid string
		o         Owner
	}
	conns := map[string]conn{}
	var all []conn
	for u := range users {
		for i := range perUser {
			c := conn{user: fmt.Sprintf("user%d", u), sid: NewID(), o: owner(fmt.Sprintf("gate-%d", i%3))}
			conns[c.sid] = c
			all = append(all, c)
		}
	}
	rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })

	var (
		mu        sync.Mutex
		displaced = map[string]int{} // sid -> times returned as prev
		firsts    = map[string]int{} // user -> BindUser calls that found no one
		wg        sync.WaitGroup
		errs      = make(chan error, 2*len(all))
	)
	jitter := func() { time.Sleep(time.Duration(rand.IntN(1500)) * time.Microsecond) }
	for _, c := range all {
		wg.Go(func() {
			jitter()
			if err := s.BindSession(ctx, c.sid, c.o); err != nil {
				errs <- err
				return
			}
			prev, err := s.BindUser(ctx, c.user, c.sid)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			if prev == "" {
				firsts[c.user]++
			} else {
				displaced[prev]++
			}
			mu.Unlock()
			if prev == "" {
				return
			}
			// Kick prev: its gate cleans up, late and in random order.
			p := conns[prev]
			wg.Go(func() {
				jitter()
				if ok, err := s.UnbindUser(ctx, p.user, p.sid); err != nil || ok {
					errs <- fmt.Errorf("cleanup UnbindUser(%s, %s) = %v, %v; want false", p.user, p.sid, ok, err)
				}
				if ok, err := s.UnbindSession(ctx, p.sid, p.o); err != nil || !ok {
					errs <- fmt.Errorf("cleanup UnbindSession(%s) = %v, %v; want true", p.sid, ok, err)
				}
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	for u := range users {
		user := fmt.Sprintf("user%d", u)
		if firsts[user] != 1 {
			t.Errorf("%s: %d logins found no previous session, want 1", user, firsts[user])
		}
		var last []string
		for _, c := range all {
			if c.user != user {
				continue
			}
			switch displaced[c.sid] {
			case 0:
				last = append(last, c.sid)
			case 1:
				if _, err := s.Owner(ctx, c.sid); !errors.Is(err, ErrNotFound) {
					t.Errorf("displaced %s still has a record (%v)", c.sid, err)
				}
			default:
				t.Errorf("%s displaced %d times", c.sid, displaced[c.sid])
			}
		}
		if len(last) != 1 {
			t.Fatalf("%s: %d sessions never displaced, want 1", user, len(last))
		}
		if got, err := s.UserSession(ctx, user); err != nil || got != last[0] {
			t.Errorf("%s names %q (%v), want the last login %q", user, got, err, last[0])
		}
		if got, err := s.Owner(ctx, last[0]); err != nil || got != conns[last[0]].o {
			t.Errorf("live session %s: owner %v, %v; want %v", last[0], got, err, conns[last[0]].o)
		}
	}
}

// countHook counts the commands and pipelines a client sends.
type countHook struct{ cmds, pipelines atomic.Int64 }

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.cmds.Add(1)
		return next(ctx, cmd)
	}
}

func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.pipelines.Add(1)
		return next(ctx, cmds)
	}
}

// roundTrips returns the round trips counted since the last call.
func (h *countHook) roundTrips() int64 { return h.cmds.Swap(0) + h.pipelines.Swap(0) }

func TestRefreshAfterFlush(t *testing.T) {
	ctx := testCtx(t)
	c := newClient(t, testkit.Redis(t))
	s := newStore(t, c, nil)
	a := owner("gate-a")
	bs := []Binding{
		{Session: NewID(), User: "alice", Owner: a},
		{Session: NewID(), User: "bob", Owner: a},
		{Session: NewID(), User: "carol", Owner: a},
		{Session: NewID(), Owner: a}, // not logged in
	}
	for _, b := range bs {
		if err := s.BindSession(ctx, b.Session, b.Owner); err != nil {
			t.Fatal(err)
		}
		if b.User != "" {
			if _, err := s.BindUser(ctx, b.User, b.Session); err != nil {
				t.Fatal(err)
			}
		}
	}
	if lost, err := s.Refresh(ctx, bs); err != nil || len(lost) != 0 {
		t.Fatalf("Refresh = %v, %v; want nothing lost", lost, err)
	}

	if err := c.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	// While Redis was empty, bob logged in on gate B, and carol's session
	// record was claimed by another connection.
	bobB, b := NewID(), owner("gate-b")
	if err := s.BindSession(ctx, bobB, b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BindUser(ctx, "bob", bobB); err != nil {
		t.Fatal(err)
	}
	if err := s.BindSession(ctx, bs[2].Session, b); err != nil {
		t.Fatal(err)
	}

	lost, err := s.Refresh(ctx, bs)
	if err != nil {
		t.Fatal(err)
	}
	if len(lost) != 2 || lost[0] != bs[1] || lost[1] != bs[2] {
		t.Fatalf("lost = %v, want bob's and carol's bindings", lost)
	}
	if got, _ := s.UserSession(ctx, "bob"); got != bobB {
		t.Fatalf("bob names %q, want %q (not overwritten)", got, bobB)
	}
	if got, _ := s.Owner(ctx, bs[2].Session); got != b {
		t.Fatalf("carol's session owned by %v, want %v (not overwritten)", got, b)
	}
	for _, i := range []int{0, 3} {
		if got, err := s.Owner(ctx, bs[i].Session); err != nil || got != a {
			t.Fatalf("binding %d: owner %v, %v; want %v", i, got, err, a)
		}
		checkTTL(t, c, "zc:s:"+bs[i].Session, 10*time.Second)
	}
	if got, err := s.UserSession(ctx, "alice"); err != nil || got != bs[0].Session {
		t.Fatalf("alice names %q, %v", got, err)
	}
	checkTTL(t, c, "zc:u:alice", 10*time.Second)
}

func TestRefreshPipelined(t *testing.T) {
	ctx := testCtx(t)
	c := newClient(t, testkit.Redis(t))
	h := &countHook{}
	c.AddHook(h)
	s := newStore(t, c, nil)
	a := owner("gate-a")
	bs := make([]Binding, 1000)
	for i := range bs {
		bs[i] = Binding{Session: NewID(), User: fmt.Sprintf("u%d", i), Owner: a}
	}
	if err := s.Ping(ctx); err != nil { // connect first: the handshake is not Refresh's
		t.Fatal(err)
	}
	h.roundTrips()

	// The script is new to Redis: one EVALSHA pipeline, then one EVAL.
	if lost, err := s.Refresh(ctx, bs); err != nil || len(lost) != 0 {
		t.Fatalf("Refresh = %d lost, %v", len(lost), err)
	}
	if n := h.roundTrips(); n != 2 {
		t.Fatalf("first Refresh of %d bindings took %d round trips, want 2", len(bs), n)
	}
	// Now Redis knows it: one round trip.
	if _, err := s.Refresh(ctx, bs); err != nil {
		t.Fatal(err)
	}
	if n := h.roundTrips(); n != 1 {
		t.Fatalf("second Refresh took %d round trips, want 1", n)
	}
	if n := c.DBSize(ctx).Val(); n != 2000 {
		t.Fatalf("DBSIZE = %d, want 2000", n)
	}
	checkTTL(t, c, "zc:u:u999", 10*time.Second)
}

// TestRefreshAfterRestart: a restarted Redis has no data and no scripts;
// Refresh writes everything back.
func TestRefreshAfterRestart(t *testing.T) {
	ctx := testCtx(t)
	srv := testkit.RedisServer(t)
	c := newClient(t, srv.Addr())
	s := newStore(t, c, nil)
	b := Binding{Session: NewID(), User: "alice", Owner: owner("gate-a")}
	if err := s.BindSession(ctx, b.Session, b.Owner); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BindUser(ctx, b.User, b.Session); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Refresh(ctx, []Binding{b}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		_, err := s.Refresh(ctx, []Binding{b})
		return err
	})
	if got, err := s.UserSession(ctx, "alice"); err != nil || got != b.Session {
		t.Fatalf("after restart alice names %q, %v", got, err)
	}
	if got, err := s.Owner(ctx, b.Session); err != nil || got != b.Owner {
		t.Fatalf("after restart owner %v, %v", got, err)
	}
	// The compare-and-delete script is also unknown to the new server.
	if ok, err := s.UnbindUser(ctx, "alice", b.Session); err != nil || !ok {
		t.Fatalf("UnbindUser after restart = %v, %v", ok, err)
	}
}

// fakeClock is a settable clock for the caches.
type fakeClock struct{ off atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(1e9, c.off.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.off.Add(int64(d)) }

// withClock makes s's caches use clk.
func withClock(s *Store, clk *fakeClock) *Store {
	s.owners.now = clk.now
	s.users.now = clk.now
	return s
}

func TestLookupCache(t *testing.T) {
	ctx := testCtx(t)
	addr := testkit.Redis(t)
	clk := &fakeClock{}
	s := withClock(newStore(t, newClient(t, addr), func(c *Config) { c.CacheTTL = time.Second }), clk)
	other := newStore(t, newClient(t, addr), nil) // another node writing

	sid, a := NewID(), owner("gate-a")
	if err := other.BindSession(ctx, sid, a); err != nil {
		t.Fatal(err)
	}
	calls := func() uint64 { return s.Stats().RedisCalls }

	// Miss, then hit.
	if o, err := s.LookupOwner(ctx, sid); err != nil || o != a {
		t.Fatalf("LookupOwner = %v, %v", o, err)
	}
	n := calls()
	if o, err := s.LookupOwner(ctx, sid); err != nil || o != a {
		t.Fatalf("LookupOwner = %v, %v", o, err)
	}
	if calls() != n {
		t.Fatal("cached LookupOwner went to Redis")
	}
	if st := s.Stats(); st.Lookups != 2 || st.CacheHits != 1 {
		t.Fatalf("stats %+v, want 2 lookups, 1 hit", st)
	}

	// The owner changes elsewhere: the cache answers the old one until
	// CacheTTL has passed, then reads again.
	b := owner("gate-b")
	if err := other.BindSession(ctx, sid, b); err != nil {
		t.Fatal(err)
	}
	clk.advance(999 * time.Millisecond)
	if o, _ := s.LookupOwner(ctx, sid); o != a {
		t.Fatalf("before CacheTTL: %v, want cached %v", o, a)
	}
	clk.advance(time.Millisecond)
	if o, _ := s.LookupOwner(ctx, sid); o != b {
		t.Fatalf("after CacheTTL: %v, want %v", o, b)
	}
	if calls() != n+1 {
		t.Fatalf("expiry: %d Redis calls, want 1", calls()-n)
	}

	// Forget drops the entry at once.
	c := owner("gate-c")
	if err := other.BindSession(ctx, sid, c); err != nil {
		t.Fatal(err)
	}
	s.Forget(sid)
	if o, _ := s.LookupOwner(ctx, sid); o != c {
		t.Fatalf("after Forget: %v, want %v", o, c)
	}

	// A miss is not cached: a bind right after it is seen.
	sid2 := NewID()
	if _, err := s.LookupOwner(ctx, sid2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown session: %v, want ErrNotFound", err)
	}
	if err := other.BindSession(ctx, sid2, a); err != nil {
		t.Fatal(err)
	}
	if o, err := s.LookupOwner(ctx, sid2); err != nil || o != a {
		t.Fatalf("after bind: %v, %v; want %v", o, err, a)
	}

	// LookupUser: user -> session -> owner, cached as a whole.
	if _, _, err := s.LookupUser(ctx, "alice"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unbound user: %v, want ErrNotFound", err)
	}
	if _, err := other.BindUser(ctx, "alice", sid2); err != nil {
		t.Fatal(err)
	}
	if got, o, err := s.LookupUser(ctx, "alice"); err != nil || got != sid2 || o != a {
		t.Fatalf("LookupUser = %q, %v, %v", got, o, err)
	}
	n = calls()
	if got, _, _ := s.LookupUser(ctx, "alice"); got != sid2 || calls() != n {
		t.Fatalf("cached LookupUser: %q, %d Redis calls", got, calls()-n)
	}
	// alice moves to sid; ForgetUser makes it visible at once.
	if _, err := other.BindUser(ctx, "alice", sid); err != nil {
		t.Fatal(err)
	}
	s.ForgetUser("alice")
	if got, o, err := s.LookupUser(ctx, "alice"); err != nil || got != sid || o != c {
		t.Fatalf("after ForgetUser: %q, %v, %v", got, o, err)
	}
	// The session alice names disappears: the lookup fails and the stale
	// user entry is dropped.
	if _, err := other.UnbindSession(ctx, sid, c); err != nil {
		t.Fatal(err)
	}
	s.Forget(sid)
	if _, _, err := s.LookupUser(ctx, "alice"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("user of a dead session: %v, want ErrNotFound", err)
	}
	if s.users.len() != 0 {
		t.Fatal("user entry kept after its session was not found")
	}
}

// TestLookupSharedMiss: concurrent misses for one session make one Redis
// call.
func TestLookupSharedMiss(t *testing.T) {
	ctx := testCtx(t)
	c := newClient(t, testkit.Redis(t))
	release := make(chan struct{})
	c.AddHook(&gateHook{release: release})
	clk := &fakeClock{}
	s := withClock(newStore(t, c, nil), clk)
	sid, a := NewID(), owner("gate-a")
	if err := s.BindSession(ctx, sid, a); err != nil {
		t.Fatal(err)
	}
	before := s.Stats().RedisCalls

	const n = 20
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if o, err := s.LookupOwner(ctx, sid); err != nil || o != a {
				t.Errorf("LookupOwner = %v, %v", o, err)
			}
		})
	}
	testkit.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if got := s.Stats().Lookups; got != n {
			return fmt.Errorf("%d lookups started", got)
		}
		return nil
	})
	close(release)
	wg.Wait()
	// Stragglers that missed the shared call got a cache hit instead.
	if got := s.Stats().RedisCalls - before; got != 1 {
		t.Fatalf("%d concurrent lookups made %d Redis calls, want 1", n, got)
	}
}

// gateHook holds every GET until release is closed.
type gateHook struct{ release chan struct{} }

func (h *gateHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *gateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "get" {
			select {
			case <-h.release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return next(ctx, cmd)
	}
}

func (h *gateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestRefreshErrorKeepsLost: a refresh that fails on one binding (its user
// key holds the wrong type) still returns, with the error, the bindings it
// found lost, across batches too (the failure is in the second pipeline).
func TestRefreshErrorKeepsLost(t *testing.T) {
	c := newClient(t, testkit.Redis(t))
	s := newStore(t, c, nil)
	ctx := testCtx(t)
	var bs []Binding
	for i := range refreshBatch + 2 {
		b := Binding{Session: fmt.Sprintf("s%d", i), User: fmt.Sprintf("u%d", i), Owner: owner("g1")}
		if err := s.BindSession(ctx, b.Session, b.Owner); err != nil {
			t.Fatal(err)
		}
		if _, err := s.BindUser(ctx, b.User, b.Session); err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	// u0 (first batch) logged in elsewhere; u1001 (second batch) broken.
	if err := c.Set(ctx, "zc:u:u0", "elsewhere", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	broken := fmt.Sprintf("zc:u:u%d", refreshBatch+1)
	if err := c.Del(ctx, broken).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.RPush(ctx, broken, "x").Err(); err != nil {
		t.Fatal(err)
	}
	lost, err := s.Refresh(ctx, bs)
	if err == nil || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Fatalf("refresh error = %v, want the WRONGTYPE failure", err)
	}
	if len(lost) != 1 || lost[0].User != "u0" {
		t.Fatalf("lost = %+v, want u0's binding", lost)
	}
}

// TestExist: one answer per id, in order, in one round trip per 1000 ids.
func TestExist(t *testing.T) {
	ctx := testCtx(t)
	c := newClient(t, testkit.Redis(t))
	s := newStore(t, c, nil)
	sids := make([]string, 2500)
	for i := range sids {
		sids[i] = NewID()
		if i%3 == 0 {
			if err := s.BindSession(ctx, sids[i], owner("gate-1")); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := s.Stats().RedisCalls
	got, err := s.Exist(ctx, sids)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(sids) {
		t.Fatalf("%d answers for %d ids", len(got), len(sids))
	}
	for i, ok := range got {
		if ok != (i%3 == 0) {
			t.Fatalf("session %d: exist %v, want %v", i, ok, i%3 == 0)
		}
	}
	if calls := s.Stats().RedisCalls - before; calls != 3 {
		t.Fatalf("%d round trips for 2500 ids, want 3", calls)
	}
}
