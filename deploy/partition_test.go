package deploy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zcluster/zcluster/examples/chat"
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

// servedSince returns the echo requests the im container handled since a
// previous count.
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

var _ = strconv.Itoa
