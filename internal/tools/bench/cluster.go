package bench

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/inbox"
	"github.com/zcluster/zcluster/zctest"
)

// Msgs of the room scenario's backend group (not part of the chat demo).
const (
	roomGroup             = "room"
	msgRoomJoin    uint32 = 20 // payload: room name; answer 20 {"ok":true}
	msgRoomSay     uint32 = 21 // payload: pushed as is to the room "bench" (121)
	msgRoomSaid    uint32 = 121
	benchRoomName         = "bench"
	benchClusterTT        = 5 * time.Second
)

// cluster is a whole zcluster in this process (zctest): embedded etcd, a
// Redis (redis-server child, else miniredis), gates and im backends running
// the chat app, and for the room scenario one backend of group room.
type cluster struct {
	*zctest.Cluster
	redisKind string
}

func (c *cluster) gateAddrs() []string {
	gs := c.Gates()
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = g.ClientAddr()
	}
	return out
}

// wsURLs returns the gates' WebSocket endpoints (ws-echo).
func (c *cluster) wsURLs() []string {
	gs := c.Gates()
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = g.WSURL()
	}
	return out
}

// kcpAddrs returns the gates' KCP listeners (kcp-echo).
func (c *cluster) kcpAddrs() []string {
	gs := c.Gates()
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = g.KCPAddr()
	}
	return out
}

// relaySent returns the envelopes every backend has sent so far.
func (c *cluster) relaySent() uint64 {
	var n uint64
	for _, b := range c.Backends() {
		n += b.RelayStats().EnvelopesSent
	}
	return n
}

// setupRoom registers the room scenario's handlers.
func setupRoom(b *backend.Backend) error {
	b.Handle(msgRoomJoin, "bench-room-join", func(c *backend.Context) error {
		if err := c.Join(string(c.Payload())); err != nil {
			return err
		}
		return c.Reply(msgRoomJoin, []byte(`{"ok":true}`))
	})
	b.Handle(msgRoomSay, "bench-room-say", func(c *backend.Context) error {
		return c.PushRoom(benchRoomName, msgRoomSaid, c.Payload())
	})
	return nil
}

// startCluster starts etcd, Redis, nGates gates and nBackends backends of
// group im (plus one of group room when rooms), and waits until every gate
// routes msgID 4 and every node sees every other.
func startCluster(ctx context.Context, nGates, nBackends int, rooms bool, log *slog.Logger) (*cluster, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	zc, err := zctest.New(ctx, zctest.Config{
		Gate:    func(g *gate.Gate) error { chat.SetupGate(g); return nil },
		Backend: chat.SetupBackend,
		Gates:   nGates,
		TTL:     benchClusterTT,
		Logger:  log,
		GateConfig: func(c *gate.Config) {
			c.SendQueue = 16 << 20
			c.WSListen = "127.0.0.1:0"  // ws-echo
			c.KCPListen = "127.0.0.1:0" // kcp-echo
			// The load connections are anonymous and idle ones hold
			// still: the client port limits are not what is measured.
			c.LoginTimeout, c.IdleTimeout = -1, -1
		},
	})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	c := &cluster{Cluster: zc, redisKind: "redis-server"}
	if kind := zc.RedisKind(); kind != "" {
		c.redisKind = kind
	}
	for i := range nBackends {
		if _, err := zc.StartBackend(ctx, fmt.Sprintf("im-%d", i+1), chat.GroupIM); err != nil {
			_ = zc.Close()
			return nil, fmt.Errorf("bench: %w", err)
		}
	}
	if rooms {
		if _, err := zc.StartBackend(ctx, "room-1", roomGroup, zctest.WithoutApp(), zctest.BackendSetup(setupRoom)); err != nil {
			_ = zc.Close()
			return nil, fmt.Errorf("bench: %w", err)
		}
	}
	if err := c.waitReady(ctx); err != nil {
		_ = zc.Close()
		return nil, err
	}
	return c, nil
}

func (c *cluster) waitReady(ctx context.Context) error {
	if err := c.WaitReady(ctx, 15*time.Second); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		ready := true
		for _, g := range c.Gates() {
			if _, ok := g.Topology().Route(chat.MsgEcho); !ok {
				ready = false
			}
		}
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: cluster not ready: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (c *cluster) close() { _ = c.Close() }

// inboxStats sums the backends' inbox counters (reliable appends).
func (c *cluster) inboxStats() inbox.Stats {
	var n inbox.Stats
	for _, b := range c.Backends() {
		st := b.InboxStats()
		n.RedisCalls += st.RedisCalls
		n.Appends += st.Appends
		n.Scripts += st.Scripts
	}
	return n
}
