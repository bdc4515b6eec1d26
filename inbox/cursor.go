package inbox

import (
	"errors"
	"fmt"
)

// Cursor is a client's position in its inbox: the epoch and the last
// offset it has seen. A client keeps one, sends Request() after each login,
// feeds it every MsgResume answer and MsgMessage frame, and stores it
// wherever it likes between connections. Not safe for concurrent use.
type Cursor struct {
	Epoch  uint64
	Offset uint64
	// Gaps counts StatusGap answers seen: messages were lost to this client.
	Gaps int
	// live is false until the first resume answer of a connection arrived.
	live bool
}

// ErrOutOfOrder is returned by Cursor.Message for a message that skips an
// offset or belongs to another epoch without a gap answer before it: the
// gate broke its promise, the client should reconnect and resume.
var ErrOutOfOrder = errors.New("inbox: message out of order")

// Request returns the resume request for the next connection: FromStart
// when the cursor has never seen an answer.
func (c *Cursor) Request() ResumeRequest {
	c.live = false
	return ResumeRequest{Epoch: c.Epoch, Offset: c.Offset}
}

// Answer applies a resume answer. On StatusGap the cursor moves to the
// answer's position (the messages before Next are gone).
func (c *Cursor) Answer(a ResumeAnswer) {
	if a.Status == StatusGap {
		c.Gaps++
		c.Offset = a.Next - 1
	} else if c.Epoch == 0 {
		c.Offset = a.Next - 1
	}
	c.Epoch = a.Epoch
	c.live = true
}

// Message checks one reliable message against the cursor and moves it:
// new reports whether the message is the next one (false for a duplicate,
// which the caller drops).
func (c *Cursor) Message(m Message) (isNew bool, err error) {
	switch {
	case !c.live:
		return false, fmt.Errorf("%w: offset %d before any resume answer", ErrOutOfOrder, m.Offset)
	case m.Epoch != c.Epoch:
		return false, fmt.Errorf("%w: epoch %x, cursor at epoch %x", ErrOutOfOrder, m.Epoch, c.Epoch)
	case m.Offset <= c.Offset:
		return false, nil
	case m.Offset != c.Offset+1:
		return false, fmt.Errorf("%w: offset %d after %d", ErrOutOfOrder, m.Offset, c.Offset)
	}
	c.Offset = m.Offset
	return true, nil
}
