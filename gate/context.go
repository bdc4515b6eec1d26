package gate

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/zcluster/zcluster/internal/runtime/clusternode"
	"github.com/zcluster/zcluster/session"
)

// redisTimeout bounds each Redis step of a gate handler.
const redisTimeout = 3 * time.Second

// Context is what a gate handler sees of one client message.
type Context struct {
	g       *Gate
	c       *client
	msgID   uint32
	payload []byte
}

// Session returns the session id the gate gave this connection.
func (c *Context) Session() string { return c.c.sid }

// User returns the logged-in user, or "".
func (c *Context) User() string { u, _ := c.c.identity(); return u }

// MsgID returns the client msgID.
func (c *Context) MsgID() uint32 { return c.msgID }

// Payload returns the message body. It belongs to the handler, which may
// keep or modify it (as on backend.Context).
func (c *Context) Payload() []byte { return c.payload }

// GateID returns the id of the gate running the handler.
func (c *Context) GateID() string { return c.g.cfg.ID }

// NodeID returns the id of the node running the handler, this gate (the
// same method as backend.Context.NodeID).
func (c *Context) NodeID() string { return c.g.cfg.ID }

// Context returns a context cancelled when the gate stops.
func (c *Context) Context() context.Context { return c.g.ctx }

// Reply writes a frame to this client. payload must not be modified after
// the call.
func (c *Context) Reply(msgID uint32, payload []byte) error {
	return c.c.conn.Send(msgID, payload)
}

// Login binds user to this session: the session's owner record and the
// user's binding are written to Redis, and a previous session of the same
// user, on this gate or any other, is kicked.
//
// user must be 1 to MaxUserLen bytes of valid UTF-8; anything else is
// refused with an error wrapping ErrBadUser and nothing is written.
func (c *Context) Login(user string) error {
	if err := CheckUser(user); err != nil {
		return err
	}
	if u := c.User(); u != "" {
		return fmt.Errorf("%w as %s", ErrAlreadyLoggedIn, u)
	}
	g := c.g
	ctx, cancel := context.WithTimeout(g.ctx, redisTimeout)
	defer cancel()
	owner := session.Owner{Gate: g.cfg.ID, Token: c.c.token}
	if err := g.node.Sessions.BindSession(ctx, c.c.sid, owner); err != nil {
		return fmt.Errorf("login unavailable: %w", err)
	}
	prev, err := g.node.Sessions.BindUser(ctx, user, c.c.sid)
	if err != nil {
		_, _ = g.node.Sessions.UnbindSession(ctx, c.c.sid, owner)
		return fmt.Errorf("login unavailable: %w", err)
	}
	if !c.c.login(user) {
		return ErrAlreadyLoggedIn
	}
	g.cfg.Observer.LoggedIn()
	if prev != "" && prev != c.c.sid {
		g.kickSession(ctx, prev, "logged in elsewhere")
	}
	return nil
}

// MaxUserLen is the longest user name Login accepts, in bytes.
const MaxUserLen = 64

// CheckUser reports why user cannot be logged in (an error wrapping
// ErrBadUser), or nil: it must be 1 to MaxUserLen bytes of valid UTF-8.
func CheckUser(user string) error {
	switch {
	case user == "":
		return fmt.Errorf("%w: empty", ErrBadUser)
	case len(user) > MaxUserLen:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrBadUser, len(user), MaxUserLen)
	case !utf8.ValidString(user):
		return fmt.Errorf("%w: not valid UTF-8", ErrBadUser)
	}
	return nil
}

// Push sends a frame to a session on whichever gate owns it. ErrOffline if
// the session has no live owner.
func (c *Context) Push(sid string, msgID uint32, payload []byte) error {
	if cl := c.g.client(sid); cl != nil {
		return cl.conn.Send(msgID, payload)
	}
	ctx, cancel := context.WithTimeout(c.g.ctx, redisTimeout)
	defer cancel()
	return mapOffline(c.g.node.Push(ctx, sid, msgID, payload))
}

// PushUser sends a frame to the session user is logged in with.
// ErrOffline if the user is not logged in anywhere.
func (c *Context) PushUser(user string, msgID uint32, payload []byte) error {
	ctx, cancel := context.WithTimeout(c.g.ctx, redisTimeout)
	defer cancel()
	return mapOffline(c.g.node.PushUser(ctx, user, msgID, payload))
}

// mapOffline makes the cluster's "no live owner" error match ErrOffline.
func mapOffline(err error) error {
	if errors.Is(err, clusternode.ErrOffline) {
		return fmt.Errorf("%w: %v", ErrOffline, err)
	}
	return err
}

// Broadcast sends a frame to every logged-in session on every gate.
func (c *Context) Broadcast(msgID uint32, payload []byte) error {
	ctx, cancel := context.WithTimeout(c.g.ctx, redisTimeout)
	defer cancel()
	return c.g.node.Broadcast(ctx, msgID, payload)
}

// Kick disconnects a session wherever it lives; the client gets msgID 9
// with reason first. ErrOffline if the session has no live owner.
func (c *Context) Kick(sid, reason string) error {
	if cl := c.g.client(sid); cl != nil {
		c.g.kickLocal(cl, reason)
		return nil
	}
	ctx, cancel := context.WithTimeout(c.g.ctx, redisTimeout)
	defer cancel()
	return mapOffline(c.g.node.Kick(ctx, sid, reason))
}
