package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
	"github.com/zcluster/zcluster/internal/testonly/testkit/chatkit"
	"github.com/zcluster/zcluster/internal/tools/zclient"
)

// tagEcho answers msgID 4 with "<node id>|<payload>" so a test can see which
// node served each request.
func tagEcho(b *backend.Backend) {
	b.Handle(chat.MsgEcho, "echo", func(c *backend.Context) error {
		return c.Reply(chat.MsgEcho, append([]byte(c.NodeID()+"|"), c.Payload()...))
	}, backend.Anonymous())
}

// traffic keeps every connection sending one echo request at a time and
// records what came back: a reply, an error frame, or nothing.
type traffic struct {
	mu         sync.Mutex
	answered   int
	errors     []string
	unanswered int
	byNode     map[string]int
	wg         sync.WaitGroup
	cancel     context.CancelFunc
}

func startTraffic(t *testing.T, conns []*zclient.Conn) *traffic {
	return startTrafficMsg(t, conns, chat.MsgEcho)
}

// startTrafficMsg is startTraffic with another echoing msgID (e.g. the
// chain-echo, 3, which needs logged-in connections).
func startTrafficMsg(t *testing.T, conns []*zclient.Conn, msgID uint32) *traffic {
	ctx, cancel := context.WithCancel(context.Background())
	tr := &traffic{byNode: map[string]int{}, cancel: cancel}
	for i, conn := range conns {
		tr.wg.Add(1)
		go func(i int, conn *zclient.Conn) {
			defer tr.wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				want := fmt.Sprintf("c%d-%d", i, n)
				if err := conn.Send(msgID, []byte(want)); err != nil {
					tr.record(func() { tr.unanswered++ })
					return
				}
				tr.await(conn, msgID, want)
				time.Sleep(2 * time.Millisecond)
			}
		}(i, conn)
	}
	return tr
}

func (tr *traffic) record(fn func()) {
	tr.mu.Lock()
	fn()
	tr.mu.Unlock()
}

// await waits for the answer to one request; the gate must answer every
// request within its request timeout (3s here), so 8s of silence is a loss.
func (tr *traffic) await(conn *zclient.Conn, msgID uint32, want string) {
	timeout := time.After(8 * time.Second)
	for {
		select {
		case f, ok := <-conn.Frames():
			if !ok {
				tr.record(func() { tr.unanswered++ })
				return
			}
			switch f.MsgID {
			case msgID:
				node, body, _ := strings.Cut(string(f.Payload), "|")
				if body == "" {
					body, node = node, "?"
				}
				if body != want {
					continue // a late answer to an earlier request
				}
				tr.record(func() { tr.answered++; tr.byNode[node]++ })
				return
			case gate.MsgError:
				var e errorFrame
				_ = json.Unmarshal(f.Payload, &e)
				tr.record(func() { tr.errors = append(tr.errors, e.Error) })
				return
			}
		case <-timeout:
			tr.record(func() { tr.unanswered++ })
			return
		}
	}
}

func (tr *traffic) stop() {
	tr.cancel()
	tr.wg.Wait()
}

func (tr *traffic) snapshot() (answered int, errs []string, unanswered int, byNode map[string]int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	byNode = map[string]int{}
	for k, v := range tr.byNode {
		byNode[k] = v
	}
	return tr.answered, append([]string(nil), tr.errors...), tr.unanswered, byNode
}

func dialMany(t *testing.T, g *gate.Gate, n int) []*zclient.Conn {
	conns := make([]*zclient.Conn, n)
	run := time.Now().UnixNano()
	for i := range conns {
		conns[i] = dial(t, g)
		// Logged in, as long-lived clients are: the gate closes connections
		// that have not logged in after --login-timeout (10s).
		chatkit.Login(t, conns[i], fmt.Sprintf("load-%d-%d", run, i))
	}
	return conns
}

// TestBackendJoinsUnderTraffic: a backend added while traffic flows gets
// sessions as soon as the gates' watch delivers its registration.
func TestBackendJoinsUnderTraffic(t *testing.T) {
	c := newCluster(t)
	g := c.startGate("gate-1")
	c.startBackend("im-1", chat.GroupIM, tagEcho)
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)

	tr := startTraffic(t, dialMany(t, g, 32))
	defer tr.stop()
	time.Sleep(300 * time.Millisecond)

	c.startBackend("im-2", chat.GroupIM, tagEcho)
	c.waitGroupSize(chat.GroupIM, 2, 5*time.Second)
	// The gate routes by its topology; once the watch event is in, sessions
	// that hash to im-2 go there with their next message.
	testkit.CheckFor(t, 2*time.Second, 20*time.Millisecond, func() error {
		if _, _, _, byNode := tr.snapshot(); byNode["im-2"] == 0 {
			return fmt.Errorf("im-2 served nothing yet: %v", byNode)
		}
		return nil
	})
	tr.stop()
	answered, errs, unanswered, byNode := tr.snapshot()
	t.Logf("answered %d, by node %v", answered, byNode)
	if len(errs) > 0 || unanswered > 0 {
		t.Fatalf("%s, unanswered %d", summarize(errs), unanswered)
	}
}

// TestBackendCleanStop: a backend stopped cleanly gets nothing after its
// lease is revoked, and clients see no error.
func TestBackendCleanStop(t *testing.T) {
	c := newCluster(t)
	g := c.startGate("gate-1")
	c.startBackend("im-1", chat.GroupIM, tagEcho)
	im2 := c.startBackend("im-2", chat.GroupIM, tagEcho)
	c.waitGroupSize(chat.GroupIM, 2, 5*time.Second)

	tr := startTraffic(t, dialMany(t, g, 32))
	defer tr.stop()
	testkit.CheckFor(t, 3*time.Second, 20*time.Millisecond, func() error {
		if _, _, _, byNode := tr.snapshot(); byNode["im-2"] < 20 {
			return fmt.Errorf("im-2 has served %d", byNode["im-2"])
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := im2.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	_, _, _, before := tr.snapshot()
	time.Sleep(500 * time.Millisecond)
	tr.stop()
	answered, errs, unanswered, after := tr.snapshot()
	t.Logf("answered %d, by node %v", answered, after)
	if after["im-2"] != before["im-2"] {
		t.Errorf("im-2 served %d requests after it stopped", after["im-2"]-before["im-2"])
	}
	if len(errs) > 0 || unanswered > 0 {
		t.Fatalf("clients saw %s, unanswered %d", summarize(errs), unanswered)
	}
}

// TestBackendVanishes: a backend process killed with SIGKILL (no lease
// revoke) leaves the topology after its TTL; requests routed to it in
// between get an error frame, never silence, and then go to the survivor.
func TestBackendVanishes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the zcluster binary")
	}
	bin := zclusterBinary(t)
	c := newCluster(t)
	g := c.startGate("gate-1")
	c.startBackend("im-1", chat.GroupIM)

	relay := testkit.FreeAddr(t)
	cmd := exec.Command(bin, "backend", "--id", "im-2", "--group", "im", "--app", "chat",
		"--relay", relay, "--etcd", strings.Join(c.etcd.Endpoints(), ","), "--redis", c.redisAddr,
		"--secret", string(c.secret), "--ttl", testTTL.String(), "--session-ttl", testSessionTTL.String())
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	c.waitGroupSize(chat.GroupIM, 2, 15*time.Second)

	tr := startTraffic(t, dialMany(t, g, 100))
	defer tr.stop()
	time.Sleep(500 * time.Millisecond)

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	c.waitGroupSize(chat.GroupIM, 1, testTTL+3*time.Second)
	gone := time.Since(killed)
	answeredAtRemoval, _, _, _ := tr.snapshot()
	// After removal every request is served by im-1.
	time.Sleep(500 * time.Millisecond)
	tr.stop()
	answered, errs, unanswered, _ := tr.snapshot()
	t.Logf("im-2 out of the topology %v after SIGKILL (TTL %v); answered %d (%d after removal), error frames %d",
		gone.Round(time.Millisecond), testTTL, answered, answered-answeredAtRemoval, len(errs))
	if unanswered > 0 {
		t.Fatalf("%d requests were never answered", unanswered)
	}
	for _, e := range errs {
		if !strings.Contains(e, "im-2") {
			t.Errorf("unexpected error frame %q", e)
		}
	}
	if answered-answeredAtRemoval == 0 {
		t.Fatal("no request served after im-2 left the topology")
	}
}

// summarize folds error texts into "N error frames: count x text, ...".
func summarize(errs []string) string {
	if len(errs) == 0 {
		return "no error frames"
	}
	counts := map[string]int{}
	var order []string
	for _, e := range errs {
		if counts[e] == 0 {
			order = append(order, e)
		}
		counts[e]++
	}
	parts := make([]string, 0, len(order))
	for _, e := range order {
		parts = append(parts, fmt.Sprintf("%d x %q", counts[e], e))
	}
	return fmt.Sprintf("%d error frames: %s", len(errs), strings.Join(parts, ", "))
}
