package gate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/zcluster/zcluster/cluster"
	"github.com/zcluster/zcluster/internal/devstack/embedetcd"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
	"github.com/zcluster/zcluster/internal/tools/zclient"
	"github.com/zcluster/zcluster/registry"
)

const msgTestLogin uint32 = 1

// testGate is a started gate on an embedded etcd and a real redis-server,
// with one gate handler: msgID 1 logs in as the payload.
type testGate struct {
	*Gate
	rdb *redis.Client
}

func startTestGate(t *testing.T, mod func(*Config), setup ...func(*Gate)) *testGate {
	t.Helper()
	g := newTestGate(t, mod, setup...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return g
}

// newTestGate is startTestGate without the Start; the test's cleanup
// shuts the gate down all the same.
func newTestGate(t *testing.T, mod func(*Config), setup ...func(*Gate)) *testGate {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := embedetcd.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatalf("embedded etcd: %v", err)
	}
	t.Cleanup(e.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(), DialOptions: registry.DialOptions()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	rdb := redis.NewClient(&redis.Options{Addr: testkit.Redis(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	cfg := Config{
		Node: cluster.Node{
			ID:          "gate-1",
			RelayListen: "127.0.0.1:0",
			Etcd:        cli,
			Redis:       rdb,
			Secret:      []byte("test"),
			TTL:         2 * time.Second,
			SessionTTL:  6 * time.Second,
			Logger:      slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		},
		ClientListen: "127.0.0.1:0",
	}
	if mod != nil {
		mod(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.Handle(msgTestLogin, "login", func(c *Context) error {
		if err := c.Login(string(c.Payload())); err != nil {
			return err
		}
		return c.Reply(msgTestLogin, []byte(c.Session()))
	}, Anonymous())
	for _, fn := range setup {
		fn(g)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = g.Shutdown(ctx)
	})
	return &testGate{Gate: g, rdb: rdb}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// login connects a client and logs it in as user; it returns the client
// and its session id.
func (g *testGate) login(t *testing.T, user string) (*zclient.Conn, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := zclient.Dial(ctx, g.ListenAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if err := conn.Send(msgTestLogin, []byte(user)); err != nil {
		t.Fatal(err)
	}
	f, skipped, err := conn.Expect(ctx, msgTestLogin)
	if err != nil {
		t.Fatalf("login %s: %v (skipped %d frames: %v)", user, err, len(skipped), skipped)
	}
	return conn, string(f.Payload)
}

// keysExist returns which of keys exist in Redis.
func (g *testGate) keysExist(t *testing.T, keys ...string) []string {
	t.Helper()
	var out []string
	for _, k := range keys {
		n, err := g.rdb.Exists(context.Background(), k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			out = append(out, k)
		}
	}
	return out
}

// quietRefresh keeps the gate's own refresh loop from running during a
// test (its period is a third of the TTL): the test calls refreshOnce.
func quietRefresh(cfg *Config) { cfg.SessionTTL = time.Minute }

// TestRefreshNeverResurrectsClosedSession: a refresh lists the gate's
// sessions; before it writes them, one client closes and its cleanup
// runs. The refresh must not write that session's records back (with a
// fresh TTL, the user would look online for another TTL while pushes to it
// go nowhere).
func TestRefreshNeverResurrectsClosedSession(t *testing.T) {
	g := startTestGate(t, quietRefresh)
	stay, staySID := g.login(t, "stay")
	_ = stay
	gone, goneSID := g.login(t, "gone")
	goneKeys := []string{"zc:s:" + goneSID, "zc:u:gone"}
	if got := g.keysExist(t, goneKeys...); len(got) != 2 {
		t.Fatalf("after login: %v exist, want both of %v", got, goneKeys)
	}

	hooked := make(chan struct{})
	g.testHookRefresh = func() {
		defer close(hooked)
		// The session was listed; now the client leaves and its cleanup
		// gets every chance to run before the refresh writes.
		_ = gone.Close()
		deadline := time.Now().Add(5 * time.Second)
		for g.client(goneSID) != nil && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if g.client(goneSID) != nil {
			t.Error("the closed client is still in the gate after 5s")
		}
		deadline = time.Now().Add(500 * time.Millisecond)
		for len(g.keysExist(t, goneKeys...)) > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	g.refreshOnce()
	<-hooked
	g.testHookRefresh = nil

	// The cleanup has run by now (or runs right after the refresh); the
	// records must be gone and stay gone.
	testkit.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if got := g.keysExist(t, goneKeys...); len(got) > 0 {
			ttl, _ := g.rdb.PTTL(context.Background(), got[0]).Result()
			return fmt.Errorf("closed session's records %v exist (TTL %v): resurrected", got, ttl)
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond)
	if got := g.keysExist(t, goneKeys...); len(got) > 0 {
		t.Fatalf("closed session's records %v came back", got)
	}
	if got := g.keysExist(t, "zc:s:"+staySID, "zc:u:stay"); len(got) != 2 {
		t.Fatalf("the open session's records: %v exist, want both", got)
	}
}

// TestFailedRefreshStillKicksLost: a refresh that fails on one binding
// (here a user key of the wrong type) still acts on what it learnt: a
// session whose user logged in elsewhere meanwhile is kicked.
func TestFailedRefreshStillKicksLost(t *testing.T) {
	g := startTestGate(t, quietRefresh)
	alice, _ := g.login(t, "alice")
	bob, _ := g.login(t, "bob")
	ctx := context.Background()
	// alice logged in elsewhere; bob's key is broken.
	if err := g.rdb.Set(ctx, "zc:u:alice", "another-session", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := g.rdb.Del(ctx, "zc:u:bob").Err(); err != nil {
		t.Fatal(err)
	}
	if err := g.rdb.RPush(ctx, "zc:u:bob", "not a string").Err(); err != nil {
		t.Fatal(err)
	}
	g.refreshOnce()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	f, _, err := alice.Expect(wctx, MsgKick)
	if err != nil {
		t.Fatalf("alice, logged in elsewhere, was not kicked after a refresh that failed on bob: %v", err)
	}
	if string(f.Payload) != `{"reason":"logged in elsewhere"}` {
		t.Fatalf("kick %s", f.Payload)
	}
	select {
	case <-bob.Done():
		t.Fatal("bob was closed")
	case <-time.After(100 * time.Millisecond):
	}
}

// TestShutdownHonoursContext: a gate handler that never returns holds its
// connection open; Shutdown with a 1s context gives up after about 1s and
// returns the context's error instead of waiting for it.
func TestShutdownHonoursContext(t *testing.T) {
	const msgStuck uint32 = 700
	release := make(chan struct{})
	defer close(release) // let the stuck handler go once the test is over
	entered := make(chan struct{}, 1)
	g := startTestGate(t, nil, func(g *Gate) {
		g.Handle(msgStuck, "stuck", func(*Context) error {
			entered <- struct{}{}
			<-release
			return nil
		}, Anonymous())
	})
	conn, _ := g.login(t, "alice")
	if err := conn.Send(msgStuck, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler did not run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	err := g.Shutdown(ctx)
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a stuck handler = %v after %v, want context.DeadlineExceeded", err, took)
	}
	if took > 4*time.Second {
		t.Fatalf("Shutdown with a 1s context took %v", took)
	}
	if err2 := g.Shutdown(context.Background()); !errors.Is(err2, context.DeadlineExceeded) {
		t.Fatalf("second Shutdown = %v, want the first one's error", err2)
	}
	t.Logf("Shutdown gave up after %v: %v", took.Round(time.Millisecond), err)
}
