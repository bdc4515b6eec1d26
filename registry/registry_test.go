package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func testNode(id, group string, routes ...Route) Node {
	kind := KindBackend
	if group == GateGroup {
		kind = KindGate
	}
	return Node{
		ID: id, Group: group, Kind: kind,
		RelayAddr: "127.0.0.1:7001",
		Routes:    routes,
		Version:   "test",
		StartedAt: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func register(t *testing.T, cfg Config, n Node) *Registration {
	t.Helper()
	r, err := Register(ctxT(t), cfg, n)
	if err != nil {
		t.Fatalf("register %s: %v", n.ID, err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	return r
}

func watch(t *testing.T, cfg Config) *Topology {
	t.Helper()
	top, err := Watch(ctxT(t), cfg)
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	t.Cleanup(top.Close)
	return top
}

// ids lists the IDs of nodes.
func ids(nodes []Node) string {
	s := make([]string, len(nodes))
	for i, n := range nodes {
		s[i] = n.Group + "/" + n.ID
	}
	return strings.Join(s, ",")
}

func TestConfigDefaults(t *testing.T) {
	c := Config{Prefix: "/x/", TTL: 1500 * time.Millisecond}.withDefaults()
	if c.Prefix != "/x" || c.TTL != 2*time.Second || c.Logger == nil {
		t.Fatalf("got prefix %q ttl %v", c.Prefix, c.TTL)
	}
	c = Config{}.withDefaults()
	if c.Prefix != DefaultPrefix || c.TTL != DefaultTTL {
		t.Fatalf("got prefix %q ttl %v", c.Prefix, c.TTL)
	}
	if err := c.validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("no client: %v", err)
	}
	if _, err := Register(context.Background(), Config{}, testNode("a", "im")); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Register without client: %v", err)
	}
}

func TestNodeValidation(t *testing.T) {
	bad := map[string]func(*Node){
		"empty id":     func(n *Node) { n.ID = "" },
		"slash id":     func(n *Node) { n.ID = "a/b" },
		"empty group":  func(n *Node) { n.Group = "" },
		"slash group":  func(n *Node) { n.Group = "x/y" },
		"kind":         func(n *Node) { n.Kind = "worker" },
		"no port":      func(n *Node) { n.RelayAddr = "127.0.0.1" },
		"empty host":   func(n *Node) { n.RelayAddr = ":7000" },
		"wildcard v4":  func(n *Node) { n.RelayAddr = "0.0.0.0:7000" },
		"wildcard v6":  func(n *Node) { n.RelayAddr = "[::]:7000" },
		"client wild":  func(n *Node) { n.ClientAddr = "0.0.0.0:8000" },
		"other group":  func(n *Node) { n.Routes = []Route{{MsgID: 1, Group: "echo"}} },
		"dup msgID":    func(n *Node) { n.Routes = []Route{{MsgID: 1}, {MsgID: 1}} },
		"port zero":    func(n *Node) { n.RelayAddr = "10.0.0.1:0" },
		"port garbage": func(n *Node) { n.RelayAddr = "10.0.0.1:http" },
	}
	for name, mutate := range bad {
		n := testNode("im-1", "im")
		mutate(&n)
		if _, err := normalize(n); !errors.Is(err, ErrInvalidNode) {
			t.Errorf("%s: got %v, want ErrInvalidNode", name, err)
		}
	}
	n, err := normalize(testNode("im-1", "im", Route{MsgID: 4, Name: "echo"}, Route{MsgID: 2, Group: "im", Name: "send"}))
	if err != nil {
		t.Fatal(err)
	}
	want := []Route{{MsgID: 2, Group: "im", Name: "send"}, {MsgID: 4, Group: "im", Name: "echo"}}
	if !reflect.DeepEqual(n.Routes, want) {
		t.Fatalf("routes %+v, want %+v", n.Routes, want)
	}
}

func TestRegisterWatchClose(t *testing.T) {
	srv := startEtcd(t)
	cli := newClient(t, srv.Endpoints())
	cfg := testConfig(t, cli, 3*time.Second)
	top := watch(t, cfg)

	events := make(chan Event, 16)
	cancelSub := top.Subscribe(func(ev Event) { events <- ev })
	defer cancelSub()

	node := testNode("im-1", "im", Route{MsgID: 2, Name: "send"}, Route{MsgID: 3, Name: "chain", Anonymous: true})
	node.ClientAddr = ""
	reg := register(t, cfg, node)
	if !reg.Registered() || reg.LeaseID() == 0 {
		t.Fatalf("registered %v lease %x", reg.Registered(), reg.LeaseID())
	}

	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, ok := top.Node("im-1"); !ok {
			return errors.New("node not in topology")
		}
		if _, ok := top.Route(3); !ok {
			return errors.New("route 3 not in topology")
		}
		return nil
	})
	if got, _ := top.Node("im-1"); !reflect.DeepEqual(got, reg.Node()) {
		t.Fatalf("topology node %+v\nwant %+v", got, reg.Node())
	}
	wantRoutes := []Route{{MsgID: 2, Group: "im", Name: "send"}, {MsgID: 3, Group: "im", Name: "chain", Anonymous: true}}
	if got := top.Routes(); !reflect.DeepEqual(got, wantRoutes) {
		t.Fatalf("routes %+v, want %+v", got, wantRoutes)
	}
	if got := ids(top.Nodes("im")); got != "im/im-1" {
		t.Fatalf("Nodes(im) = %s", got)
	}
	if n, ok := top.Pick("im", "alice"); !ok || n.ID != "im-1" {
		t.Fatalf("Pick = %v %v", n.ID, ok)
	}
	if top.Revision() == 0 {
		t.Fatal("revision 0")
	}
	select {
	case ev := <-events:
		if ev.Type != NodeAdded || ev.Node.ID != "im-1" {
			t.Fatalf("event %v %s", ev.Type, ev.Node.ID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no NodeAdded event")
	}

	// The stored values, as etcdctl would show them.
	resp, err := cli.Get(ctxT(t), "/zcluster/nodes/im/im-1")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("raw get: %v %v", resp, err)
	}
	var raw map[string]any
	if err := json.Unmarshal(resp.Kvs[0].Value, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "group", "kind", "relay_addr", "routes", "version", "started_at"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("node JSON lacks %q: %s", k, resp.Kvs[0].Value)
		}
	}
	if resp.Kvs[0].Lease != int64(reg.LeaseID()) {
		t.Fatalf("node key on lease %x, want %x", resp.Kvs[0].Lease, reg.LeaseID())
	}
	resp, err = cli.Get(ctxT(t), "/zcluster/routes/3/im-1")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("raw get route: %v %v", resp, err)
	}
	if got := string(resp.Kvs[0].Value); got != `{"group":"im","name":"chain","anonymous":true}` {
		t.Fatalf("route JSON %s", got)
	}
	if resp.Kvs[0].Lease != int64(reg.LeaseID()) {
		t.Fatalf("route key on lease %x", resp.Kvs[0].Lease)
	}

	// A second process with the same id is refused.
	if _, err := Register(ctxT(t), cfg, node); !errors.Is(err, ErrNodeExists) {
		t.Fatalf("duplicate id: %v", err)
	}

	// Close revokes: the keys vanish at once.
	if err := reg.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := reg.Close(ctxT(t)); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case <-reg.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if reg.Registered() {
		t.Fatal("Registered after Close")
	}
	resp, err = cli.Get(ctxT(t), "/zcluster/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("keys left after Close: %d %v", resp.Count, err)
	}
	checkFor(t, 2*time.Second, 10*time.Millisecond, func() error {
		if _, ok := top.Node("im-1"); ok {
			return errors.New("node still in topology")
		}
		if _, ok := top.Route(3); ok {
			return errors.New("route still in topology")
		}
		return nil
	})
	timeout := time.After(2 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.Type == NodeRemoved && ev.Node.ID == "im-1" {
				return
			}
		case <-timeout:
			t.Fatal("no NodeRemoved event")
		}
	}
}

func TestRouteConflict(t *testing.T) {
	srv := startEtcd(t)
	cli := newClient(t, srv.Endpoints())
	cfg := testConfig(t, cli, 3*time.Second)

	register(t, cfg, testNode("im-1", "im", Route{MsgID: 3, Name: "chain"}))
	// Same group twice is fine.
	register(t, cfg, testNode("im-2", "im", Route{MsgID: 3, Name: "chain"}))

	_, err := Register(ctxT(t), cfg, testNode("echo-1", "echo", Route{MsgID: 4, Name: "echo"}, Route{MsgID: 3, Name: "steal"}))
	if !errors.Is(err, ErrRouteConflict) {
		t.Fatalf("got %v, want ErrRouteConflict", err)
	}
	msg := err.Error()
	for _, want := range []string{"registry: route conflict", "msgID 3", `"im"`, `"echo"`, "im-1"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not name %s", msg, want)
		}
	}
	// Nothing of the refused node was written.
	resp, err := cli.Get(ctxT(t), "/zcluster/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Key), "echo") {
			t.Errorf("refused node left key %s", kv.Key)
		}
	}
}

func TestLeaseLossReregisters(t *testing.T) {
	srv := startEtcd(t)
	cli := newClient(t, srv.Endpoints())
	cfg := testConfig(t, cli, 2*time.Second)
	top := watch(t, cfg)
	reg := register(t, cfg, testNode("echo-1", "echo", Route{MsgID: 4, Name: "echo"}))

	backOn := func(old clientv3.LeaseID) func() error {
		return func() error {
			if !reg.Registered() {
				return errors.New("not registered")
			}
			l := reg.LeaseID()
			if l == old {
				return errors.New("still on the old lease")
			}
			resp, err := cli.Get(ctxT(t), "/zcluster/", clientv3.WithPrefix())
			if err != nil {
				return err
			}
			if len(resp.Kvs) != 2 {
				return fmt.Errorf("%d keys", len(resp.Kvs))
			}
			for _, kv := range resp.Kvs {
				if kv.Lease != int64(l) {
					return fmt.Errorf("key %s on lease %x, want %x", kv.Key, kv.Lease, l)
				}
			}
			if _, ok := top.Node("echo-1"); !ok {
				return errors.New("not in topology")
			}
			if _, ok := top.Route(4); !ok {
				return errors.New("route not in topology")
			}
			return nil
		}
	}

	// Revoked behind its back.
	old := reg.LeaseID()
	if _, err := cli.Revoke(ctxT(t), old); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, backOn(old))
	if n := reg.Reregistrations(); n < 1 {
		t.Fatalf("Reregistrations = %d", n)
	}

	// The node key deleted by hand (etcdctl del): back within one TTL.
	old = reg.LeaseID()
	if _, err := cli.Delete(ctxT(t), "/zcluster/nodes/echo/echo-1"); err != nil {
		t.Fatal(err)
	}
	checkFor(t, cfg.TTL, 10*time.Millisecond, backOn(old))

	// A route key deleted by hand: back within one TTL too.
	old = reg.LeaseID()
	if _, err := cli.Delete(ctxT(t), "/zcluster/routes/4/echo-1"); err != nil {
		t.Fatal(err)
	}
	checkFor(t, cfg.TTL, 10*time.Millisecond, backOn(old))
	if n := reg.Reregistrations(); n < 3 {
		t.Fatalf("Reregistrations = %d, want 3", n)
	}
}

func TestWatchCompactedWhilePaused(t *testing.T) {
	srv := startEtcd(t)
	cli := newClient(t, srv.Endpoints())
	cfg := testConfig(t, cli, 3*time.Second)
	top := watch(t, cfg)

	a := register(t, cfg, testNode("im-1", "im", Route{MsgID: 2, Name: "send"}))
	register(t, cfg, testNode("im-2", "im", Route{MsgID: 2, Name: "send"}))
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if got := ids(top.All()); got != "im/im-1,im/im-2" {
			return fmt.Errorf("all = %s", got)
		}
		return nil
	})
	var (
		mu             sync.Mutex
		removed, added []string
	)
	cancel := top.Subscribe(func(ev Event) {
		mu.Lock()
		defer mu.Unlock()
		switch ev.Type {
		case NodeRemoved:
			removed = append(removed, ev.Node.ID)
		case NodeAdded:
			added = append(added, ev.Node.ID)
		}
	})
	defer cancel()

	top.pause()
	before := top.Revision()
	if err := a.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	register(t, cfg, testNode("echo-1", "echo", Route{MsgID: 4, Name: "echo"}))
	register(t, cfg, testNode("gate-1", GateGroup, Route{MsgID: 1, Name: "login", Anonymous: true}))
	resp, err := cli.Get(ctxT(t), "/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctxT(t), resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	if top.Revision() != before {
		t.Fatal("paused view moved")
	}
	if _, ok := top.Node("im-1"); !ok {
		t.Fatal("paused view lost im-1")
	}
	top.resume()

	fresh := watch(t, cfg)
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if top.Revision() < resp.Header.Revision {
			return fmt.Errorf("revision %d < %d", top.Revision(), resp.Header.Revision)
		}
		if !reflect.DeepEqual(top.All(), fresh.All()) {
			return fmt.Errorf("all = %s, want %s", ids(top.All()), ids(fresh.All()))
		}
		if !reflect.DeepEqual(top.Routes(), fresh.Routes()) {
			return fmt.Errorf("routes = %+v, want %+v", top.Routes(), fresh.Routes())
		}
		return nil
	})
	// Subscribers are called after the view is swapped: poll for them too.
	checkFor(t, 2*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if fmt.Sprint(removed) != "[im-1]" || fmt.Sprint(added) != "[echo-1 gate-1]" {
			return fmt.Errorf("removed %v added %v", removed, added)
		}
		return nil
	})
}

func TestManyLeaseLossesNoLeak(t *testing.T) {
	srv := startEtcd(t)
	cli := newClient(t, srv.Endpoints())
	cfg := testConfig(t, cli, 2*time.Second)
	// Warm up the client's lease and watch machinery, then take the baseline.
	warm := register(t, cfg, testNode("warm", "im"))
	if err := warm.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	base := runtime.NumGoroutine()

	losses := 100
	if testing.Short() {
		losses = 20
	}
	reg, err := Register(ctxT(t), cfg, testNode("im-1", "im", Route{MsgID: 2, Name: "send"}))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := range losses {
		old := reg.LeaseID()
		if _, err := cli.Revoke(ctxT(t), old); err != nil {
			t.Fatalf("revoke %d: %v", i, err)
		}
		checkFor(t, 5*time.Second, 2*time.Millisecond, func() error {
			if reg.LeaseID() == old || !reg.Registered() {
				return fmt.Errorf("loss %d not repaired", i)
			}
			return nil
		})
	}
	t.Logf("%d lease losses repaired in %v", losses, time.Since(start))
	if n := reg.Reregistrations(); n != int64(losses) {
		t.Errorf("Reregistrations = %d, want %d", n, losses)
	}
	if err := reg.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	const slack = 5
	checkFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		if n := runtime.NumGoroutine(); n > base+slack {
			return fmt.Errorf("%d goroutines, baseline %d", n, base)
		}
		return nil
	})
	t.Logf("goroutines: baseline %d, after Close %d", base, runtime.NumGoroutine())
	resp, err := cli.Get(ctxT(t), "/zcluster/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("keys left after Close: %d %v", resp.Count, err)
	}
	leases, err := cli.Leases(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(leases.Leases) != 0 {
		t.Errorf("%d leases left", len(leases.Leases))
	}
}

func TestEtcdRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("stops etcd for longer than the TTL")
	}
	srv := startEtcd(t)
	cli := newClient(t, srv.Endpoints())
	cfg := testConfig(t, cli, 2*time.Second)
	top := watch(t, cfg)
	reg := register(t, cfg, testNode("im-1", "im", Route{MsgID: 2, Name: "send"}))
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, ok := top.Node("im-1"); !ok {
			return errors.New("not in topology")
		}
		return nil
	})

	srv.Stop()
	time.Sleep(cfg.TTL + time.Second)
	// The last view stays in use while etcd is away.
	if _, ok := top.Node("im-1"); !ok {
		t.Fatal("view dropped im-1 while etcd was down")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// A node that joins after the restart shows up too (once the client has
	// reconnected: its dial backoff grew while etcd was away).
	checkFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		_, err := cli.Get(ctxT(t), "/probe")
		return err
	})
	register(t, cfg, testNode("echo-1", "echo", Route{MsgID: 4, Name: "echo"}))
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		// Either the old lease was caught alive (etcd renews leases on
		// restart) or the node registered again under a new one.
		if !reg.Registered() {
			return fmt.Errorf("reregistrations %d registered %v", reg.Reregistrations(), reg.Registered())
		}
		resp, err := cli.Get(ctxT(t), "/zcluster/nodes/im/im-1")
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 1 || resp.Kvs[0].Lease != int64(reg.LeaseID()) {
			return errors.New("node key not on the current lease")
		}
		if got := ids(top.All()); got != "echo/echo-1,im/im-1" {
			return fmt.Errorf("topology %s", got)
		}
		return nil
	})
	fresh := watch(t, cfg)
	if !reflect.DeepEqual(top.All(), fresh.All()) || !reflect.DeepEqual(top.Routes(), fresh.Routes()) {
		t.Fatalf("topology %s, fresh %s", ids(top.All()), ids(fresh.All()))
	}
}

// logCapture records log lines for assertions.
type logCapture struct {
	mu    sync.Mutex
	lines []string
}

func (c *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (c *logCapture) Handle(_ context.Context, r slog.Record) error {
	line := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		return true
	})
	c.mu.Lock()
	c.lines = append(c.lines, line)
	c.mu.Unlock()
	return nil
}
func (c *logCapture) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *logCapture) WithGroup(string) slog.Handler      { return c }

func (c *logCapture) count(substr string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, l := range c.lines {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

func TestReregisterBlockedByConflictKeepsRetrying(t *testing.T) {
	srv := startEtcd(t)
	cli := newClient(t, srv.Endpoints())
	cfg := testConfig(t, cli, 2*time.Second)
	logs := &logCapture{}
	cfg.Logger = slog.New(logs)
	reg := register(t, cfg, testNode("im-1", "im", Route{MsgID: 3, Name: "chain"}))

	// While im-1 is away, another group grabs msgID 3.
	g, err := cli.Grant(ctxT(t), 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctxT(t), "/zcluster/routes/3/echo-9", `{"group":"echo","name":"steal"}`, clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	old := reg.LeaseID()
	if _, err := cli.Revoke(ctxT(t), old); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 3*time.Second, 10*time.Millisecond, func() error {
		if n := logs.count(`ERROR registry: re-register failed`); n == 0 {
			return errors.New("conflict not logged at error level")
		}
		return nil
	})
	if logs.count(`route conflict: msgID 3 is served by group "echo" (node echo-9)`) == 0 {
		t.Error("error line does not explain the conflict")
	}
	time.Sleep(500 * time.Millisecond) // a few more attempts
	if reg.Registered() {
		t.Fatal("registered despite the conflict")
	}
	// The intruder leaves: im-1 gets its route back by itself.
	if _, err := cli.Revoke(ctxT(t), g.ID); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !reg.Registered() || reg.LeaseID() == old {
			return errors.New("not re-registered")
		}
		return nil
	})
}

// TestConcurrentRegistrationsOfOneGroup: nodes of one group starting at the
// same moment all register, although their transactions race on the same
// route prefixes.
func TestConcurrentRegistrationsOfOneGroup(t *testing.T) {
	srv := startEtcd(t)
	cli := newClient(t, srv.Endpoints())
	cfg := testConfig(t, cli, 3*time.Second)
	const n = 8
	type result struct {
		reg *Registration
		err error
	}
	results := make(chan result, n)
	for i := 0; i < n; i++ {
		go func(i int) {
			r, err := Register(ctxT(t), cfg, testNode(fmt.Sprintf("im-%d", i), "im",
				Route{MsgID: 2, Name: "send"}, Route{MsgID: 3, Name: "chain"}, Route{MsgID: 4, Name: "echo"}))
			results <- result{r, err}
		}(i)
	}
	for i := 0; i < n; i++ {
		res := <-results
		if res.err != nil {
			t.Errorf("register: %v", res.err)
			continue
		}
		_ = res.reg.Close(ctxT(t))
	}
}
