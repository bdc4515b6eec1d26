package backend

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/zcluster/zcluster/codec"
	"github.com/zcluster/zcluster/internal/runtime/clusternode"
	"github.com/zcluster/zcluster/registry"
	"github.com/zcluster/zcluster/relay"
)

// Context is what a handler sees of one message: who sent it and the ways
// to answer. It is used by one goroutine, the handler's.
type Context struct {
	s *Backend
	t task

	held    bool // a reply is held back to carry the Done flag
	heldID  uint32
	heldMsg []byte

	codec codec.Codec // set by a typed handler (Typed)

	deferred *Deferred   // set by Defer
	order    *replyOrder // set while answers of the session may have to wait
	slot     *replySlot  // this message's place in order
}

// Session returns the client session the message came from ("" for a Call
// made outside any session).
func (c *Context) Session() string { return c.t.session }

// User returns the logged-in user of the session, or "".
func (c *Context) User() string { return c.t.user }

// MsgID returns the msgID the handler was registered for.
func (c *Context) MsgID() uint32 { return c.t.msgID }

// Payload returns the message body. It belongs to the handler.
func (c *Context) Payload() []byte { return c.t.payload }

// From returns the node that sent the message: a gate for client messages,
// the calling backend for Calls.
func (c *Context) From() string { return c.t.source }

// IsCall reports whether the message came through Context.Call.
func (c *Context) IsCall() bool { return c.t.kind == relay.KindCall }

// NodeID returns the id of the backend running the handler.
func (c *Context) NodeID() string { return c.s.cfg.ID }

// Context returns a context cancelled when the backend stops.
func (c *Context) Context() context.Context { return c.s.ctx }

// Reply answers the sender. payload must not be modified after the call.
//
// For a client message, every Reply is a frame with msgID to the client,
// in order (the last one goes out when the handler returns, marked as the
// end of the request).
//
// For a Call, the handler has one result: the FIRST Reply (msgID is
// ignored). It is sent when the handler returns, unless the handler returns
// an error, which the caller gets instead. A second Reply sends nothing
// and returns ErrAlreadyReplied.
//
// After Defer, Reply is the Deferred's Reply.
func (c *Context) Reply(msgID uint32, payload []byte) error {
	if c.deferred != nil {
		return c.deferred.Reply(msgID, payload)
	}
	return c.reply(msgID, payload)
}

func (c *Context) reply(msgID uint32, payload []byte) error {
	if c.t.kind == relay.KindCall {
		if c.held {
			return fmt.Errorf("%w: msgID %d is a Call, which has one result", ErrAlreadyReplied, c.t.msgID)
		}
		c.held, c.heldID, c.heldMsg = true, msgID, payload
		return nil
	}
	var err error
	if c.held {
		err = c.sendReply(c.heldID, c.heldMsg, 0)
	}
	c.held, c.heldID, c.heldMsg = true, msgID, payload
	return err
}

func (c *Context) sendReply(msgID uint32, payload []byte, flags uint8) error {
	if c.t.kind == relay.KindCall {
		return c.s.send(c.t.source, &relay.Envelope{Kind: relay.KindCallReply, Flags: flags &^ relay.FlagDone, Seq: c.t.seq, MsgID: msgID, Payload: payload})
	}
	return c.s.emit(c, &relay.Envelope{Kind: relay.KindReply, Flags: flags, Seq: c.t.seq, MsgID: msgID, Session: []byte(c.t.session), Payload: payload})
}

// finish ends the message: the held reply goes out marked done, or a bare
// Done (with the error text, if the handler failed).
func (c *Context) finish(herr error) {
	if c.t.kind == relay.KindCall {
		switch {
		case herr != nil:
			_ = c.s.send(c.t.source, &relay.Envelope{Kind: relay.KindCallReply, Flags: relay.FlagError, Seq: c.t.seq, Payload: []byte(herr.Error())})
		case c.held:
			_ = c.sendReply(c.heldID, c.heldMsg, 0)
		default:
			_ = c.s.send(c.t.source, &relay.Envelope{Kind: relay.KindCallReply, Seq: c.t.seq})
		}
		return
	}
	switch {
	case herr != nil:
		if c.held {
			_ = c.sendReply(c.heldID, c.heldMsg, 0)
		}
		_ = c.s.emit(c, &relay.Envelope{Kind: relay.KindDone, Flags: relay.FlagError, Seq: c.t.seq, MsgID: c.t.msgID, Session: []byte(c.t.session), Payload: []byte(herr.Error())})
	case c.held:
		_ = c.sendReply(c.heldID, c.heldMsg, relay.FlagDone)
	default:
		_ = c.s.emit(c, &relay.Envelope{Kind: relay.KindDone, Seq: c.t.seq, MsgID: c.t.msgID, Session: []byte(c.t.session)})
	}
	if c.slot != nil {
		c.s.slotDone(c)
	}
}

func (c *Context) timeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.s.ctx, c.s.cfg.CallTimeout)
}

func mapOffline(err error) error {
	if errors.Is(err, clusternode.ErrOffline) {
		return fmt.Errorf("%w: %v", ErrOffline, err)
	}
	return err
}

// Push sends a frame to a session on whichever gate owns it. ErrOffline if
// the session has no live owner.
func (c *Context) Push(sid string, msgID uint32, payload []byte) error {
	ctx, cancel := c.timeout()
	defer cancel()
	return mapOffline(c.s.node.Push(ctx, sid, msgID, payload))
}

// PushUser sends a frame to the session user is logged in with. ErrOffline
// if the user is not logged in anywhere.
func (c *Context) PushUser(user string, msgID uint32, payload []byte) error {
	ctx, cancel := c.timeout()
	defer cancel()
	return mapOffline(c.s.node.PushUser(ctx, user, msgID, payload))
}

// Broadcast sends a frame to every logged-in session on every gate.
func (c *Context) Broadcast(msgID uint32, payload []byte) error {
	ctx, cancel := c.timeout()
	defer cancel()
	return c.s.node.Broadcast(ctx, msgID, payload)
}

// Kick disconnects a session wherever it lives; the client gets msgID 9
// with reason first.
func (c *Context) Kick(sid, reason string) error {
	ctx, cancel := c.timeout()
	defer cancel()
	return mapOffline(c.s.node.Kick(ctx, sid, reason))
}

// Call sends payload to a node of group (picked by this session, so one
// session's calls go to one node) and waits for its handler's Reply, at
// most Config.CallTimeout (ErrCallTimeout) and no longer than ctx allows
// (ctx's error). Pass c.Context() when the handler has no deadline of its
// own.
func (c *Context) Call(ctx context.Context, group string, msgID uint32, payload []byte) ([]byte, error) {
	return c.s.call(ctx, c.t.session, c.t.user, group, msgID, payload)
}

// pickWait bounds how long Call waits for a group with no live node to get
// one.
const pickWait = time.Second

// waitPick polls the topology for a node of group for at most pickWait,
// and no longer than ctx allows.
func (s *Backend) waitPick(ctx context.Context, group, key string) (registry.Node, bool) {
	deadline := time.Now().Add(min(pickWait, s.cfg.CallTimeout))
	for time.Now().Before(deadline) {
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return registry.Node{}, false
		case <-ctx.Done():
			t.Stop()
			return registry.Node{}, false
		case <-t.C:
		}
		if n, ok := s.node.Pick(group, key); ok {
			return n, true
		}
	}
	return registry.Node{}, false
}

// call is Context.Call for a message of session/user.
func (s *Backend) call(ctx context.Context, session, user, group string, msgID uint32, payload []byte) ([]byte, error) {
	key := session
	seq := s.callSeq.Add(1)
	if key == "" {
		key = strconv.FormatUint(seq, 10)
	}
	node, ok := s.node.Pick(group, key)
	if !ok {
		// A node of the group may have registered a moment ago, before
		// this node's watch caught up (both just started): wait a little.
		node, ok = s.waitPick(ctx, group, key)
		if !ok {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("call group %q msgID %d: %w", group, msgID, err)
			}
			return nil, fmt.Errorf("%w for group %q", ErrNoNode, group)
		}
	}
	env := relay.Envelope{Kind: relay.KindCall, MsgID: msgID, Seq: seq, Session: []byte(session), User: []byte(user), Payload: payload}
	p := s.calls.add(seq, node.ID)
	if err := s.node.Relay.Send(ctx, node.ID, &env); err != nil {
		s.calls.remove(seq)
		if ctx.Err() != nil { // the caller gave up, not the node's fault
			return nil, fmt.Errorf("call %s msgID %d: %w", node.ID, msgID, err)
		}
		// Unreachable (it died, its lease not expired yet): avoid it and
		// try the next node of the group once.
		s.node.Avoid(node.ID, time.Second)
		next, ok := s.node.PickOther(group, key)
		if !ok {
			return nil, fmt.Errorf("call %s msgID %d: %w", node.ID, msgID, err)
		}
		node = next
		p = s.calls.add(seq, node.ID)
		if err := s.node.Relay.Send(ctx, node.ID, &env); err != nil {
			s.calls.remove(seq)
			return nil, fmt.Errorf("call %s msgID %d: %w", node.ID, msgID, err)
		}
	}
	s.noteCallee(session, user, node.ID)
	t := time.NewTimer(s.cfg.CallTimeout)
	defer t.Stop()
	select {
	case r := <-p.ch:
		return r.payload, r.err
	case <-t.C:
		s.calls.remove(seq)
		s.log.Warn("call timed out", "to", node.ID, "msg_id", msgID, "seq", seq, "after", s.cfg.CallTimeout)
		return nil, fmt.Errorf("%w: %s msgID %d after %v", ErrCallTimeout, node.ID, msgID, s.cfg.CallTimeout)
	case <-s.ctx.Done():
		s.calls.remove(seq)
		return nil, ErrStopped
	case <-ctx.Done():
		s.calls.remove(seq)
		return nil, fmt.Errorf("call %s msgID %d: %w", node.ID, msgID, ctx.Err())
	}
}
