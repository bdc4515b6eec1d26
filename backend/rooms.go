package backend

import (
	"context"
	"fmt"

	"github.com/zcluster/zcluster/relay"
)

// Rooms: a room is a named set of sessions that may live on any gates. A
// push to a room crosses the relay once per gate that holds members, and
// each gate delivers it to its own members. Membership is kept in Redis
// (one hash per room: see package room) and on the members' gates; a
// session leaves all its rooms when it closes, and the members of a gate
// that died are removed once it is gone (SessionTTL/3 after its etcd
// lease expired).

// sessionGate returns the gate of the message's session when the message
// came straight from it (a client message), else "" (look it up).
func (c *Context) sessionGate() string {
	if c.t.kind == relay.KindForward {
		return c.t.source
	}
	return ""
}

// Join puts the message's session in room (1-255 bytes): from now on it
// gets the room's pushes. Joining twice is harmless. ErrOffline if the
// session has no live gate.
func (c *Context) Join(room string) error {
	return c.JoinSession(c.t.session, room)
}

// JoinSession puts any session (on any gate) in room.
func (c *Context) JoinSession(sid, room string) error {
	ctx, cancel := c.timeout()
	defer cancel()
	gate := ""
	if sid == c.t.session {
		gate = c.sessionGate()
	}
	return mapOffline(c.s.node.JoinRoom(ctx, room, sid, gate))
}

// Leave takes the message's session out of room. Leaving a room one is not
// in is harmless.
func (c *Context) Leave(room string) error {
	return c.LeaveSession(c.t.session, room)
}

// LeaveSession takes any session out of room.
func (c *Context) LeaveSession(sid, room string) error {
	ctx, cancel := c.timeout()
	defer cancel()
	gate := ""
	if sid == c.t.session {
		gate = c.sessionGate()
	}
	return mapOffline(c.s.node.LeaveRoom(ctx, room, sid, gate))
}

// PushRoom sends a frame to every member of room.
func (c *Context) PushRoom(room string, msgID uint32, payload []byte) error {
	ctx, cancel := c.timeout()
	defer cancel()
	return c.s.node.PushRoom(ctx, room, msgID, payload)
}

// RoomCount returns how many sessions are in room.
func (c *Context) RoomCount(room string) (int, error) {
	ctx, cancel := c.timeout()
	defer cancel()
	return c.s.node.RoomCount(ctx, room)
}

// RoomMembers returns the sessions in room (session id -> gate id). It
// reads the whole room: for presence lists, not for every message.
func (c *Context) RoomMembers(room string) (map[string]string, error) {
	ctx, cancel := c.timeout()
	defer cancel()
	return c.s.node.RoomMembers(ctx, room)
}

// OnlineCount returns how many sessions are logged in on the cluster's
// live gates, as the gates last published it (every SessionTTL/3).
func (c *Context) OnlineCount() (int, error) {
	ctx, cancel := c.timeout()
	defer cancel()
	return c.s.node.OnlineCount(ctx)
}

// PushRoom sends a frame to every member of room, from outside a handler
// (a timer, a game loop). ErrNotStarted before Start.
func (s *Backend) PushRoom(ctx context.Context, room string, msgID uint32, payload []byte) error {
	if s.node == nil {
		return fmt.Errorf("push to room %q: %w", room, ErrNotStarted)
	}
	return s.node.PushRoom(ctx, room, msgID, payload)
}

// RoomCount returns how many sessions are in room. ErrNotStarted before
// Start.
func (s *Backend) RoomCount(ctx context.Context, room string) (int, error) {
	if s.node == nil {
		return 0, fmt.Errorf("count room %q: %w", room, ErrNotStarted)
	}
	return s.node.RoomCount(ctx, room)
}

// OnlineCount returns how many sessions are logged in on the cluster's
// live gates (see Context.OnlineCount). ErrNotStarted before Start.
func (s *Backend) OnlineCount(ctx context.Context) (int, error) {
	if s.node == nil {
		return 0, fmt.Errorf("online count: %w", ErrNotStarted)
	}
	return s.node.OnlineCount(ctx)
}

// RoomMembers returns the sessions in room (session id -> gate id), from
// outside a handler. ErrNotStarted before Start.
func (s *Backend) RoomMembers(ctx context.Context, room string) (map[string]string, error) {
	if s.node == nil {
		return nil, fmt.Errorf("members of room %q: %w", room, ErrNotStarted)
	}
	return s.node.RoomMembers(ctx, room)
}
