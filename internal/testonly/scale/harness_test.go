package scale

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/zcluster/zcluster/internal/testonly/testkit/chatkit"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/internal/devstack/redisrun"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
	"github.com/zcluster/zcluster/internal/tools/zclient"
	"github.com/zcluster/zcluster/zctest"
)

const (
	testSecret     = "scale-secret"
	testTTL        = 3 * time.Second
	testSessionTTL = 9 * time.Second
)

// needScale skips the test unless ZC_SCALE=1 and not -short.
func needScale(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("scale test: skipped under -short")
	}
	if os.Getenv("ZC_SCALE") != "1" {
		t.Skip("scale test: set ZC_SCALE=1 to run it (CI does)")
	}
}

// harness runs in-process gates and backends against the etcd endpoints and
// the Redis it is given, each node with its own etcd and Redis clients as
// separate processes would have.
type harness struct {
	t        *testing.T
	kit      *zctest.Cluster // builds the nodes
	etcd     []string
	newRedis func() redis.UniversalClient
	log      *slog.Logger

	mu       sync.Mutex
	gates    map[string]*gate.Gate
	backends map[string]*backend.Backend
	closers  []func()
}

func newHarness(t *testing.T, etcdEndpoints []string, newRedis func() redis.UniversalClient) *harness {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kit, err := zctest.New(ctx, zctest.Config{
		EtcdEndpoints: etcdEndpoints, NewRedis: newRedis,
		Secret: []byte(testSecret), TTL: testTTL, SessionTTL: testSessionTTL,
	})
	if err != nil {
		t.Fatalf("zctest: %v", err)
	}
	h := &harness{
		t:        t,
		kit:      kit,
		etcd:     etcdEndpoints,
		newRedis: newRedis,
		log:      slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		gates:    map[string]*gate.Gate{},
		backends: map[string]*backend.Backend{},
	}
	t.Cleanup(h.stopAll)
	return h
}

// singleRedis returns a client factory for one Redis address.
func singleRedis(addr string) func() redis.UniversalClient {
	return func() redis.UniversalClient { return redis.NewClient(&redis.Options{Addr: addr}) }
}

func (h *harness) clients() (*clientv3.Client, redis.UniversalClient) {
	h.t.Helper()
	cli, rdb, err := h.kit.Clients()
	if err != nil {
		h.t.Fatal(err)
	}
	return cli, rdb
}

// startGate starts a gate running the chat app.
func (h *harness) startGate(id string) *gate.Gate {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	g, err := h.kit.StartGate(ctx, id, zctest.WithoutApp(),
		zctest.GateConfig(func(cfg *gate.Config) { cfg.RequestTimeout, cfg.Logger = 5*time.Second, h.log }),
		zctest.GateSetup(func(g *gate.Gate) error { chat.SetupGate(g); return nil }))
	if err != nil {
		h.t.Fatal(err)
	}
	h.mu.Lock()
	h.gates[id] = g
	h.mu.Unlock()
	return g
}

// startBackend starts a backend of group; with no setup it runs the chat app.
func (h *harness) startBackend(id, group string, setup ...func(*backend.Backend)) *backend.Backend {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := h.kit.StartBackend(ctx, id, group, zctest.WithoutApp(),
		zctest.BackendConfig(func(cfg *backend.Config) { cfg.CallTimeout, cfg.Logger = 5*time.Second, h.log }),
		zctest.BackendSetup(func(b *backend.Backend) error {
			if len(setup) == 0 {
				return chat.SetupBackend(b)
			}
			for _, s := range setup {
				s(b)
			}
			return nil
		}))
	if err != nil {
		h.t.Fatal(err)
	}
	h.mu.Lock()
	h.backends[id] = b
	h.mu.Unlock()
	return b
}

// stopBackend shuts one backend down cleanly.
func (h *harness) stopBackend(id string) {
	h.t.Helper()
	h.mu.Lock()
	b := h.backends[id]
	delete(h.backends, id)
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		h.t.Fatalf("backend %s shutdown: %v", id, err)
	}
}

func (h *harness) stopAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h.mu.Lock()
	defer h.mu.Unlock()
	var wg sync.WaitGroup
	for _, g := range h.gates {
		wg.Go(func() { _ = g.Shutdown(ctx) })
	}
	for _, b := range h.backends {
		wg.Go(func() { _ = b.Shutdown(ctx) })
	}
	wg.Wait()
	for _, fn := range h.closers {
		fn()
	}
	if err := h.kit.Close(); err != nil {
		h.t.Errorf("zctest: %v", err)
	}
}

// registrations describes every running node's Registered and
// Reregistrations, for failure messages.
func (h *harness) registrations() map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]string{}
	for id, g := range h.gates {
		out[id] = fmt.Sprintf("registered=%v reregistrations=%d", g.Registered(), g.Reregistrations())
	}
	for id, b := range h.backends {
		out[id] = fmt.Sprintf("registered=%v reregistrations=%d", b.Registered(), b.Reregistrations())
	}
	return out
}

// reregistrations sums every running node's Reregistrations and counts the
// nodes that are not registered.
func (h *harness) reregistrations() (total int64, unregistered int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, g := range h.gates {
		total += g.Reregistrations()
		if !g.Registered() {
			unregistered++
		}
	}
	for _, b := range h.backends {
		total += b.Reregistrations()
		if !b.Registered() {
			unregistered++
		}
	}
	return total, unregistered
}

// waitGroupSize waits until every gate sees n nodes in group.
func (h *harness) waitGroupSize(group string, n int, timeout time.Duration) {
	h.t.Helper()
	testkit.CheckFor(h.t, timeout, 20*time.Millisecond, func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		for id, g := range h.gates {
			if got := len(g.Topology().Nodes(group)); got != n {
				return fmt.Errorf("gate %s sees %d nodes in %s, want %d", id, got, group, n)
			}
		}
		return nil
	})
}

// --- client helpers ---

func dial(t *testing.T, g *gate.Gate) *zclient.Conn {
	t.Helper()
	return dialAddr(t, g.ListenAddr())
}

func dialAddr(t *testing.T, addr string) *zclient.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := zclient.Dial(ctx, addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func expect(t *testing.T, conn *zclient.Conn, msgID uint32) zclient.Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, skipped, err := conn.Expect(ctx, msgID)
	if err != nil {
		t.Fatalf("%v (skipped %s)", err, chatkit.Describe(skipped))
	}
	if len(skipped) > 0 {
		t.Fatalf("waiting for msgID %d, got first %s", msgID, chatkit.Describe(skipped))
	}
	return f
}

// chatUser is one logged-in demo client.
type chatUser struct {
	name string
	conn *zclient.Conn
}

// chatRound checks, for users logged in on different gates: a cross-gate
// send from every user to the next (delivered as msgID 100, acknowledged as
// msgID 2), a chain-echo (im -> echo) from every user, and a broadcast from
// the first that every user receives. tag makes the texts unique per round.
func chatRound(t *testing.T, users []chatUser, tag string) {
	t.Helper()
	for i, u := range users {
		to := users[(i+1)%len(users)]
		text := fmt.Sprintf("%s: %s to %s", tag, u.name, to.name)
		if err := u.conn.Send(chat.MsgSend, chatkit.MustJSON(t, chat.SendRequest{To: to.name, Text: text})); err != nil {
			t.Fatal(err)
		}
		var r chat.SendReply
		if err := json.Unmarshal(expect(t, u.conn, chat.MsgSend).Payload, &r); err != nil || !r.OK {
			t.Fatalf("%s: send to %s: %+v (%v)", tag, to.name, r, err)
		}
		var m chat.Message
		if err := json.Unmarshal(expect(t, to.conn, chat.MsgDelivered).Payload, &m); err != nil || m.From != u.name || m.Text != text {
			t.Fatalf("%s: %s got %+v (%v), want %q from %s", tag, to.name, m, err, text, u.name)
		}
	}
	for _, u := range users {
		body := []byte(tag + " chain " + u.name)
		if err := u.conn.Send(chat.MsgChainEcho, body); err != nil {
			t.Fatal(err)
		}
		if f := expect(t, u.conn, chat.MsgChainEcho); string(f.Payload) != string(body) {
			t.Fatalf("%s: chain-echo for %s = %q", tag, u.name, f.Payload)
		}
	}
	text := tag + " broadcast"
	if err := users[0].conn.Send(chat.MsgBroadcast, []byte(text)); err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		var m chat.Message
		if err := json.Unmarshal(expect(t, u.conn, chat.MsgBroadcasted).Payload, &m); err != nil || m.From != users[0].name || m.Text != text {
			t.Fatalf("%s: %s got broadcast %+v (%v)", tag, u.name, m, err)
		}
	}
}

// --- stores ---

// redisCluster starts a 3-master Redis Cluster for the test.
func redisCluster(t *testing.T) *redisrun.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := redisrun.StartCluster(ctx, 3)
	if err != nil {
		t.Fatalf("redis cluster: %v", err)
	}
	t.Cleanup(c.Close)
	t.Logf("%s on %v", c.Kind(), c.Addrs())
	return c
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// zclusterBinary builds cmd/zcluster once per test run.
func zclusterBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "zcluster-scale-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "zcluster")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/zcluster/zcluster/cmd/zcluster").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}
