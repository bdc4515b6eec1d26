package scale

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/internal/devstack/embedetcd"
	"github.com/zcluster/zcluster/internal/runtime/frame"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
)

const (
	rebalanceSessions = 2000
	rebalanceGroup    = 4 // backends before one joins
)

// nodeEcho answers msgID 4 with "<node id>|<payload>", so a client sees
// which node serves its session.
func nodeEcho(b *backend.Backend) {
	b.Handle(chat.MsgEcho, "echo", func(c *backend.Context) error {
		return c.Reply(chat.MsgEcho, append([]byte(c.NodeID()+"|"), c.Payload()...))
	}, backend.Anonymous())
}

// syncConn is a client connection used one request at a time, without a
// reader goroutine.
type syncConn struct {
	nc net.Conn
	r  *bufio.Reader
}

func dialSync(ctx context.Context, addr string) (*syncConn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &syncConn{nc: nc, r: bufio.NewReaderSize(nc, 1024)}, nil
}

// request sends one frame and returns the next frame that comes back.
func (c *syncConn) request(msgID uint32, payload []byte) (uint32, []byte, error) {
	_ = c.nc.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.nc.Write(frame.Append(nil, msgID, payload)); err != nil {
		return 0, nil, err
	}
	var hdr [frame.HeaderLen]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	p := make([]byte, binary.BigEndian.Uint32(hdr[4:]))
	if _, err := io.ReadFull(c.r, p); err != nil {
		return 0, nil, err
	}
	return binary.BigEndian.Uint32(hdr[:4]), p, nil
}

// TestRebalanceOnJoin: 2,000 logged-in sessions spread over 2 gates are
// served by a group of 4 backends; a 5th joins. Rendezvous hashing moves
// only the sessions the new node wins, about 1/5 of them, all to the new
// node; no session moves between the old nodes. When the 5th leaves again,
// every session goes back to the node it had before.
func TestRebalanceOnJoin(t *testing.T) {
	needScale(t)
	raiseNoFile(t, 3*rebalanceSessions+1000)
	ctx := waitCtx(t, 2*time.Minute)
	e, err := embedetcd.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	h := newHarness(t, e.Endpoints(), singleRedis(testkit.Redis(t)))
	gates := []*gate.Gate{h.startGate("gate-1"), h.startGate("gate-2")}
	for i := range rebalanceGroup {
		h.startBackend(fmt.Sprintf("im-%d", i+1), chat.GroupIM, nodeEcho)
	}
	h.waitGroupSize(chat.GroupIM, rebalanceGroup, 10*time.Second)

	conns := make([]*syncConn, rebalanceSessions)
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				_ = c.nc.Close()
			}
		}
	})
	if err := parallel(len(conns), 32, func(i int) error {
		c, err := dialSync(ctx, gates[i%len(gates)].ListenAddr())
		if err != nil {
			return err
		}
		conns[i] = c
		id, p, err := c.request(chat.MsgLogin, fmt.Appendf(nil, "reb%04d", i))
		if err != nil {
			return err
		}
		var r chat.LoginReply
		if id != chat.MsgLogin || json.Unmarshal(p, &r) != nil || !r.OK {
			return fmt.Errorf("login %d: %d %s", i, id, p)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// placement asks every session which node serves it.
	placement := func(round string) []string {
		t.Helper()
		nodes := make([]string, len(conns))
		if err := parallel(len(conns), 32, func(i int) error {
			id, p, err := conns[i].request(chat.MsgEcho, []byte(round))
			if err != nil {
				return err
			}
			node, body, ok := strings.Cut(string(p), "|")
			if id != chat.MsgEcho || !ok || body != round {
				return fmt.Errorf("session %d: %d %q", i, id, p)
			}
			nodes[i] = node
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return nodes
	}
	count := func(nodes []string) map[string]int {
		m := map[string]int{}
		for _, n := range nodes {
			m[n]++
		}
		return m
	}

	before := placement("before")
	newNode := fmt.Sprintf("im-%d", rebalanceGroup+1)
	h.startBackend(newNode, chat.GroupIM, nodeEcho)
	h.waitGroupSize(chat.GroupIM, rebalanceGroup+1, 10*time.Second)
	after := placement("after")

	moved, elsewhere := 0, 0
	for i := range before {
		if before[i] == after[i] {
			continue
		}
		moved++
		if after[i] != newNode {
			elsewhere++
		}
	}
	share := float64(moved) / float64(len(before))
	t.Logf("group of %d -> %d: %d of %d sessions (%.1f%%) moved, all to %s; ideal 1/%d = %.1f%%; before %v, after %v",
		rebalanceGroup, rebalanceGroup+1, moved, len(before), 100*share, newNode,
		rebalanceGroup+1, 100/float64(rebalanceGroup+1), count(before), count(after))
	if elsewhere != 0 {
		t.Fatalf("%d sessions moved between old nodes", elsewhere)
	}
	// 1/5 of 2000 has a standard deviation under 1 point; 15-25% is over 5.
	if share < 0.15 || share > 0.25 {
		t.Fatalf("%.1f%% of sessions moved, want about %.0f%%", 100*share, 100/float64(rebalanceGroup+1))
	}

	h.stopBackend(newNode)
	h.waitGroupSize(chat.GroupIM, rebalanceGroup, 10*time.Second)
	back := placement("back")
	for i := range before {
		if back[i] != before[i] {
			t.Fatalf("session %d: on %s before the join, on %s after the leave", i, before[i], back[i])
		}
	}
}
