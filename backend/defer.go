package backend

import (
	"fmt"
	"sync"

	"github.com/zcluster/zcluster/relay"
)

// Deferred is the answer of a message whose handler returned before it
// answered (see Context.Defer). Its methods may be called from any
// goroutine.
type Deferred struct {
	c        *Context
	mu       sync.Mutex
	finished bool
}

// Defer lets the handler return before it answers, for a handler that
// waits on something asynchronous (DeliverAsync, say): the message stays in
// flight until the returned Deferred's Finish is called, from any goroutine:
// the client's request stays open at its gate (it counts against the
// connection's --max-inflight and gets the gate's request timeout), and
// Shutdown waits for it. Reply through the Deferred (Context.Reply does the
// same after Defer), then call Finish, which ends the message as the
// handler's return would have: with err nil the last reply goes out marked
// as the end of the request; with an error the client gets an error frame
// (a Call's caller gets the error).
//
// The session's next messages run as soon as the handler returns; their
// answers are held back until this one finishes, so the client still gets
// one session's answers in the order of its messages. A handler that
// returns an error (or panics) after Defer ends the message with it at once
// (a later Finish does nothing). Defer called again returns the same
// Deferred. Finish must be called exactly once per
// deferred message; until then its request stays open. A deferred Call
// keeps its Config.MaxCalls slot until Finish. Defer is for plain handlers:
// a Typed handler's answer is its return value.
func (c *Context) Defer() *Deferred {
	if c.deferred == nil {
		c.deferred = &Deferred{c: c}
		if c.t.kind == relay.KindForward && c.slot == nil {
			// The session's next messages' answers wait for this one.
			c.s.orders.start(c)
		}
		// Counted as a running handler until Finish: Shutdown's drain and
		// wait see it. The handler itself is counted, so the WaitGroup is
		// above zero here.
		c.s.inflight.Add(1)
		c.s.wg.Add(1)
		if c.t.kind == relay.KindCall {
			c.s.callsRunning.Add(1) // its MaxCalls slot is held until Finish
		}
	}
	return c.deferred
}

// Reply answers the sender, as Context.Reply. After Finish it sends
// nothing and returns ErrAlreadyReplied.
func (d *Deferred) Reply(msgID uint32, payload []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.finished {
		return fmt.Errorf("%w: msgID %d already finished", ErrAlreadyReplied, d.c.t.msgID)
	}
	return d.c.reply(msgID, payload)
}

// Finish ends the deferred message (see Context.Defer): err nil sends the
// last reply marked as the end of the request (or a bare end), an error
// sends an error frame with its text. Later calls do nothing.
func (d *Deferred) Finish(err error) {
	d.mu.Lock()
	if d.finished {
		d.mu.Unlock()
		return
	}
	d.finished = true
	d.c.finish(err)
	d.mu.Unlock()
	d.c.s.inflight.Add(-1)
	if d.c.t.kind == relay.KindCall {
		d.c.s.callsRunning.Add(-1)
	}
	d.c.s.wg.Done()
}
