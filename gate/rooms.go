package gate

import (
	"context"
	"sync"
	"time"

	"github.com/zcluster/zcluster/relay"
)

// roomTable is the gate's side of rooms: which of its own clients are in
// which room, so that a room push, which reaches the gate once, is fanned
// out here to every local member (goim's comet does the same). The
// cluster-wide view is the room directory in Redis, which backends keep.
// The zero value is ready to use.
type roomTable struct {
	mu     sync.RWMutex
	rooms  map[string]map[*client]struct{}
	byConn map[*client]map[string]struct{}
}

// join puts c in room; it reports whether c was not in it.
func (t *roomTable) join(room string, c *client) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rooms == nil {
		t.rooms = make(map[string]map[*client]struct{})
		t.byConn = make(map[*client]map[string]struct{})
	}
	members := t.rooms[room]
	if members == nil {
		members = make(map[*client]struct{})
		t.rooms[room] = members
	}
	if _, in := members[c]; in {
		return false
	}
	members[c] = struct{}{}
	mine := t.byConn[c]
	if mine == nil {
		mine = make(map[string]struct{})
		t.byConn[c] = mine
	}
	mine[room] = struct{}{}
	return true
}

// leave takes c out of room.
func (t *roomTable) leave(room string, c *client) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.leaveLocked(room, c)
}

func (t *roomTable) leaveLocked(room string, c *client) {
	if members := t.rooms[room]; members != nil {
		delete(members, c)
		if len(members) == 0 {
			delete(t.rooms, room)
		}
	}
	if mine := t.byConn[c]; mine != nil {
		delete(mine, room)
		if len(mine) == 0 {
			delete(t.byConn, c)
		}
	}
}

// leaveAll takes c out of every room and returns them.
func (t *roomTable) leaveAll(c *client) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for room := range t.byConn[c] {
		out = append(out, room)
	}
	for _, room := range out {
		t.leaveLocked(room, c)
	}
	return out
}

// members calls fn for every local member of room, under the read lock.
func (t *roomTable) members(room string, fn func(*client)) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for c := range t.rooms[room] {
		fn(c)
	}
}

// count returns the number of local members of room.
func (t *roomTable) count(room string) int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.rooms[room])
}

// RoomMembers returns how many of this gate's clients are in room.
func (g *Gate) RoomMembers(room string) int { return g.rooms.count(room) }

// onExtraEnvelope handles the envelope kinds of rooms; it reports whether
// env was one.
func (g *Gate) onExtraEnvelope(env *relay.Envelope) bool {
	switch env.Kind {
	case relay.KindRoomPush:
		g.rooms.members(string(env.User), func(c *client) {
			if !c.closing.Load() {
				g.deliver(c, env.MsgID, env.Payload)
			}
		})
	case relay.KindRoomJoin:
		room := string(env.User)
		c := g.clientBytes(env.Session)
		if c == nil || c.closing.Load() {
			// It closed before the join arrived: undo the directory entry.
			sid := string(env.Session)
			g.goLoop(func() { g.leaveDirectory(sid, []string{room}) })
			return true
		}
		g.rooms.join(room, c)
		// A close that ran between the lookup and the join has already
		// emptied its rooms: take it out again.
		if g.client(c.sid) != c {
			g.rooms.leave(room, c)
			g.goLoop(func() { g.leaveDirectory(c.sid, []string{room}) })
		}
	case relay.KindRoomLeave:
		if c := g.clientBytes(env.Session); c != nil {
			g.rooms.leave(string(env.User), c)
		}
	default:
		return false
	}
	return true
}

// memberships returns every (room, client) pair of the table.
func (t *roomTable) memberships() (rooms []string, clients []*client) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for room, members := range t.rooms {
		for c := range members {
			rooms = append(rooms, room)
			clients = append(clients, c)
		}
	}
	return rooms, clients
}

// has reports whether c is in room.
func (t *roomTable) has(room string, c *client) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	_, in := t.rooms[room][c]
	return in
}

// reclaimRooms writes every local room membership back to the room
// directory, for a gate that registered again after losing its lease: the
// backends may have taken it for dead (away for longer than SessionTTL/3)
// and purged its members, while its clients stayed connected. Joining is
// idempotent, so members still listed cost one script each and nothing
// else. A member that leaves meanwhile is taken out again: a leave updates
// the local table before the directory, so either the check below sees it
// gone, or its directory leave comes after this join.
func (g *Gate) reclaimRooms() {
	rooms, clients := g.rooms.memberships()
	if len(rooms) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(g.ctx, g.cfg.SessionTTL)
	defer cancel()
	restored, failed := 0, 0
	for i, r := range rooms {
		c := clients[i]
		joined, err := g.node.Rooms.Join(ctx, r, c.sid, g.cfg.ID)
		if err != nil {
			failed++
			continue
		}
		if !joined {
			continue
		}
		restored++
		if !g.rooms.has(r, c) || c.closing.Load() {
			if _, err := g.node.Rooms.Leave(ctx, r, c.sid); err != nil {
				g.log.Warn("room leave failed; the membership stays until this gate is gone", "room", r, "session", c.sid, "cause", err)
			}
		}
	}
	switch {
	case failed > 0:
		g.log.Warn("room memberships not all re-claimed after registering again", "memberships", len(rooms), "restored", restored, "failed", failed)
	case restored > 0:
		g.log.Info("room memberships re-claimed after registering again", "memberships", len(rooms), "restored", restored)
	}
}

// roomOpTimeout bounds the directory updates of a closing session.
const roomOpTimeout = 3 * time.Second

// leaveDirectory takes sid out of rooms in the room directory.
func (g *Gate) leaveDirectory(sid string, rooms []string) {
	ctx, cancel := context.WithTimeout(context.Background(), roomOpTimeout)
	defer cancel()
	for _, r := range rooms {
		if _, err := g.node.Rooms.Leave(ctx, r, sid); err != nil {
			g.log.Warn("room leave failed; the membership stays until this gate is gone", "room", r, "session", sid, "cause", err)
		}
	}
}

// sessionClosed runs when a client's connection has closed, whatever the
// cause: it leaves the client's rooms and tells every backend that handled
// one of its messages (their OnSessionClosed hooks run).
func (g *Gate) sessionClosed(c *client) {
	rooms := g.rooms.leaveAll(c)
	nodes := c.handledBy()
	if len(rooms) == 0 && len(nodes) == 0 {
		return
	}
	_, userB := c.identity()
	g.goLoop(func() {
		if len(rooms) > 0 {
			g.leaveDirectory(c.sid, rooms)
		}
		ctx, cancel := context.WithTimeout(context.Background(), roomOpTimeout)
		defer cancel()
		for _, n := range nodes {
			env := relay.Envelope{Kind: relay.KindSessionClosed, Session: c.sidB, User: userB}
			if err := g.node.Relay.Send(ctx, n, &env); err != nil {
				g.log.Debug("session-closed notice not sent", "session", c.sid, "to", n, "cause", err)
			}
		}
	})
}

// noteHandler records that node handled a message of the client, so that
// it hears when the session closes.
func (c *client) noteHandler(node string) {
	if last := c.lastHandler.Load(); last != nil && *last == node {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	last := node // allocated here only, not on the fast path
	c.lastHandler.Store(&last)
	for _, n := range c.handlers {
		if n == node {
			return
		}
	}
	c.handlers = append(c.handlers, node)
}

// handledBy returns the nodes that handled the client's messages.
func (c *client) handledBy() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.handlers...)
}

// onlineLoop publishes the gate's logged-in count for OnlineCount, every
// SessionTTL/3, until the gate stops.
func (g *Gate) onlineLoop() {
	tick := time.NewTicker(g.node.Sessions.RefreshInterval())
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(g.ctx, roomOpTimeout)
		if err := g.node.Rooms.SetOnline(ctx, g.cfg.ID, g.LoggedIn()); err != nil && g.ctx.Err() == nil {
			g.log.Debug("online count not published", "cause", err)
		}
		cancel()
		select {
		case <-g.ctx.Done():
			return
		case <-tick.C:
		}
	}
}
