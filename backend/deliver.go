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
// share pipelines). payload must not be modified after the call.
func (s *Backend) Deliver(ctx context.Context, user string, msgID uint32, payload []byte) (Delivery, error) {
	if s.node == nil {
		return Delivery{}, fmt.Errorf("%w: backend not started", ErrNotStored)
	}
	pos, err := s.node.Inbox.Append(ctx, user, msgID, payload)
	if err != nil {
		return Delivery{}, fmt.Errorf("%w: %w", ErrNotStored, err)
	}
	d := Delivery{Offset: pos.Offset, Epoch: pos.Epoch}
	frame := inbox.AppendMessage(make([]byte, 0, inbox.MessageHeaderLen+len(payload)), pos.Offset, pos.Epoch, msgID, payload)
	err = s.node.PushReliable(ctx, user, frame)
	switch {
	case err == nil:
		d.Online = true
	case errors.Is(err, clusternode.ErrOffline):
	default:
		// Stored: the user gets it on their next resume, or their gate
		// fetches it when it notices the gap.
		s.log.Debug("reliable push failed; the message waits in the inbox", "user", user, "offset", pos.Offset, "cause", err)
	}
	return d, nil
}

// Deliver is Backend.Deliver bounded by the backend's call timeout.
func (c *Context) Deliver(user string, msgID uint32, payload []byte) (Delivery, error) {
	ctx, cancel := c.timeout()
	defer cancel()
	return c.s.Deliver(ctx, user, msgID, payload)
}

// InboxStats returns the counters of the backend's inbox store: reliable
// messages appended and the Redis round trips they took.
func (s *Backend) InboxStats() inbox.Stats {
	if s.node == nil {
		return inbox.Stats{}
	}
	return s.node.Inbox.Stats()
}
