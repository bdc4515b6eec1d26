package backend

import (
	"bytes"
	"sync"
	"sync/atomic"

	"github.com/zcluster/zcluster/relay"
)

// Reply order across deferred messages.
//
// A session's client messages are answered in order (README: one session's
// messages to one group are answered in order). A deferred message
// (Context.Defer) lets the session's next messages run before it is
// answered, so their answers are held back until it finishes: while a
// session has an unfinished deferred message it has a replyOrder, a list
// of slots, one per message run since, in run order. Only the head slot's
// answers go out as they are made; the others' are held in their slots and
// go out, in slot order, as the slots before them finish. A session without
// an unfinished deferred message has no replyOrder and its answers go out
// directly (the common path costs one atomic load per message).

// replyOrder is the slot list of one session. Lock order: Backend.ordersMu,
// then replyOrder.mu.
type replyOrder struct {
	key        string // session id
	mu         sync.Mutex
	head, tail *replySlot
}

// replySlot holds the answers of one message until the slots before it
// have finished.
type replySlot struct {
	next *replySlot
	held []heldEnvelope
	done bool
}

type heldEnvelope struct {
	to  string
	env relay.Envelope
}

// orderTable is the replyOrders of the sessions that have one.
type orderTable struct {
	n  atomic.Int32 // len(m), read without the lock on every message
	mu sync.Mutex
	m  map[string]*replyOrder
}

// attach gives c, a client message about to run, a slot if its session
// has a replyOrder.
func (t *orderTable) attach(c *Context) {
	if t.n.Load() == 0 {
		return
	}
	t.mu.Lock()
	o := t.m[c.t.session]
	if o != nil {
		slot := &replySlot{}
		o.mu.Lock()
		if o.tail == nil {
			o.head = slot
		} else {
			o.tail.next = slot
		}
		o.tail = slot
		o.mu.Unlock()
		c.order, c.slot = o, slot
	}
	t.mu.Unlock()
}

// start gives c's session a replyOrder whose head is c (Defer of a client
// message that has no slot: no message of the session is unfinished before
// it, since a session runs one message at a time and c is running).
func (t *orderTable) start(c *Context) {
	slot := &replySlot{}
	o := &replyOrder{key: c.t.session, head: slot, tail: slot}
	t.mu.Lock()
	if t.m == nil {
		t.m = make(map[string]*replyOrder)
	}
	t.m[o.key] = o
	t.n.Store(int32(len(t.m)))
	t.mu.Unlock()
	c.order, c.slot = o, slot
}

// emit sends env for c, or holds it in c's slot until the slots before it
// have finished.
func (s *Backend) emit(c *Context, env *relay.Envelope) error {
	o := c.order
	if o == nil {
		return s.send(c.t.source, env)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.head == c.slot {
		return s.send(c.t.source, env)
	}
	c.slot.held = append(c.slot.held, heldEnvelope{to: c.t.source, env: cloneEnvelope(env)})
	return nil
}

// cloneEnvelope copies env with slices of its own, so that the envelopes
// emit is given (built on the caller's stack) need not escape when they are
// sent at once.
func cloneEnvelope(env *relay.Envelope) relay.Envelope {
	return relay.Envelope{Kind: env.Kind, Flags: env.Flags, MsgID: env.MsgID, Seq: env.Seq,
		Session: bytes.Clone(env.Session), User: bytes.Clone(env.User), Source: bytes.Clone(env.Source), Payload: bytes.Clone(env.Payload)}
}

// slotDone marks c's slot finished and sends the held answers that may go
// now; the replyOrder is dropped once every slot has finished.
func (s *Backend) slotDone(c *Context) {
	o := c.order
	o.mu.Lock()
	c.slot.done = true
	for o.head != nil && o.head.done {
		o.head = o.head.next
		if o.head == nil {
			o.tail = nil
			break
		}
		for _, h := range o.head.held {
			_ = s.send(h.to, &h.env)
		}
		o.head.held = nil
	}
	empty := o.head == nil
	o.mu.Unlock()
	if !empty {
		return
	}
	t := &s.orders
	t.mu.Lock()
	o.mu.Lock()
	if o.head == nil && t.m[o.key] == o { // no message attached meanwhile
		delete(t.m, o.key)
		t.n.Store(int32(len(t.m)))
	}
	o.mu.Unlock()
	t.mu.Unlock()
}
