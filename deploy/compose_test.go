package deploy

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zcluster/zcluster/examples/chat"
)

// TestComposeOffline runs the compose demo as a user would, on a machine
// with no registry: it builds every image offline, brings
// docker-compose.yml up with the offline override, and checks what the
// user sees: every container healthy; an unmodified zinx client logged in
// on gate 1's published port chats with a user on gate 2's; `--scale
// im=4` gives four distinct im nodes in `zcluster top -o json` and client
// traffic reaches all four; scaling back to one im during a client load
// (compose stops three containers with SIGTERM and stop_grace_period)
// gives no error frame; `down -v` leaves nothing behind.
func TestComposeOffline(t *testing.T) {
	requireDocker(t)
	start := time.Now()
	buildImages(t)
	s := newStack(t)

	t0 := time.Now()
	s.mustCompose("up", "-d")
	took := s.waitHealthy(3 * time.Minute)
	t.Logf("up -d: all healthy %v after up returned (%v in all)", took.Round(time.Second), time.Since(t0).Round(time.Second))
	ps := s.mustCompose("ps")
	t.Logf("docker-compose ps:\n%s", ps)
	// The image holds no zinx.json: zcluster itself keeps zinx's
	// config-file complaint out of every node's output.
	if logs := s.mustCompose("logs", "--no-color", "gate1", "im"); strings.Contains(logs, "zinx.json") || strings.Contains(logs, "zconf.go") {
		t.Errorf("a node printed zinx's config complaint:\n%s", logs)
	}

	// A stock zinx client on each gate's published port; they chat.
	g1, g2 := s.gateAddr("gate1"), s.gateAddr("gate2")
	alice, bob := newZinxClient(t, g1), newZinxClient(t, g2)
	alice.send(t, chat.MsgLogin, []byte("alice"))
	if f, ok := alice.next(chat.MsgLogin, 10*time.Second); !ok || !strings.Contains(string(f.Payload), `"ok":true`) {
		t.Fatalf("alice login on gate1 (%s): %d %s", g1, f.MsgID, f.Payload)
	}
	bob.send(t, chat.MsgLogin, []byte("bob"))
	if f, ok := bob.next(chat.MsgLogin, 10*time.Second); !ok || !strings.Contains(string(f.Payload), `"ok":true`) {
		t.Fatalf("bob login on gate2 (%s): %d %s", g2, f.MsgID, f.Payload)
	}
	alice.send(t, chat.MsgSend, []byte(`{"to":"bob","text":"hi through docker"}`))
	if f, ok := alice.next(chat.MsgSend, 10*time.Second); !ok || !strings.Contains(string(f.Payload), `"ok":true`) {
		t.Fatalf("alice's send: %d %s", f.MsgID, f.Payload)
	}
	if f, ok := bob.next(chat.MsgDelivered, 10*time.Second); !ok || !strings.Contains(string(f.Payload), "hi through docker") {
		t.Fatalf("bob got %d %s", f.MsgID, f.Payload)
	}

	// Four im nodes, each with its own id, each serving clients.
	t1 := time.Now()
	s.mustCompose("up", "-d", "--no-recreate", "--scale", "im=4")
	s.waitHealthy(3 * time.Minute)
	ims := s.containers("im")
	if len(ims) != 4 {
		t.Fatalf("--scale im=4: %d im containers", len(ims))
	}
	var imNodes []string
	deadline := time.Now().Add(time.Minute)
	for {
		snap, err := s.top()
		if err == nil {
			imNodes = nodesOf(snap, chat.GroupIM)
			if len(imNodes) == 4 {
				break
			}
			err = fmt.Errorf("im nodes %v", imNodes)
		}
		if time.Now().After(deadline) {
			t.Fatalf("top after --scale im=4: %v", err)
		}
		time.Sleep(time.Second)
	}
	for _, id := range ims {
		if !containsPrefix(imNodes, "im-"+hostname(id)+"-") {
			t.Errorf("container %.12s is not among the im nodes %v", id, imNodes)
		}
	}
	t.Logf("--scale im=4: 4 distinct im nodes %v in %v", imNodes, time.Since(t1).Round(time.Second))

	l := startLoad(t, []string{g1, g2}, 32, "load", 20*time.Millisecond)
	l.waitAnswers(t, 2000, time.Minute)
	for _, id := range ims {
		n, err := s.handled(s.ip(id), chat.MsgEcho)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Errorf("im container %.12s handled no echo request", id)
		}
		t.Logf("im %.12s handled %d echo requests", id, n)
	}
	if t.Failed() {
		t.FailNow()
	}

	// Back to one im during the load: compose stops three with SIGTERM
	// and waits up to stop_grace_period; their sessions move to the one
	// left, and no client sees an error frame.
	t2 := time.Now()
	s.mustCompose("up", "-d", "--no-recreate", "--scale", "im=1")
	stopTook := time.Since(t2)
	l.waitAnswers(t, 1000, time.Minute)
	l.stop()
	sum := summarize(l.replies(), t2)
	t.Logf("scale im=4 -> 1 under load (32 clients): compose took %v; from then on %v; whole load %v",
		stopTook.Round(100*time.Millisecond), sum, summarize(l.replies(), time.Time{}))
	if sum.errFrames != 0 || sum.silent != 0 || sum.ok == 0 {
		t.Fatalf("stopping 3 of 4 im during the load: %v", sum)
	}
	if n := len(s.containers("im")); n != 1 {
		t.Fatalf("%d im containers after --scale im=1", n)
	}

	// down -v leaves no container, network or volume.
	s.mustCompose("down", "-v", "--remove-orphans", "-t", "20")
	if left := s.leftovers(); len(left) != 0 {
		t.Fatalf("after down -v: %v", left)
	}
	t.Logf("compose test: %v in all, %v of it building images", time.Since(start).Round(time.Second), imagesTook.Round(time.Second))
}

// handled reads how many requests for msgID the backend at ip handled
// (its /metrics, from inside the compose network).
func (s *stack) handled(ip string, msgID uint32) (int, error) {
	body, err := s.httpGet(ip, 9100, "/metrics")
	if err != nil {
		return 0, err
	}
	total := 0
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, "zcluster_backend_messages_total{") || !strings.Contains(line, `msg_id="`+strconv.Itoa(int(msgID))+`"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics line %q: %v", line, err)
		}
		total += int(v)
	}
	return total, nil
}

func containsPrefix(l []string, prefix string) bool {
	for _, s := range l {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}
