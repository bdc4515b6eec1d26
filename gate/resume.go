package gate

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/zcluster/zcluster/inbox"
	"github.com/zcluster/zcluster/relay"
)

// The reliable channel on the gate side (wire layout in package inbox).
//
// A logged-in connection that sends inbox.MsgResume gets an answer, the
// stored messages after its position, then live ones, each offset once and
// in order. Its state is an inboxConn: next (the offset it gets next) and,
// while the gate reads Redis for it (fetching), the live messages that
// arrive meanwhile (held, by offset). Live messages that arrive out of order
// (two backends delivered to the user at once) are held until the missing
// ones come; if they do not within holeWait, the gate reads them from Redis.
// A sweep every SessionTTL/3 compares every resumed connection with its
// inbox's head in one pipeline and catches up those that fell behind (a live
// push that went to a gate the user had just left), so a stored message
// reaches a connected user within one sweep even if its push was lost.
//
// Lock order: inboxHub.mu, then inboxConn.mu; no Redis call or flush is
// made under either.

const (
	// holeWait is how long out-of-order live messages wait for the ones
	// before them before the gate reads those from Redis.
	holeWait = 100 * time.Millisecond
	// retryWait is how long the gate waits after a failed Redis read before
	// it tries again.
	retryWait = time.Second
	// replayPage is how many messages one Redis read returns.
	replayPage = 200
	// maxHeld bounds the live messages held for one connection; beyond it
	// they are dropped and read again from Redis.
	maxHeld = 4096
	// fetchTimeout bounds one catch-up's Redis reads and flushes.
	fetchTimeout = 30 * time.Second
	// pageFlush bounds the wait for one replayed page to be written.
	pageFlush = 10 * time.Second
)

// inboxHub holds the resumed connections of the gate, by user.
type inboxHub struct {
	mu     sync.Mutex
	byUser map[string]*inboxConn
}

func newInboxHub() *inboxHub { return &inboxHub{byUser: make(map[string]*inboxConn)} }

// inboxConn is the reliable state of one resumed connection.
type inboxConn struct {
	c    *client
	user string

	mu       sync.Mutex
	epoch    uint64
	next     uint64
	fetching bool
	refetch  bool
	held     map[uint64][]byte
	timer    *time.Timer
	armed    bool // timer is pending
	closed   bool
}

// add registers ic for its user; false if its connection already resumed.
// A resumed connection of the same user on this gate (an older login, being
// kicked) stops getting reliable messages.
func (h *inboxHub) add(ic *inboxConn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.byUser[ic.user]
	if old != nil && old.c == ic.c {
		return false
	}
	if old != nil {
		old.mu.Lock()
		old.closed = true
		old.stopTimerLocked()
		old.held = nil
		old.mu.Unlock()
	}
	h.byUser[ic.user] = ic
	return true
}

func (h *inboxHub) get(user string) *inboxConn {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byUser[user]
}

// getBytes is get for a user name in bytes, without copying it.
func (h *inboxHub) getBytes(user []byte) *inboxConn {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byUser[string(user)]
}

// remove forgets the state of connection c (if user's entry is still
// c's) and stops it.
func (h *inboxHub) remove(user string, c *client) {
	h.mu.Lock()
	ic := h.byUser[user]
	if ic == nil || ic.c != c {
		h.mu.Unlock()
		return
	}
	delete(h.byUser, user)
	h.mu.Unlock()
	ic.mu.Lock()
	ic.closed = true
	ic.stopTimerLocked()
	ic.held = nil
	ic.mu.Unlock()
}

func (h *inboxHub) all() []*inboxConn {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*inboxConn, 0, len(h.byUser))
	for _, ic := range h.byUser {
		out = append(out, ic)
	}
	return out
}

// Resumed returns the number of connections of this gate that resumed
// their inbox.
func (g *Gate) Resumed() int {
	g.inbox.mu.Lock()
	defer g.inbox.mu.Unlock()
	return len(g.inbox.byUser)
}

// onResume handles inbox.MsgResume on the connection's reader goroutine;
// the Redis work runs in a goroutine of the gate.
func (g *Gate) onResume(c *client, payload []byte) {
	user, _ := c.identity()
	if user == "" {
		g.sendError(c, inbox.MsgResume, "not logged in")
		return
	}
	req, err := inbox.ParseResumeRequest(payload)
	if err != nil {
		g.sendError(c, inbox.MsgResume, err.Error())
		return
	}
	if req.Epoch == 0 && req.Offset != inbox.FromStart && req.Offset != inbox.FromNow {
		g.sendError(c, inbox.MsgResume, "resume: epoch 0 takes offset 0 (everything stored) or 2^64-1 (from now)")
		return
	}
	if req.Epoch != 0 && !inbox.EpochOf(user, req.Epoch) {
		g.sendError(c, inbox.MsgResume, fmt.Sprintf("resume: epoch %016x is not an epoch of %s's inbox", req.Epoch, user))
		return
	}
	ic := &inboxConn{c: c, user: user, fetching: true, held: make(map[uint64][]byte)}
	if !g.inbox.add(ic) {
		g.sendError(c, inbox.MsgResume, "resume: this connection has already resumed")
		return
	}
	g.goLoop(func() { g.resume(ic, req) })
}

// resume answers a resume request, then replays and goes live.
func (g *Gate) resume(ic *inboxConn, req inbox.ResumeRequest) {
	ctx, cancel := context.WithTimeout(g.ctx, fetchTimeout)
	defer cancel()
	fail := func(text string) {
		g.inbox.remove(ic.user, ic.c)
		g.sendError(ic.c, inbox.MsgResume, text)
	}
	after := req.Offset
	if req.Epoch == 0 {
		after = 0
	}
	pg, err := g.node.Inbox.Read(ctx, ic.user, after, replayPage)
	if err == nil && req.Epoch != 0 && req.Epoch != pg.Epoch {
		pg, err = g.node.Inbox.Read(ctx, ic.user, 0, replayPage)
	}
	if err != nil {
		g.log.Warn("resume: inbox unavailable", "user", ic.user, "cause", err)
		fail("resume unavailable: " + err.Error())
		return
	}
	ans := inbox.ResumeAnswer{Epoch: pg.Epoch, Last: pg.Last}
	switch {
	case req.Epoch == 0 && req.Offset == inbox.FromNow:
		ans.Next = pg.Last + 1
		pg.Entries = nil
	case req.Epoch == 0:
		ans.Next = pg.First
	case req.Epoch != pg.Epoch:
		ans.Status, ans.Next = inbox.StatusGap, pg.First
	case req.Offset > pg.Last:
		fail(fmt.Sprintf("resume: offset %d is beyond the last offset %d of the inbox", req.Offset, pg.Last))
		return
	case req.Offset+1 < pg.First:
		ans.Status, ans.Next = inbox.StatusGap, pg.First
	default:
		ans.Next = req.Offset + 1
	}
	ic.mu.Lock()
	ic.epoch, ic.next = ans.Epoch, ans.Next
	closed := ic.closed
	ic.mu.Unlock()
	if closed {
		return
	}
	_ = ic.c.conn.Send(inbox.MsgResume, ans.Append(make([]byte, 0, inbox.ResumeAnswerLen)))
	g.catchUp(ctx, ic, &pg)
}

// catchUp brings ic up to its inbox's head from Redis (starting with pg if
// given), then delivers what was held meanwhile and ends the fetch. ic is
// fetching.
func (g *Gate) catchUp(ctx context.Context, ic *inboxConn, pg *inbox.Page) {
	for {
		if err := g.fill(ctx, ic, pg); err != nil {
			g.log.Warn("inbox catch-up failed; retrying", "user", ic.user, "cause", err)
			ic.mu.Lock()
			ic.fetching = false
			ic.armLocked(g, retryWait)
			ic.mu.Unlock()
			return
		}
		pg = nil
		ic.mu.Lock()
		if ic.closed {
			ic.mu.Unlock()
			return
		}
		for off := range ic.held {
			if off < ic.next {
				delete(ic.held, off)
			}
		}
		g.drainLocked(ic)
		if ic.refetch {
			ic.refetch = false
			ic.mu.Unlock()
			continue
		}
		ic.fetching = false
		if len(ic.held) > 0 {
			ic.armLocked(g, holeWait)
		}
		ic.mu.Unlock()
		return
	}
}

// fill reads ic's inbox after its next offset (pg: the first page, if
// already read) and delivers every stored message, announcing a gap where
// history is gone.
func (g *Gate) fill(ctx context.Context, ic *inboxConn, pg *inbox.Page) error {
	for {
		ic.mu.Lock()
		after, closed := ic.next-1, ic.closed
		ic.mu.Unlock()
		if closed {
			return nil
		}
		if pg == nil {
			p, err := g.node.Inbox.Read(ctx, ic.user, after, replayPage)
			if err != nil {
				return err
			}
			pg = &p
		}
		ic.mu.Lock()
		if pg.Epoch != ic.epoch {
			// The inbox was lost and started again: offsets restarted.
			ic.mu.Unlock()
			p, err := g.node.Inbox.Read(ctx, ic.user, 0, replayPage)
			if err != nil {
				return err
			}
			pg = &p
			ic.mu.Lock()
			ic.epoch, ic.next = pg.Epoch, pg.First
			g.sendGapLocked(ic, pg.Last)
		} else if pg.Last >= ic.next && pg.First > ic.next {
			ic.next = pg.First
			g.sendGapLocked(ic, pg.Last)
		}
		var buf []byte
		for _, e := range pg.Entries {
			if e.Offset < ic.next {
				continue
			}
			if e.Offset > ic.next { // trimmed while we read
				ic.next = e.Offset
				g.sendGapLocked(ic, pg.Last)
			}
			buf = inbox.AppendMessage(buf[:0], e.Offset, ic.epoch, e.MsgID, e.Payload)
			g.deliver(ic.c, inbox.MsgMessage, buf)
			ic.next++
		}
		ic.mu.Unlock()
		if len(pg.Entries) < replayPage {
			return nil
		}
		pg = nil
		// Let the page be written before reading the next: a long replay
		// must not fill the client's send queue.
		if err := ic.c.conn.Flush(pageFlush); err != nil && ic.c.conn.Context().Err() != nil {
			return nil
		}
	}
}

// sendGapLocked tells the client that history before ic.next is gone.
func (g *Gate) sendGapLocked(ic *inboxConn, last uint64) {
	ans := inbox.ResumeAnswer{Status: inbox.StatusGap, Epoch: ic.epoch, Next: ic.next, Last: last}
	_ = ic.c.conn.Send(inbox.MsgResume, ans.Append(make([]byte, 0, inbox.ResumeAnswerLen)))
}

// onReliable handles a reliable message pushed by a backend (an
// inbox.MsgMessage payload), on the relay's reader goroutine.
func (g *Gate) onReliable(env *relay.Envelope) {
	var ic *inboxConn
	if len(env.User) > 0 {
		ic = g.inbox.getBytes(env.User)
	} else if c := g.clientBytes(env.Session); c != nil {
		user, _ := c.identity()
		ic = g.inbox.get(user)
	}
	if ic == nil {
		return // not resumed here: it waits in the inbox
	}
	m, err := inbox.ParseMessage(env.Payload)
	if err != nil {
		g.log.Debug("malformed reliable push", "from", string(env.Source), "cause", err)
		return
	}
	ic.mu.Lock()
	defer ic.mu.Unlock()
	switch {
	case ic.closed:
	case ic.fetching:
		ic.holdLocked(m.Offset, env.Payload)
	case m.Epoch != ic.epoch:
		ic.holdLocked(m.Offset, env.Payload)
		g.startFetchLocked(ic)
	case m.Offset < ic.next:
		// Already delivered (replayed from Redis).
	case m.Offset > ic.next:
		ic.holdLocked(m.Offset, env.Payload)
		ic.armLocked(g, holeWait)
	default:
		g.deliver(ic.c, inbox.MsgMessage, env.Payload)
		ic.next++
		g.drainLocked(ic)
		if len(ic.held) == 0 {
			ic.stopTimerLocked()
		}
	}
}

// holdLocked keeps a live message until the ones before it are delivered.
func (ic *inboxConn) holdLocked(off uint64, payload []byte) {
	if len(ic.held) >= maxHeld {
		ic.refetch = true // read it from Redis instead
		return
	}
	if _, dup := ic.held[off]; !dup {
		ic.held[off] = append([]byte(nil), payload...)
	}
}

// drainLocked delivers held messages that are next in line. A held message
// of another epoch means the inbox restarted: it is dropped and the inbox
// read again.
func (g *Gate) drainLocked(ic *inboxConn) {
	for {
		f, ok := ic.held[ic.next]
		if !ok {
			return
		}
		delete(ic.held, ic.next)
		if binary.BigEndian.Uint64(f[8:16]) != ic.epoch {
			ic.refetch = true
			if !ic.fetching {
				g.startFetchLocked(ic)
			}
			return
		}
		g.deliver(ic.c, inbox.MsgMessage, f)
		ic.next++
	}
}

// armLocked starts the timer that catches ic up from Redis after d, unless
// one is already pending (later holes do not push it back).
func (ic *inboxConn) armLocked(g *Gate, d time.Duration) {
	if ic.armed {
		return
	}
	ic.armed = true
	ic.timer = time.AfterFunc(d, func() {
		ic.mu.Lock()
		defer ic.mu.Unlock()
		ic.armed = false
		if !ic.closed && !ic.fetching {
			g.startFetchLocked(ic)
		}
	})
}

func (ic *inboxConn) stopTimerLocked() {
	if ic.timer != nil {
		ic.timer.Stop()
	}
	ic.armed = false
}

// startFetchLocked starts a catch-up from Redis for ic.
func (g *Gate) startFetchLocked(ic *inboxConn) {
	if ic.closed || ic.fetching {
		return
	}
	started := g.tryGo(func() {
		ctx, cancel := context.WithTimeout(g.ctx, fetchTimeout)
		defer cancel()
		g.catchUp(ctx, ic, nil)
	})
	if started {
		ic.fetching = true
		ic.stopTimerLocked()
	}
}

// tryGo runs fn in a goroutine the gate waits for on Shutdown, unless
// Shutdown has begun waiting (then it returns false and fn does not run).
func (g *Gate) tryGo(fn func()) bool {
	g.wgMu.Lock()
	defer g.wgMu.Unlock()
	if g.wgClosed || g.ctx.Err() != nil {
		return false
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		fn()
	}()
	return true
}

// inboxSweepLoop catches up resumed connections whose inbox holds messages
// they have not received (their push was lost), every SessionTTL/3.
func (g *Gate) inboxSweepLoop() {
	t := time.NewTicker(max(g.cfg.SessionTTL/3, time.Second))
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		}
		ics := g.inbox.all()
		if len(ics) == 0 {
			continue
		}
		users := make([]string, len(ics))
		for i, ic := range ics {
			users[i] = ic.user
		}
		ctx, cancel := context.WithTimeout(g.ctx, g.cfg.SessionTTL/3)
		heads, err := g.node.Inbox.Heads(ctx, users)
		cancel()
		if err != nil {
			g.log.Warn("inbox sweep failed", "connections", len(ics), "cause", err)
			continue
		}
		for i, ic := range ics {
			h := heads[i]
			ic.mu.Lock()
			if !ic.fetching && ((h.Epoch != 0 && h.Epoch != ic.epoch) || (h.Epoch == ic.epoch && h.Last >= ic.next)) {
				g.startFetchLocked(ic)
			}
			ic.mu.Unlock()
		}
	}
}
