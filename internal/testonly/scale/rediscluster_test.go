package scale

import (
	"context"
	"errors"
	"fmt"
	"github.com/zcluster/zcluster/internal/testonly/testkit/chatkit"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/internal/devstack/embedetcd"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
	"github.com/zcluster/zcluster/internal/tools/zclient"
	"github.com/zcluster/zcluster/session"
)

// slotErrors counts CROSSSLOT (and any other cluster redirection that
// reached the caller) in the replies a client hands back.
type slotErrors struct {
	n     atomic.Int64
	mu    sync.Mutex
	first string
}

func (h *slotErrors) check(cmd redis.Cmder) {
	err := cmd.Err()
	if err == nil {
		return
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "CROSSSLOT") || strings.HasPrefix(msg, "MOVED") || strings.HasPrefix(msg, "ASK") {
		h.n.Add(1)
		h.mu.Lock()
		if h.first == "" {
			h.first = fmt.Sprintf("%v: %s", cmd.Args(), msg)
		}
		h.mu.Unlock()
	}
}

func (h *slotErrors) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *slotErrors) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.check(cmd)
		return err
	}
}

func (h *slotErrors) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			h.check(c)
		}
		return err
	}
}

func (h *slotErrors) assertNone(t *testing.T) {
	t.Helper()
	if n := h.n.Load(); n != 0 {
		t.Fatalf("%d slot errors reached the caller; first: %s", n, h.first)
	}
}

// clusterClients returns a factory of ClusterClients (as
// redis.UniversalClient) on addrs, all reporting to hook.
func clusterClients(addrs []string, hook *slotErrors) func() redis.UniversalClient {
	return func() redis.UniversalClient {
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
		c.AddHook(hook)
		return c
	}
}

// keysPerMaster returns the number of keys matching pattern on each master.
func keysPerMaster(ctx context.Context, t *testing.T, c *redis.ClusterClient, pattern string) map[string]int {
	t.Helper()
	var mu sync.Mutex
	out := map[string]int{}
	err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		n := 0
		iter := m.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			n++
		}
		mu.Lock()
		out[m.Options().Addr] = n
		mu.Unlock()
		return iter.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRedisClusterSessionStore runs the session store's behaviours on a
// 3-master Redis Cluster through redis.NewClusterClient used as a
// redis.UniversalClient: bind and compare-and-delete unbind, takeover and the
// late cleanup of the displaced session, concurrent takeovers, a pipelined
// Refresh spread over every master (also after FLUSHALL, with lost bindings
// reported), cached lookups, and cache invalidation over pub/sub between two
// nodes. No CROSSSLOT or redirection error reaches the store.
func TestRedisClusterSessionStore(t *testing.T) {
	needScale(t)
	rc := redisCluster(t)
	hook := &slotErrors{}
	newClient := func() *redis.ClusterClient {
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs()})
		c.AddHook(hook)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	newStore := func(c redis.UniversalClient, cacheTTL time.Duration) *session.Store {
		s, err := session.New(session.Config{Client: c, TTL: 20 * time.Second, CacheTTL: cacheTTL})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ctx := waitCtx(t, 60*time.Second)
	admin := newClient()
	var ua redis.UniversalClient = newClient()
	a := newStore(ua, 0)
	owner := func(gate string) session.Owner { return session.Owner{Gate: gate, Token: session.NewToken()} }

	t.Run("bind and unbind", func(t *testing.T) {
		sid, o := session.NewID(), owner("gate-a")
		if err := a.BindSession(ctx, sid, o); err != nil {
			t.Fatal(err)
		}
		if prev, err := a.BindUser(ctx, "alice", sid); err != nil || prev != "" {
			t.Fatalf("BindUser = %q, %v", prev, err)
		}
		if got, err := a.Owner(ctx, sid); err != nil || got != o {
			t.Fatalf("Owner = %v, %v", got, err)
		}
		if ok, err := a.UnbindSession(ctx, sid, owner("gate-a")); err != nil || ok {
			t.Fatalf("UnbindSession(other token) = %v, %v; want false", ok, err)
		}
		if ok, err := a.UnbindUser(ctx, "alice", sid); err != nil || !ok {
			t.Fatalf("UnbindUser = %v, %v", ok, err)
		}
		if ok, err := a.UnbindSession(ctx, sid, o); err != nil || !ok {
			t.Fatalf("UnbindSession = %v, %v", ok, err)
		}
		if _, err := a.UserSession(ctx, "alice"); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("UserSession after unbind: %v", err)
		}
	})

	t.Run("takeover and late unbind", func(t *testing.T) {
		s1, o1 := session.NewID(), owner("gate-a")
		s2, o2 := session.NewID(), owner("gate-b")
		_ = a.BindSession(ctx, s1, o1)
		_, _ = a.BindUser(ctx, "bob", s1)
		_ = a.BindSession(ctx, s2, o2)
		if prev, err := a.BindUser(ctx, "bob", s2); err != nil || prev != s1 {
			t.Fatalf("takeover = %q, %v; want %q", prev, err, s1)
		}
		// gate-a's cleanup of s1 arrives after the takeover.
		if ok, err := a.UnbindUser(ctx, "bob", s1); err != nil || ok {
			t.Fatalf("late UnbindUser = %v, %v; want false", ok, err)
		}
		if ok, err := a.UnbindSession(ctx, s1, o1); err != nil || !ok {
			t.Fatalf("late UnbindSession = %v, %v", ok, err)
		}
		if sid, o, err := a.LookupUser(ctx, "bob"); err != nil || sid != s2 || o != o2 {
			t.Fatalf("LookupUser = %q, %v, %v", sid, o, err)
		}
	})

	t.Run("concurrent takeovers", func(t *testing.T) {
		// Every login of a user races with the others; at the end exactly
		// one login per user found no one to displace, every other session
		// was displaced exactly once, and the user names the one session
		// never displaced.
		const users, logins = 8, 12
		var wg sync.WaitGroup
		var mu sync.Mutex
		sids := map[string][]string{} // user -> its sessions
		displaced := map[string]int{}
		firsts := map[string]int{}
		for u := range users {
			user := fmt.Sprintf("racer%d", u)
			for range logins {
				wg.Go(func() {
					sid := session.NewID()
					if err := a.BindSession(ctx, sid, owner("gate-x")); err != nil {
						t.Error(err)
						return
					}
					prev, err := a.BindUser(ctx, user, sid)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					defer mu.Unlock()
					sids[user] = append(sids[user], sid)
					if prev == "" {
						firsts[user]++
					} else {
						displaced[prev]++
					}
				})
			}
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		for user, list := range sids {
			if firsts[user] != 1 {
				t.Fatalf("%s: %d logins found no previous session, want 1", user, firsts[user])
			}
			var live []string
			for _, sid := range list {
				switch displaced[sid] {
				case 0:
					live = append(live, sid)
				case 1:
				default:
					t.Fatalf("%s displaced %d times", sid, displaced[sid])
				}
			}
			if len(live) != 1 {
				t.Fatalf("%s: %d sessions never displaced, want 1", user, len(live))
			}
			if got, err := a.UserSession(ctx, user); err != nil || got != live[0] {
				t.Fatalf("%s names %q (%v), want %q", user, got, err, live[0])
			}
		}
	})

	t.Run("refresh across masters", func(t *testing.T) {
		o := owner("gate-r")
		bs := make([]session.Binding, 3000)
		for i := range bs {
			bs[i] = session.Binding{Session: session.NewID(), User: fmt.Sprintf("r%d", i), Owner: o}
		}
		if lost, err := a.Refresh(ctx, bs); err != nil || len(lost) != 0 {
			t.Fatalf("Refresh = %d lost, %v", len(lost), err)
		}
		per := keysPerMaster(ctx, t, admin, "zc:*")
		total := 0
		for addr, n := range per {
			if n < 500 {
				t.Fatalf("master %s holds %d keys: %v", addr, n, per)
			}
			total += n
		}
		t.Logf("keys per master after refreshing 3000 bindings: %v", per)
		// Every master forgets everything (and its scripts).
		if err := admin.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			if err := m.FlushAll(ctx).Err(); err != nil {
				return err
			}
			return m.ScriptFlush(ctx).Err()
		}); err != nil {
			t.Fatal(err)
		}
		// Meanwhile r7 logs in elsewhere and r9's session is claimed.
		other := owner("gate-s")
		newSid := session.NewID()
		_ = a.BindSession(ctx, newSid, other)
		_, _ = a.BindUser(ctx, "r7", newSid)
		_ = a.BindSession(ctx, bs[9].Session, other)
		lost, err := a.Refresh(ctx, bs)
		if err != nil {
			t.Fatal(err)
		}
		if len(lost) != 2 || lost[0] != bs[7] || lost[1] != bs[9] {
			t.Fatalf("lost = %v, want r7's and r9's bindings", lost)
		}
		if got, _ := a.UserSession(ctx, "r7"); got != newSid {
			t.Fatalf("r7 names %q, want %q", got, newSid)
		}
		if got, err := a.Owner(ctx, bs[2999].Session); err != nil || got != o {
			t.Fatalf("restored owner %v, %v", got, err)
		}
		if got, err := a.UserSession(ctx, "r2999"); err != nil || got != bs[2999].Session {
			t.Fatalf("restored user %q, %v", got, err)
		}
	})

	t.Run("cached lookups and invalidation", func(t *testing.T) {
		// Node B caches for 15s; only an invalidation can make it see a
		// change sooner.
		b := newStore(newClient(), 15*time.Second)
		ictx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { b.RunInvalidation(ictx) })
		defer wg.Wait()
		defer cancel()
		// Wait until B's subscription is in place on its shard.
		testkit.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			var subs atomic.Int64
			err := admin.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error {
				m, err := n.PubSubNumSub(ctx, "zc:inval").Result()
				subs.Add(m["zc:inval"])
				return err
			})
			if err != nil {
				return err
			}
			if subs.Load() == 0 {
				return errors.New("no subscriber on zc:inval yet")
			}
			return nil
		})

		s1, o1 := session.NewID(), owner("gate-a")
		s2, o2 := session.NewID(), owner("gate-b")
		_ = a.BindSession(ctx, s1, o1)
		_ = a.BindSession(ctx, s2, o2)
		_, _ = a.BindUser(ctx, "erin", s1)
		time.Sleep(100 * time.Millisecond) // let RunInvalidation's initial clear pass
		if sid, _, err := b.LookupUser(ctx, "erin"); err != nil || sid != s1 {
			t.Fatalf("LookupUser = %q, %v", sid, err)
		}
		calls := b.Stats().RedisCalls
		if sid, o, _ := b.LookupUser(ctx, "erin"); sid != s1 || o != o1 || b.Stats().RedisCalls != calls {
			t.Fatalf("second lookup not from the cache: %q %v, %d calls", sid, o, b.Stats().RedisCalls-calls)
		}
		// A takeover on node A reaches B's cache at once.
		if _, err := a.BindUser(ctx, "erin", s2); err != nil {
			t.Fatal(err)
		}
		testkit.CheckFor(t, 3*time.Second, 10*time.Millisecond, func() error {
			if sid, o, err := b.LookupUser(ctx, "erin"); err != nil || sid != s2 || o != o2 {
				return fmt.Errorf("B still resolves erin to %q %v (%v)", sid, o, err)
			}
			return nil
		})
		// So does an unbind.
		if ok, err := a.UnbindUser(ctx, "erin", s2); err != nil || !ok {
			t.Fatalf("UnbindUser = %v, %v", ok, err)
		}
		testkit.CheckFor(t, 3*time.Second, 10*time.Millisecond, func() error {
			if _, _, err := b.LookupUser(ctx, "erin"); !errors.Is(err, session.ErrNotFound) {
				return fmt.Errorf("B still resolves erin (%v)", err)
			}
			return nil
		})
	})
	hook.assertNone(t)
}

// TestRedisClusterChat runs the demo scenario with every node's Redis
// client a ClusterClient on a 3-master Redis Cluster: two in-process gates
// and a third gate run as the zcluster binary with --redis given as a comma
// list (which must make it a cluster client), 2 im and 1 echo backends.
// Logins on all gates, cross-gate sends, chain-echo, broadcast, a login that
// kicks an older one on another gate, and the session records surviving
// more than two TTLs; sessions land on every master and no CROSSSLOT or
// redirection error reaches a node.
func TestRedisClusterChat(t *testing.T) {
	needScale(t)
	rc := redisCluster(t)
	ctx := waitCtx(t, 90*time.Second)
	e, err := embedetcd.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	hook := &slotErrors{}
	h := newHarness(t, e.Endpoints(), clusterClients(rc.Addrs(), hook))
	g1 := h.startGate("gate-1")
	g2 := h.startGate("gate-2")
	h.startBackend("im-1", chat.GroupIM)
	h.startBackend("im-2", chat.GroupIM)
	h.startBackend("echo-1", chat.GroupEcho)

	listen := testkit.FreeAddr(t)
	bin := startProc(t, "gate-3", "gate", "--id", "gate-3", "--listen", listen, "--relay", testkit.FreeAddr(t),
		"--etcd", strings.Join(e.Endpoints(), ","), "--redis", strings.Join(rc.Addrs(), ","),
		"--secret", testSecret, "--ttl", testTTL.String(), "--session-ttl", "3s")
	testkit.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if err := bin.alive(); err != nil {
			t.Fatal(err)
		}
		if n := len(g1.Topology().Nodes("gate")); n != 3 {
			return fmt.Errorf("gate-1 sees %d gates", n)
		}
		return nil
	})
	h.waitGroupSize(chat.GroupIM, 2, 10*time.Second)
	h.waitGroupSize(chat.GroupEcho, 1, 10*time.Second)

	var users []chatUser
	for i := range 12 {
		var conn *zclient.Conn
		switch i % 3 {
		case 0:
			conn = dial(t, g1)
		case 1:
			conn = dial(t, g2)
		default:
			conn = dialAddr(t, listen)
		}
		u := chatUser{fmt.Sprintf("user%02d", i), conn}
		if r := chatkit.Login(t, u.conn, u.name); r.Gate != fmt.Sprintf("gate-%d", i%3+1) {
			t.Fatalf("%s logged in on %s", u.name, r.Gate)
		}
		users = append(users, u)
	}
	chatRound(t, users, "cluster")

	// user00 logs in again on the binary gate: the older login on gate-1 is
	// kicked and messages reach the new one.
	again := dialAddr(t, listen)
	chatkit.Login(t, again, "user00")
	expect(t, users[0].conn, chat.MsgKick)
	select {
	case <-users[0].conn.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("kicked connection not closed")
	}
	users[0].conn = again
	chatRound(t, users, "after kick")

	admin := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs()})
	defer admin.Close()
	per := keysPerMaster(ctx, t, admin, "zc:[su]:*")
	t.Logf("session and user keys per master: %v", per)
	for addr, n := range per {
		if n == 0 {
			t.Errorf("master %s holds no session key: %v", addr, per)
		}
	}

	// The binary gate's records have a 3s TTL; after 3 of them they are
	// alive only because its refresh pipeline works on the cluster.
	time.Sleep(7 * time.Second)
	for i, u := range users {
		if i%3 != 2 {
			continue
		}
		if _, err := admin.Get(ctx, "zc:u:"+u.name).Result(); err != nil {
			t.Fatalf("%s on gate-3: user record: %v, 7s after login with a 3s TTL", u.name, err)
		}
	}
	chatRound(t, users, "after refresh")
	hook.assertNone(t)
}
