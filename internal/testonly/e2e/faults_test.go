package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/zcluster/zcluster/internal/testonly/testkit/chatkit"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
	"github.com/zcluster/zcluster/internal/tools/zclient"
)

// The fault matrix of RELIABILITY.md. Each test states what it did and what
// it observed with t.Logf; the figures in RELIABILITY.md come from these
// lines (go test -v -run 'Fault' ./internal/testonly/e2e/).

func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("fault scenario: runs for several TTLs")
	}
}

func sendChat(t *testing.T, from *zclient.Conn, to, text string) chat.SendReply {
	t.Helper()
	_ = from.Send(chat.MsgSend, chatkit.MustJSON(t, chat.SendRequest{To: to, Text: text}))
	var r chat.SendReply
	if err := json.Unmarshal(chatkit.Expect(t, from, chat.MsgSend).Payload, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestFaultEtcdOutage: etcd stopped for 3x TTL, then restarted with its
// data. Traffic keeps flowing on the last known topology, no client is
// dropped, every node registers again on its own.
func TestFaultEtcdOutage(t *testing.T) {
	skipShort(t)
	c := newCluster(t)
	g1, g2 := c.startGate("gate-1"), c.startGate("gate-2")
	// The chat app (a msgID cannot be registered twice, so no tagEcho).
	c.startBackend("im-1", chat.GroupIM)
	c.startBackend("im-2", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 2, 5*time.Second)
	alice, bob := dial(t, g1), dial(t, g2)
	chatkit.Login(t, alice, "alice")
	chatkit.Login(t, bob, "bob")

	tr := startTraffic(t, dialMany(t, g1, 20))
	defer tr.stop()
	time.Sleep(300 * time.Millisecond)

	c.etcd.Stop()
	stopped := time.Now()
	before, _, _, _ := tr.snapshot()
	time.Sleep(3 * testTTL)
	during, _, _, _ := tr.snapshot()
	if during <= before {
		t.Fatalf("no traffic served during the etcd outage (%d -> %d)", before, during)
	}
	// Cross-gate delivery works on the last known topology too.
	if r := sendChat(t, alice, "bob", "during outage"); !r.OK {
		t.Fatalf("send during outage: %+v", r)
	}
	chatkit.Expect(t, bob, chat.MsgDelivered)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.etcd.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	testkit.CheckFor(t, 5*testTTL, 50*time.Millisecond, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		for id, g := range c.gates {
			if !g.Registered() {
				return fmt.Errorf("%s not registered", id)
			}
		}
		for id, b := range c.backends {
			if !b.Registered() {
				return fmt.Errorf("%s not registered", id)
			}
		}
		return nil
	})
	reregistered := time.Since(restarted)
	c.waitGroupSize(chat.GroupIM, 2, 5*testTTL)
	c.waitGroupSize("gate", 2, 5*testTTL)
	converged := time.Since(restarted)
	if r := sendChat(t, bob, "alice", "after outage"); !r.OK {
		t.Fatalf("send after outage: %+v", r)
	}
	chatkit.Expect(t, alice, chat.MsgDelivered)
	tr.stop()
	answered, errs, unanswered, _ := tr.snapshot()
	t.Logf("etcd down %v; served %d requests during the outage; all nodes registered %v after restart, topology converged after %v; answered %d, error frames %d, unanswered %d",
		restarted.Sub(stopped).Round(time.Millisecond), during-before, reregistered.Round(time.Millisecond), converged.Round(time.Millisecond), answered, len(errs), unanswered)
	if len(errs) > 0 || unanswered > 0 {
		t.Fatalf("%s, unanswered %d", summarize(errs), unanswered)
	}
	select {
	case <-alice.Done():
		t.Fatal("a client was dropped")
	case <-bob.Done():
		t.Fatal("a client was dropped")
	default:
	}
}

// TestFaultEtcdRestartedEmpty: etcd loses its data, and a node's key is
// deleted by hand: the keys are back within one TTL.
func TestFaultEtcdRestartedEmpty(t *testing.T) {
	skipShort(t)
	c := newCluster(t)
	c.startGate("gate-1")
	c.startBackend("im-1", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)
	cli, _ := c.clients()
	countNodes := func() (int64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r, err := cli.Get(ctx, "/zcluster/nodes/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return 0, err
		}
		return r.Count, nil
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.etcd.Stop()
	entries, _ := os.ReadDir(c.etcd.Dir())
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(c.etcd.Dir(), e.Name()))
	}
	if err := c.etcd.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	testkit.CheckFor(t, testTTL+2*time.Second, 50*time.Millisecond, func() error {
		if n, err := countNodes(); err != nil || n != 2 {
			return fmt.Errorf("%d node keys (%v)", n, err)
		}
		return nil
	})
	backEmpty := time.Since(restarted)
	c.waitGroupSize(chat.GroupIM, 1, 2*testTTL)

	if _, err := cli.Delete(ctx, "/zcluster/nodes/im/im-1"); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	testkit.CheckFor(t, testTTL+time.Second, 20*time.Millisecond, func() error {
		r, err := cli.Get(ctx, "/zcluster/nodes/im/im-1")
		if err != nil || len(r.Kvs) != 1 {
			return fmt.Errorf("im-1 key not back (%v)", err)
		}
		return nil
	})
	t.Logf("etcd restarted empty: keys back %v after restart; `etcdctl del` of a node key: back after %v (TTL %v)",
		backEmpty.Round(time.Millisecond), time.Since(deleted).Round(time.Millisecond), testTTL)
}

// TestFaultRollingRestart: every backend restarted with SIGTERM, one after
// the other, under load: no error frame, no unanswered request.
func TestFaultRollingRestart(t *testing.T) {
	skipShort(t)
	c := newCluster(t)
	g := c.startGate("gate-1")
	ids := []struct{ id, group string }{{"im-1", "im"}, {"im-2", "im"}, {"echo-1", "echo"}, {"echo-2", "echo"}}
	procs := map[string]*proc{}
	for _, n := range ids {
		procs[n.id] = startProc(t, c.nodeArgs("backend", n.id, "--group", n.group, "--relay", testkit.FreeAddr(t))...)
	}
	c.waitGroupSize(chat.GroupIM, 2, 20*time.Second)
	c.waitGroupSize(chat.GroupEcho, 2, 20*time.Second)

	echoConns := dialMany(t, g, 50)
	chainConns := make([]*zclient.Conn, 10)
	for i := range chainConns {
		chainConns[i] = dial(t, g)
		chatkit.Login(t, chainConns[i], fmt.Sprintf("roller-%d", i))
	}
	tr := startTraffic(t, echoConns)
	defer tr.stop()
	trChain := startTrafficMsg(t, chainConns, chat.MsgChainEcho)
	defer trChain.stop()
	time.Sleep(300 * time.Millisecond)

	start := time.Now()
	for _, n := range ids {
		p := procs[n.id]
		p.signal(syscall.SIGTERM)
		if !p.wait(20 * time.Second) {
			t.Fatalf("%s did not exit after SIGTERM", n.id)
		}
		c.waitGroupSize(n.group, 1, 10*time.Second)
		p.start()
		c.waitGroupSize(n.group, 2, 20*time.Second)
		time.Sleep(200 * time.Millisecond)
	}
	took := time.Since(start)
	tr.stop()
	trChain.stop()
	a1, e1, u1, _ := tr.snapshot()
	a2, e2, u2, _ := trChain.snapshot()
	t.Logf("rolled 4 backends in %v under load: echo answered %d (errors %d, unanswered %d), chain-echo answered %d (errors %d, unanswered %d)",
		took.Round(time.Millisecond), a1, len(e1), u1, a2, len(e2), u2)
	if len(e1)+len(e2) > 0 || u1+u2 > 0 {
		t.Fatalf("echo: %s; chain-echo: %s; unanswered %d", summarize(e1), summarize(e2), u1+u2)
	}
}

// TestFaultGateKilled: a gate killed with SIGKILL leaves no Redis record
// behind for longer than the session TTL, and pushes to its users answer
// "offline" at once.
func TestFaultGateKilled(t *testing.T) {
	skipShort(t)
	c := newCluster(t)
	g1 := c.startGate("gate-1")
	c.startBackend("im-1", chat.GroupIM)
	clientAddr := testkit.FreeAddr(t)
	p := startProc(t, c.nodeArgs("gate", "gate-2", "--listen", clientAddr, "--relay", testkit.FreeAddr(t))...)
	c.waitGroupSize("gate", 2, 20*time.Second)
	testkit.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, b := range c.backends {
			if len(b.Topology().Nodes("gate")) != 2 {
				return fmt.Errorf("backend does not see gate-2 yet")
			}
		}
		return nil
	})

	alice := dial(t, g1)
	chatkit.Login(t, alice, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bob, err := zclient.Dial(ctx, clientAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	lb := chatkit.Login(t, bob, "bob")
	if r := sendChat(t, alice, "bob", "hello"); !r.OK {
		t.Fatalf("send before the kill: %+v", r)
	}

	p.signal(syscall.SIGKILL)
	p.wait(5 * time.Second)
	killed := time.Now()
	// A push written in the instant before this node has read the dead
	// gate's EOF is lost with the gate (pushes are not acknowledged); from
	// then on every send must answer offline.
	var r chat.SendReply
	for {
		r = sendChat(t, alice, "bob", "are you there")
		if !r.OK || time.Since(killed) > 2*time.Second {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	offlineIn := time.Since(killed)
	if r.OK || r.Error != "bob is offline" {
		t.Fatalf("send to a user of a dead gate 2s after the kill: %+v", r)
	}
	_, rdb := c.clients()
	testkit.CheckFor(t, testSessionTTL+2*time.Second, 100*time.Millisecond, func() error {
		n, err := rdb.Exists(context.Background(), "zc:s:"+lb.Session, "zc:u:bob").Result()
		if err != nil || n != 0 {
			return fmt.Errorf("%d records of bob left (%v)", n, err)
		}
		return nil
	})
	t.Logf("gate SIGKILL: push to its user answered offline in %v; its Redis records gone %v after the kill (session TTL %v)",
		offlineIn.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond), testSessionTTL)
}

// TestFaultGateTerminated: a gate stopped with SIGTERM tells its clients
// (msgID 9 with a reason) before closing, removes their Redis records, and
// takes no new client meanwhile.
func TestFaultGateTerminated(t *testing.T) {
	skipShort(t)
	c := newCluster(t)
	c.startBackend("im-1", chat.GroupIM)
	clientAddr := testkit.FreeAddr(t)
	p := startProc(t, c.nodeArgs("gate", "gate-2", "--listen", clientAddr, "--relay", testkit.FreeAddr(t))...)
	_, rdb := c.clients()
	var conns []*zclient.Conn
	var keys []string
	testkit.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		conn, err := net.DialTimeout("tcp", clientAddr, time.Second)
		if err != nil {
			return err
		}
		return conn.Close()
	})
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := zclient.Dial(ctx, clientAddr)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		user := fmt.Sprintf("u%d", i)
		keys = append(keys, "zc:s:"+chatkit.Login(t, conn, user).Session, "zc:u:"+user)
		conns = append(conns, conn)
	}
	if n, _ := rdb.Exists(context.Background(), keys...).Result(); n != int64(len(keys)) {
		t.Fatalf("%d of %d records before the stop", n, len(keys))
	}

	p.signal(syscall.SIGTERM)
	stopped := time.Now()
	for i, conn := range conns {
		var k struct {
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal(chatkit.Expect(t, conn, gate.MsgKick).Payload, &k); err != nil || k.Reason == "" {
			t.Fatalf("client %d: no reason before close (%v)", i, err)
		}
		select {
		case <-conn.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("client %d not closed", i)
		}
	}
	// The gate is shutting down (its clients were told): a new connection
	// now is refused, or closed without being served.
	late := ""
	if conn, err := zclient.Dial(context.Background(), clientAddr); err == nil {
		_ = conn.Send(chat.MsgLogin, []byte("late"))
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		if f, _, err := conn.Expect(ctx, chat.MsgLogin); err == nil {
			late = string(f.Payload)
		}
		cancel()
		_ = conn.Close()
	}
	if !p.wait(15 * time.Second) {
		t.Fatal("gate did not exit after SIGTERM")
	}
	exited := time.Since(stopped)
	if n, _ := rdb.Exists(context.Background(), keys...).Result(); n != 0 {
		t.Fatalf("%d records left after a clean stop", n)
	}
	if late != "" {
		t.Fatalf("a connection made during shutdown was served: %s", late)
	}
	t.Logf("gate SIGTERM: %d clients told the reason and closed, records removed, exit after %v", len(conns), exited.Round(time.Millisecond))
}

// TestFaultRedisFlushAndRestart: after FLUSHALL and after a Redis restart,
// every live session and user binding is written again within one refresh
// period (session TTL / 3).
func TestFaultRedisFlushAndRestart(t *testing.T) {
	skipShort(t)
	c, srv := newClusterRedis(t)
	g1, g2 := c.startGate("gate-1"), c.startGate("gate-2")
	c.startBackend("im-1", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)
	alice, bob := dial(t, g1), dial(t, g2)
	keys := []string{"zc:s:" + chatkit.Login(t, alice, "alice").Session, "zc:u:alice", "zc:s:" + chatkit.Login(t, bob, "bob").Session, "zc:u:bob"}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	allBack := func() error {
		n, err := rdb.Exists(context.Background(), keys...).Result()
		if err != nil || n != int64(len(keys)) {
			return fmt.Errorf("%d of %d records (%v)", n, len(keys), err)
		}
		return nil
	}
	period := testSessionTTL / 3

	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	flushed := time.Now()
	testkit.CheckFor(t, period+2*time.Second, 50*time.Millisecond, allBack)
	afterFlush := time.Since(flushed)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	testkit.CheckFor(t, period+2*time.Second, 50*time.Millisecond, allBack)
	afterRestart := time.Since(restarted)
	if r := sendChat(t, alice, "bob", "still here"); !r.OK {
		t.Fatalf("send after the restart: %+v", r)
	}
	chatkit.Expect(t, bob, chat.MsgDelivered)
	t.Logf("records rewritten %v after FLUSHALL and %v after a Redis restart (refresh period %v)",
		afterFlush.Round(time.Millisecond), afterRestart.Round(time.Millisecond), period)
}

// TestFaultRedisDown: with Redis down, traffic inside a gate keeps working,
// what needs Redis answers an error frame, and everything recovers when
// Redis returns.
func TestFaultRedisDown(t *testing.T) {
	skipShort(t)
	c, srv := newClusterRedis(t)
	g1 := c.startGate("gate-1")
	c.startBackend("im-1", chat.GroupIM)
	c.startBackend("echo-1", chat.GroupEcho)
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)
	c.waitGroupSize(chat.GroupEcho, 1, 5*time.Second)
	alice, carol := dial(t, g1), dial(t, g1)
	chatkit.Login(t, alice, "alice")
	lc := chatkit.Login(t, carol, "carol")
	tr := startTraffic(t, dialMany(t, g1, 10))
	defer tr.stop()

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	before, _, _, _ := tr.snapshot()
	time.Sleep(500 * time.Millisecond)
	// Echo through the backend needs no Redis.
	_ = alice.Send(chat.MsgChainEcho, []byte("no redis needed"))
	if f := chatkit.Expect(t, alice, chat.MsgChainEcho); string(f.Payload) != "no redis needed" {
		t.Fatalf("chain-echo = %q", f.Payload)
	}
	// A login needs Redis: an error frame, and the connection stays.
	dave := dial(t, g1)
	_ = dave.Send(chat.MsgLogin, []byte("dave"))
	if e := decodeError(t, chatkit.Expect(t, dave, gate.MsgError)); e.MsgID != chat.MsgLogin {
		t.Fatalf("login while Redis is down: %+v", e)
	}
	// Finding a user needs Redis: an error frame.
	_ = alice.Send(chat.MsgSend, chatkit.MustJSON(t, chat.SendRequest{To: "carol", Text: "x"}))
	if e := decodeError(t, chatkit.Expect(t, alice, gate.MsgError)); e.MsgID != chat.MsgSend {
		t.Fatalf("send while Redis is down: %+v", e)
	}
	during, _, _, _ := tr.snapshot()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	upAt := time.Now()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	testkit.CheckFor(t, testSessionTTL/3+2*time.Second, 50*time.Millisecond, func() error {
		n, err := rdb.Exists(context.Background(), "zc:s:"+lc.Session, "zc:u:carol").Result()
		if err != nil || n != 2 {
			return fmt.Errorf("%d records (%v)", n, err)
		}
		return nil
	})
	rewritten := time.Since(upAt)
	testkit.CheckFor(t, 5*time.Second, 100*time.Millisecond, func() error {
		_ = dave.Send(chat.MsgLogin, []byte("dave"))
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		f, err := dave.Recv(ctx)
		if err != nil || f.MsgID != chat.MsgLogin || !strings.Contains(string(f.Payload), `"ok":true`) {
			return fmt.Errorf("login after recovery: %v %q", err, f.Payload)
		}
		return nil
	})
	if r := sendChat(t, alice, "carol", "back"); !r.OK {
		t.Fatalf("send after recovery: %+v", r)
	}
	chatkit.Expect(t, carol, chat.MsgDelivered)
	tr.stop()
	_, errs, unanswered, _ := tr.snapshot()
	t.Logf("Redis down %v: %d echo requests served meanwhile, login and send answered error frames; records rewritten %v after Redis returned; echo errors %d, unanswered %d",
		upAt.Sub(down).Round(time.Millisecond), during-before, rewritten.Round(time.Millisecond), len(errs), unanswered)
	if len(errs) > 0 || unanswered > 0 {
		t.Fatalf("echo traffic: %s, unanswered %d", summarize(errs), unanswered)
	}
}
