package clusternode

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/zcluster/zcluster/internal/runtime/waitgroup"
	"github.com/zcluster/zcluster/registry"
	"github.com/zcluster/zcluster/relay"
	"github.com/zcluster/zcluster/room"
)

// JoinRoom puts session sid, owned by gate (looked up when ""), in room
// and tells the gate, which from then on fans the room's pushes out to it.
func (n *Node) JoinRoom(ctx context.Context, roomName, sid, gate string) error {
	if err := room.CheckName(roomName); err != nil {
		return err
	}
	if gate == "" {
		g, err := n.ownerGate(ctx, sid)
		if err != nil {
			return err
		}
		gate = g
	}
	if _, err := n.Rooms.Join(ctx, roomName, sid, gate); err != nil {
		return err
	}
	// Sent even when the directory already had it: the gate's own view
	// is what delivers, and joining twice is harmless there.
	return n.sendToGate(ctx, gate, &relay.Envelope{Kind: relay.KindRoomJoin, Session: []byte(sid), User: []byte(roomName)})
}

// LeaveRoom takes session sid out of room, in the directory and on its
// gate (looked up when "").
func (n *Node) LeaveRoom(ctx context.Context, roomName, sid, gate string) error {
	if _, err := n.Rooms.Leave(ctx, roomName, sid); err != nil {
		return err
	}
	if gate == "" {
		g, err := n.ownerGate(ctx, sid)
		if err != nil {
			return nil // no live gate holds it: nothing to tell
		}
		gate = g
	}
	err := n.sendToGate(ctx, gate, &relay.Envelope{Kind: relay.KindRoomLeave, Session: []byte(sid), User: []byte(roomName)})
	if err != nil {
		n.log.Debug("room leave not told to gate", "room", roomName, "gate", gate, "cause", err)
	}
	return nil
}

// PushRoom sends one frame to every member of room: one envelope to each
// live gate that holds members (one Redis read for the gate list), which
// delivers it to its members. It returns the first error after trying
// every gate.
func (n *Node) PushRoom(ctx context.Context, roomName string, msgID uint32, payload []byte) error {
	gates, err := n.Rooms.Gates(ctx, roomName)
	if err != nil {
		return err
	}
	var first error
	for _, g := range gates {
		if _, ok := n.Topology.Node(g.Gate); !ok {
			continue // gone; its members are purged (OnGateGone)
		}
		err := n.Relay.Send(ctx, g.Gate, &relay.Envelope{Kind: relay.KindRoomPush, MsgID: msgID, User: []byte(roomName), Payload: payload})
		if err != nil && first == nil {
			first = fmt.Errorf("room %s: push to %s: %w", roomName, g.Gate, err)
		}
	}
	return first
}

// RoomCount returns how many sessions are in room, on live gates.
func (n *Node) RoomCount(ctx context.Context, roomName string) (int, error) {
	gates, err := n.Rooms.Gates(ctx, roomName)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, g := range gates {
		if _, ok := n.Topology.Node(g.Gate); ok {
			total += g.Members
		}
	}
	return total, nil
}

// RoomMembers returns the sessions in room that are on live gates,
// session -> gate.
func (n *Node) RoomMembers(ctx context.Context, roomName string) (map[string]string, error) {
	m, err := n.Rooms.Members(ctx, roomName)
	if err != nil {
		return nil, err
	}
	for sid, g := range m {
		if _, ok := n.Topology.Node(g); !ok {
			delete(m, sid)
		}
	}
	return m, nil
}

// goneWatch calls functions when a gate has left the topology and not come
// back within a grace period: the gate is dead, and what it held (sessions,
// room memberships) is gone with it.
type goneWatch struct {
	mu      sync.Mutex
	fns     []func(gate string)
	timers  map[string]*time.Timer
	cancel  func()
	closed  bool
	running sync.WaitGroup // callbacks running now (Add under mu, before closed)
}

// OnGateGone calls fn (in its own goroutine) for every gate that leaves
// the topology and does not come back within SessionTTL/3: a gate alive
// and connected refreshes its sessions that often, so by then it is dead
// (or cut off long enough that its sessions are as good as dead).
func (n *Node) OnGateGone(fn func(gate string)) {
	n.gone.mu.Lock()
	defer n.gone.mu.Unlock()
	if n.gone.closed {
		return
	}
	n.gone.fns = append(n.gone.fns, fn)
	if n.gone.cancel != nil {
		return
	}
	n.gone.timers = make(map[string]*time.Timer)
	grace := max(n.cfg.SessionTTL/3, dropGrace)
	n.gone.cancel = n.Topology.Subscribe(func(ev registry.Event) {
		if ev.Node.Group != registry.GateGroup || ev.Node.ID == n.cfg.ID {
			return
		}
		id := ev.Node.ID
		n.gone.mu.Lock()
		defer n.gone.mu.Unlock()
		if t, ok := n.gone.timers[id]; ok {
			t.Stop()
			delete(n.gone.timers, id)
		}
		if ev.Type != registry.NodeRemoved || n.gone.closed {
			return
		}
		n.gone.timers[id] = time.AfterFunc(grace, func() {
			n.gone.mu.Lock()
			_, still := n.gone.timers[id]
			delete(n.gone.timers, id)
			fns := n.gone.fns
			closed := n.gone.closed
			if !still || closed {
				n.gone.mu.Unlock()
				return
			}
			n.gone.running.Add(1)
			n.gone.mu.Unlock()
			defer n.gone.running.Done()
			if _, back := n.Topology.Node(id); back {
				return
			}
			n.log.Info("gate gone", "node", n.cfg.ID, "gate", id, "after", grace)
			for _, fn := range fns {
				fn(id)
			}
		})
	})
}

// stopGone stops the gate-gone watch and waits (bounded by ctx) for the
// functions already running; none is called after it.
func (n *Node) stopGone(ctx context.Context) {
	n.gone.mu.Lock()
	n.gone.closed = true
	if n.gone.cancel != nil {
		n.gone.cancel()
	}
	for id, t := range n.gone.timers {
		t.Stop()
		delete(n.gone.timers, id)
	}
	n.gone.mu.Unlock()
	if err := waitgroup.Wait(ctx, &n.gone.running); err != nil {
		n.log.Warn("stopping while gate-gone work still runs", "node", n.cfg.ID, "cause", err)
	}
}

// OnlineCount sums the logged-in counts the live gates published, and
// drops those of gates that are gone.
func (n *Node) OnlineCount(ctx context.Context) (int, error) {
	all, err := n.Rooms.Online(ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	var gone []string
	for g, c := range all {
		if _, ok := n.Topology.Node(g); ok {
			total += c
		} else {
			gone = append(gone, g)
		}
	}
	if len(gone) > 0 {
		_ = n.Rooms.ForgetOnline(ctx, gone...)
	}
	return total, nil
}
