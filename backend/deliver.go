package backend

import (
	"context"
	"errors"
	"fmt"

	"github.com/zcluster/zcluster/inbox"
	"github.com/zcluster/zcluster/internal/runtime/clusternode"
)

// ErrNotStored is returned (wrapped) by Deliver when the message could not
// be stored (Redis unreachable, bad arguments). The message may or may not
// be in the inbox: Redis may have run the append before the failure.
var ErrNotStored = errors.New("backend: reliable message not stored")

// Delivery says what Deliver did with a message.
type Delivery struct {
	// Offset is the message's offset in the user's inbox (1, 2, 3, ... per
	// epoch).
	Offset uint64
	// Epoch is the inbox's epoch.
	Epoch uint64
	// Online reports whether the user was logged in and the message was
	// handed to their gate; false means it waits in the inbox for the user's
	// next login and resume.
	Online bool
}

// Deliver sends a reliable message to user: it is appended to the user's
// inbox in Redis (a stream bounded by Config.InboxMax and InboxTTL) and,
// if the user is logged in, pushed to their gate, which writes it to their
// connection once that connection has resumed (inbox.MsgResume). It
// returns once the message is stored, with its offset: from then on it
// survives the death of any gate or backend, and reaches the user on their
// next resume on any gate, in order, exactly once per connection (durable
// to the extent Redis is: see package inbox). The client receives it as an
// inbox.MsgMessage frame carrying msgID and payload.
//
// Unlike PushUser it costs a Redis write per message (concurrent Delivers
// share pipelines, and one user's messages queued together share one
// script). ctx bounds the wait: when it ends first, Deliver returns an
// error wrapping ErrNotStored and ctx's error, and the message may still be
// stored and pushed. A handler that must not wait for Redis uses
// DeliverAsync with Context.Defer. payload must not be modified after the
// call.
func (s *Backend) Deliver(ctx context.Context, user string, msgID uint32, payload []byte) (Delivery, error) {
	type result struct {
		d   Delivery
		err error
	}
	ch := make(chan result, 1)
	if err := s.DeliverAsync(user, msgID, payload, func(d Delivery, err error) { ch <- result{d, err} }); err != nil {
		return Delivery{}, err
	}
	select {
	case r := <-ch:
		return r.d, r.err
	case <-ctx.Done():
		return Delivery{}, fmt.Errorf("%w (it may still be stored): %w", ErrNotStored, ctx.Err())
	}
}

// DeliverAsync is Deliver without the wait: it queues the message and
// returns at once; done is called with the outcome once the message is
// stored and handed to the user's gate (or with an error wrapping
// ErrNotStored). Messages to one user are stored, pushed and completed in
// the order of the DeliverAsync and Deliver calls, so a handler that sends
// a session's messages in order keeps them in order without waiting.
//
// done runs on a goroutine of the backend and must not block: it delays
// the completions of other users' messages. It is the place to answer a
// deferred message (Context.Defer):
//
//	d := c.Defer()
//	err := c.DeliverAsync(to, MsgNote, note, func(r backend.Delivery, err error) {
//		if err != nil {
//			d.Finish(err) // an error frame
//			return
//		}
//		d.Finish(d.Reply(MsgNoteSent, ack(r.Offset)))
//	})
//	return err // an error here finishes the deferred message too
//
// It fails at once, without calling done, before Start (ErrNotStarted), for an empty user
// or a payload over inbox.MaxPayload, and when too many appends already wait
// for Redis (inbox.ErrBusy): all wrap ErrNotStored. payload must not be
// modified after the call.
func (s *Backend) DeliverAsync(user string, msgID uint32, payload []byte, done func(Delivery, error)) error {
	if s.node == nil {
		return fmt.Errorf("%w: %w", ErrNotStored, ErrNotStarted)
	}
	err := s.node.Inbox.AppendAsync(user, msgID, payload, func(pos inbox.Position, err error) {
		if err != nil {
			done(Delivery{}, fmt.Errorf("%w: %w", ErrNotStored, err))
			return
		}
		done(s.pushStored(user, msgID, payload, pos), nil)
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotStored, err)
	}
	return nil
}

// pushStored pushes a stored message to user's gate if user is logged in.
func (s *Backend) pushStored(user string, msgID uint32, payload []byte, pos inbox.Position) Delivery {
	d := Delivery{Offset: pos.Offset, Epoch: pos.Epoch}
	frame := inbox.AppendMessage(make([]byte, 0, inbox.MessageHeaderLen+len(payload)), pos.Offset, pos.Epoch, msgID, payload)
	// No deadline of its own (a timer per message is measurable here): a
	// session lookup is bounded by the Redis client's timeouts and a dial by
	// the relay's, and the message is stored whatever happens.
	err := s.node.PushReliable(s.ctx, user, frame)
	switch {
	case err == nil:
		d.Online = true
	case errors.Is(err, clusternode.ErrOffline):
	default:
		// Stored: the user gets it on their next resume, or their gate
		// fetches it when it notices the gap.
		s.log.Debug("reliable push failed; the message waits in the inbox", "user", user, "offset", pos.Offset, "cause", err)
	}
	return d
}

// Deliver is Backend.Deliver bounded by the backend's call timeout.
func (c *Context) Deliver(user string, msgID uint32, payload []byte) (Delivery, error) {
	ctx, cancel := c.timeout()
	defer cancel()
	return c.s.Deliver(ctx, user, msgID, payload)
}

// DeliverAsync is Backend.DeliverAsync.
func (c *Context) DeliverAsync(user string, msgID uint32, payload []byte, done func(Delivery, error)) error {
	return c.s.DeliverAsync(user, msgID, payload, done)
}

// InboxStats returns the counters of the backend's inbox store: reliable
// messages appended and the Redis round trips they took.
func (s *Backend) InboxStats() inbox.Stats {
	if s.node == nil {
		return inbox.Stats{}
	}
	return s.node.Inbox.Stats()
}
