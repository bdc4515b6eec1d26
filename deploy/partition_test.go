package deploy

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/internal/tools/zclient"
)

// partitionOverride shortens the leases so that expiries show within the
// test: every node's etcd lease TTL is 5s (default 10s) and Redis session
// records live 6s (default 30s), refreshed every 2s.
const partitionOverride = `
x-fast: &fast
  ZC_TTL: 5s
  ZC_SESSION_TTL: 6s
services:
  gate1:
    environment: *fast
  gate2:
    environment: *fast
  im:
    environment: *fast
  echo:
    environment: *fast
`

const (
	partitionTTL = 5 * time.Second
	// requestTimeout is the gate's bound on a forwarded request
	// (gate.Config.RequestTimeout, default 10s).
	requestTimeout = 10 * time.Second
)

// pid is a container's main process, for nsenter into its namespaces.
func (s *stack) pid(id string) string {
	s.t.Helper()
	return strings.TrimSpace(mustDocker(s.t, "inspect", "--format", "{{.State.Pid}}", id))
}

// iptables runs the host's iptables inside a container's network namespace
// (the zcluster image has no shell and no iptables of its own).
func (s *stack) iptables(id string, args ...string) {
	s.t.Helper()
	cmd := append([]string{"nsenter", "-t", s.pid(id), "-n", "iptables", "-w"}, args...)
	if out, err := runCmd(cmd...); err != nil {
		s.t.Fatalf("%v: %s", err, out)
	}
}

// cut drops every packet between the container and each peer address,
// both ways, with no reset: a silent partition, as a dead switch port or
// a firewall makes it.
func (s *stack) cut(id string, peers ...string) {
	s.t.Helper()
	for _, p := range peers {
		s.iptables(id, "-I", "INPUT", "-s", p, "-j", "DROP")
		s.iptables(id, "-I", "OUTPUT", "-d", p, "-j", "DROP")
	}
}

// heal removes every rule cut added in the container.
func (s *stack) heal(id string) {
	s.t.Helper()
	s.iptables(id, "-F", "INPUT")
	s.iptables(id, "-F", "OUTPUT")
}

// imNodes maps each im container to its node id in etcd (via top).
func (s *stack) imNodes(t *testing.T, want int) map[string]string {
	t.Helper()
	ids := s.containers("im")
	if len(ids) != want {
		t.Fatalf("%d im containers, want %d", len(ids), want)
	}
	var last error
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		snap, err := s.top()
		if err != nil {
			last = err
			time.Sleep(time.Second)
			continue
		}
		nodes := nodesOf(snap, chat.GroupIM)
		m := map[string]string{}
		for _, c := range ids {
			for _, n := range nodes {
				if strings.HasPrefix(n, "im-"+hostname(c)+"-") {
					m[c] = n
				}
			}
		}
		if len(m) == want && len(nodes) == want {
			return m
		}
		last = fmt.Errorf("im nodes %v for containers %v", nodes, ids)
		time.Sleep(time.Second)
	}
	t.Fatalf("im nodes: %v", last)
	return nil
}

// imCount is how many im nodes etcd lists and how many of them have id.
func (s *stack) imCount(id string) (all, withID int, err error) {
	snap, err := s.top()
	if err != nil {
		return 0, 0, err
	}
	for _, n := range nodesOf(snap, chat.GroupIM) {
		all++
		if n == id {
			withID++
		}
	}
	return all, withID, nil
}

// waitFor polls cond every 200ms until it holds, and returns how long that
// took, or fails after timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, error)) time.Duration {
	t.Helper()
	start := time.Now()
	var last error
	for {
		ok, err := cond()
		if ok {
			return time.Since(start)
		}
		if err != nil {
			last = err
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v (last error: %v)", what, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// badAfter is the time, since t0, at which the last request sent after t0
// failed (an error frame or no answer) or took longer than slow; 0 when
// none did.
func badAfter(rs []reply, t0 time.Time, slow time.Duration) (last time.Duration, n int) {
	for _, r := range rs {
		if r.sent.Before(t0) {
			continue
		}
		if !r.ok || r.at.Sub(r.sent) > slow {
			n++
			if d := r.at.Sub(t0); d > last {
				last = d
			}
		}
	}
	return last, n
}

// echoCount is how many echo requests the im container has handled.
func (s *stack) echoCount(t *testing.T, id string) int {
	t.Helper()
	n, err := s.handled(s.ip(id), chat.MsgEcho)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPartitions runs the single-etcd partitions on one compose project
// (2 gates, 2 im, 1 echo, 5s leases), healing after each: a backend cut
// off from the gates, a gate cut off from Redis, a backend cut off from
// etcd, a paused backend. Figures go to the log (-v) and RELIABILITY.md.
func TestPartitions(t *testing.T) {
	requireDocker(t)
	buildImages(t)
	s := newStack(t, partitionOverride)
	s.mustCompose("up", "-d", "--scale", "im=2")
	s.waitHealthy(3 * time.Minute)
	g1, g2 := s.gateAddr("gate1"), s.gateAddr("gate2")
	gateIPs := []string{s.ip(s.container("gate1")), s.ip(s.container("gate2"))}

	t.Run("backend-from-gates", func(t *testing.T) {
		nodes := s.imNodes(t, 2)
		ims := slices.Sorted(func(yield func(string) bool) {
			for c := range nodes {
				if !yield(c) {
					return
				}
			}
		})
		a := ims[0]
		l := startLoad(t, []string{g1, g2}, 16, "cutgates", 20*time.Millisecond)
		l.waitAnswers(t, 500, time.Minute)
		before := s.echoCount(t, a)
		if before == 0 {
			t.Fatalf("im %.12s served nothing before the cut", a)
		}
		t0 := time.Now()
		s.cut(a, gateIPs...)
		t.Logf("cut im %s (%.12s) off from both gates", nodes[a], a)
		time.Sleep(15 * time.Second)
		// Its lease lived all along: still listed.
		if all, mine, err := s.imCount(nodes[a]); err != nil || mine != 1 || all != 2 {
			t.Errorf("during the cut: %d im nodes, %d with id %s (%v); want it still listed", all, mine, nodes[a], err)
		}
		during := summarize(l.replies(), t0)
		last, nbad := badAfter(l.replies(), t0, time.Second)
		t.Logf("cut 15s: %v; last failed or >1s request ended %v after the cut (%d such)", during, last.Round(10*time.Millisecond), nbad)
		logFailedClients(t, l.replies(), t0)
		t1 := time.Now()
		s.heal(a)
		mid := s.echoCount(t, a)
		back := waitFor(t, "healed im serves again", 30*time.Second, func() (bool, error) {
			return s.echoCount(t, a) > mid, nil
		})
		l.waitAnswers(t, 200, time.Minute)
		l.stop()
		after := summarize(l.replies(), t1)
		t.Logf("healed: im %.12s served again %v after the heal; after the heal %v", a, back.Round(100*time.Millisecond), after)
		if during.silent != 0 || after.silent != 0 {
			t.Errorf("requests with no answer at all (silence): during %v, after %v", during, after)
		}
		if last > 5*time.Second {
			t.Errorf("gates still failed or stalled requests %v after the cut (bound 5s; target 2s)", last)
		}
		if after.errFrames != 0 {
			t.Errorf("error frames after the heal: %v", after)
		}
	})
	t.Run("gate-from-redis", func(t *testing.T) { testGateFromRedis(t, s, g1, g2) })
	t.Run("node-from-etcd", func(t *testing.T) { testNodeFromEtcd(t, s, g1, g2) })
	t.Run("pause-backend", func(t *testing.T) { testPauseBackend(t, s, g1, g2) })
}

// redisGet reads a key with redis-cli inside the Redis container.
func (s *stack) redisGet(key string) (string, error) {
	out, err := s.compose(30*time.Second, "exec", "-T", "redis", "redis-cli", "--raw", "get", key)
	return strings.TrimSpace(out), err
}

// dialLogin connects a client to addr and logs user in.
func dialLogin(t *testing.T, addr, user string) *zclient.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := zclient.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := login(ctx, c, user); err != nil {
		t.Fatal(err)
	}
	return c
}

// ask sends one request and returns the first frame answering it (msgID
// or an error frame), skipping others, and how long it took.
func ask(c *zclient.Conn, msgID uint32, payload []byte, within time.Duration) (zclient.Frame, time.Duration, error) {
	start := time.Now()
	if err := c.Send(msgID, payload); err != nil {
		return zclient.Frame{}, 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		f, err := c.Recv(ctx)
		if err != nil {
			return f, time.Since(start), fmt.Errorf("no answer to msgID %d within %v: %w", msgID, within, err)
		}
		if f.MsgID == msgID || f.MsgID == chat.MsgError {
			return f, time.Since(start), nil
		}
	}
}

// expectFrame waits for a frame with msgID containing substr.
func expectFrame(c *zclient.Conn, msgID uint32, substr string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		f, err := c.Recv(ctx)
		if err != nil {
			return fmt.Errorf("no msgID %d with %q within %v: %w", msgID, substr, within, err)
		}
		if f.MsgID == msgID && strings.Contains(string(f.Payload), substr) {
			return nil
		}
	}
}

// testGateFromRedis cuts gate1 off from Redis (not from etcd): logins on
// it answer error frames, echo keeps working, sends answer (never
// silence), and once healed the gate rewrites the session records that
// expired meanwhile.
func testGateFromRedis(t *testing.T, s *stack, g1, g2 string) {
	gate1 := s.container("gate1")
	redisIP := s.ip(s.container("redis"))
	alice := dialLogin(t, g1, "alice")
	bob := dialLogin(t, g2, "bob")
	if v, err := s.redisGet("zc:u:alice"); err != nil || v == "" {
		t.Fatalf("alice's record before the cut: %q %v", v, err)
	}
	t0 := time.Now()
	s.cut(gate1, redisIP)
	t.Logf("cut gate1 off from Redis")
	defer s.heal(gate1)

	// A login needs Redis: an error frame, not silence.
	carol := dialOnly(t, g1)
	f, took, err := ask(carol, chat.MsgLogin, []byte("carol"), 30*time.Second)
	if err != nil {
		t.Fatalf("login during the cut: %v", err)
	}
	if f.MsgID != chat.MsgError {
		t.Errorf("login during the cut: msgID %d %s, want an error frame", f.MsgID, f.Payload)
	}
	t.Logf("login on the cut gate: error frame after %v: %s", took.Round(10*time.Millisecond), f.Payload)
	// Echo needs no Redis.
	for i := range 3 {
		f, took, err := ask(alice, chat.MsgEcho, []byte("still here"), 10*time.Second)
		if err != nil || f.MsgID != chat.MsgEcho {
			t.Fatalf("echo %d during the cut: %d %s %v", i, f.MsgID, f.Payload, err)
		}
		if i == 0 {
			t.Logf("echo on the cut gate: answered in %v", took.Round(time.Millisecond))
		}
	}
	// A send from the cut gate: an answer of some kind, never silence.
	f, took, err = ask(alice, chat.MsgSend, []byte(`{"to":"bob","text":"during the cut"}`), 30*time.Second)
	if err != nil {
		t.Fatalf("send during the cut: %v", err)
	}
	t.Logf("send from the cut gate: msgID %d after %v: %s", f.MsgID, took.Round(10*time.Millisecond), f.Payload)
	// alice's records expire in Redis while her gate cannot refresh them.
	waitFor(t, "alice's record expires during the cut", 30*time.Second, func() (bool, error) {
		v, err := s.redisGet("zc:u:alice")
		return err == nil && v == "", err
	})
	t.Logf("alice's record expired %v after the cut (session TTL 6s)", time.Since(t0).Round(100*time.Millisecond))
	f, _, err = ask(bob, chat.MsgSend, []byte(`{"to":"alice","text":"are you there"}`), 30*time.Second)
	if err != nil {
		t.Fatalf("bob's send during the cut: %v", err)
	}
	t.Logf("bob -> alice during the cut (record expired): msgID %d %s", f.MsgID, f.Payload)

	s.heal(gate1)
	back := waitFor(t, "alice's record rewritten after the heal", 30*time.Second, func() (bool, error) {
		v, err := s.redisGet("zc:u:alice")
		return err == nil && v != "", err
	})
	t.Logf("healed: alice's record rewritten %v after the heal", back.Round(100*time.Millisecond))
	f, _, err = ask(bob, chat.MsgSend, []byte(`{"to":"alice","text":"after the heal"}`), 10*time.Second)
	if err != nil || !strings.Contains(string(f.Payload), `"ok":true`) {
		t.Fatalf("bob -> alice after the heal: %d %s %v", f.MsgID, f.Payload, err)
	}
	if err := expectFrame(alice, chat.MsgDelivered, "after the heal", 10*time.Second); err != nil {
		t.Fatalf("alice after the heal: %v", err)
	}
	dave := dialOnly(t, g1)
	if f, _, err := ask(dave, chat.MsgLogin, []byte("dave"), 10*time.Second); err != nil || f.MsgID != chat.MsgLogin {
		t.Fatalf("login after the heal: %d %s %v", f.MsgID, f.Payload, err)
	}
}

// dialOnly connects a client without logging in.
func dialOnly(t *testing.T, addr string) *zclient.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := zclient.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// testNodeFromEtcd cuts one im off from etcd only: it keeps serving on its
// last topology until its lease expires and the gates drop it, its
// sessions move with no error, and after the heal it registers again
// under the same id, once.
func testNodeFromEtcd(t *testing.T, s *stack, g1, g2 string) {
	nodes := s.imNodes(t, 2)
	var a string
	for c := range nodes {
		if a == "" || c < a {
			a = c
		}
	}
	id := nodes[a]
	etcdIP := s.ip(s.container("etcd"))
	l := startLoad(t, []string{g1, g2}, 16, "cutetcd", 20*time.Millisecond)
	l.waitAnswers(t, 500, time.Minute)
	c0 := s.echoCount(t, a)
	t0 := time.Now()
	s.cut(a, etcdIP)
	defer s.heal(a)
	t.Logf("cut im %s off from etcd", id)
	gone := waitFor(t, "the cut node leaves the others' view", 30*time.Second, func() (bool, error) {
		_, mine, err := s.imCount(id)
		return err == nil && mine == 0, err
	})
	c1 := s.echoCount(t, a)
	t.Logf("removed from etcd's view %v after the cut (TTL %v); it served %d echo requests meanwhile", gone.Round(100*time.Millisecond), partitionTTL, c1-c0)
	if c1 == c0 {
		t.Errorf("the cut node served nothing before its lease expired")
	}
	time.Sleep(3 * time.Second) // its sessions run on the other node
	s.heal(a)
	back := waitFor(t, "the healed node registers again", 30*time.Second, func() (bool, error) {
		_, mine, err := s.imCount(id)
		return err == nil && mine == 1, err
	})
	t.Logf("healed: %s registered again %v after the heal (TTL %v)", id, back.Round(100*time.Millisecond), partitionTTL)
	mid := s.echoCount(t, a)
	waitFor(t, "the healed node serves again", 30*time.Second, func() (bool, error) {
		return s.echoCount(t, a) > mid, nil
	})
	l.stop()
	all, mine, err := s.imCount(id)
	if err != nil || all != 2 || mine != 1 {
		t.Errorf("after the heal: %d im nodes, %d with id %s (%v); want 2 and 1", all, mine, id, err)
	}
	sum := summarize(l.replies(), t0)
	t.Logf("load from the cut on: %v", sum)
	if sum.errFrames != 0 || sum.silent != 0 {
		t.Errorf("requests failed around an etcd partition of one node: %v", sum)
	}
	if back > partitionTTL+3*time.Second {
		t.Errorf("re-registered %v after the heal; want within one TTL (%v, +3s of polling through docker exec)", back, partitionTTL)
	}
}

// testPauseBackend freezes one im with docker pause (TCP stays open, its
// kernel still acknowledges): requests in flight to it time out at the
// gate's bound with an error frame, its lease expires and its sessions
// move; after unpause it registers again and serves.
func testPauseBackend(t *testing.T, s *stack, g1, g2 string) {
	nodes := s.imNodes(t, 2)
	var a string
	for c := range nodes {
		if a == "" || c > a {
			a = c
		}
	}
	id := nodes[a]
	l := startLoad(t, []string{g1, g2}, 16, "pause", 20*time.Millisecond)
	l.waitAnswers(t, 500, time.Minute)
	t0 := time.Now()
	mustDocker(t, "pause", a)
	t.Logf("paused im %s", id)
	gone := waitFor(t, "the paused node leaves the view", 30*time.Second, func() (bool, error) {
		_, mine, err := s.imCount(id)
		return err == nil && mine == 0, err
	})
	t.Logf("paused node removed from etcd's view %v after the pause (TTL %v)", gone.Round(100*time.Millisecond), partitionTTL)
	time.Sleep(requestTimeout) // every request it held has timed out by now
	during := summarize(l.replies(), t0)
	last, nbad := badAfter(l.replies(), t0, time.Second)
	var maxFail time.Duration
	for _, r := range l.replies() {
		if !r.sent.Before(t0) && !r.ok {
			maxFail = max(maxFail, r.at.Sub(r.sent))
		}
	}
	t.Logf("during the pause: %v; failed requests took up to %v; the last failed or >1s one ended %v after the pause (%d such)",
		during, maxFail.Round(10*time.Millisecond), last.Round(10*time.Millisecond), nbad)
	logFailedClients(t, l.replies(), t0)
	mustDocker(t, "unpause", a)
	back := waitFor(t, "the unpaused node registers again", 30*time.Second, func() (bool, error) {
		_, mine, err := s.imCount(id)
		return err == nil && mine == 1, err
	})
	t.Logf("unpaused: %s registered again %v later", id, back.Round(100*time.Millisecond))
	mid := s.echoCount(t, a)
	waitFor(t, "the unpaused node serves again", 30*time.Second, func() (bool, error) {
		return s.echoCount(t, a) > mid, nil
	})
	l.stop()
	if during.silent != 0 {
		t.Errorf("requests with no answer during the pause: %v", during)
	}
	if maxFail > requestTimeout+3*time.Second {
		t.Errorf("a request to the paused node failed only after %v (gate bound %v)", maxFail, requestTimeout)
	}
	if last > requestTimeout+partitionTTL+3*time.Second {
		t.Errorf("requests still failed or stalled %v after the pause", last)
	}
	if all, mine, err := s.imCount(id); err != nil || all != 2 || mine != 1 {
		t.Errorf("after unpause: %d im nodes, %d with id %s (%v)", all, mine, id, err)
	}
}

// logFailedClients logs, for each client with a failed request after t0,
// that failure and the next few outcomes, relative to t0.
func logFailedClients(t *testing.T, rs []reply, t0 time.Time) {
	failedAt := map[int]int{}
	for i, r := range rs {
		if !r.sent.Before(t0) && !r.ok {
			if _, seen := failedAt[r.client]; !seen {
				failedAt[r.client] = i
			}
		}
	}
	for c, i := range failedAt {
		var b strings.Builder
		n := 0
		for _, r := range rs[i:] {
			if r.client != c {
				continue
			}
			fmt.Fprintf(&b, " [sent +%v took %v ok=%v %.60s]", r.sent.Sub(t0).Round(time.Millisecond), r.at.Sub(r.sent).Round(time.Millisecond), r.ok, r.text)
			if n++; n == 4 {
				break
			}
		}
		t.Logf("client %d:%s", c, b.String())
	}
}

// runCmd runs a command and returns its combined output.
func runCmd(args ...string) (string, error) {
	out, err := execCombined(args...)
	if err != nil {
		return out, fmt.Errorf("%s: %v", strings.Join(args, " "), err)
	}
	return out, nil
}
