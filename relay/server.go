package relay

import (
	"crypto/hmac"
	"sync"
	"time"

	"github.com/zcluster/zcluster/internal/runtime/zinxkit"
)

// refuseFlush bounds how long a refused connection's queued Challenge may
// take to be written before the connection is closed.
const refuseFlush = 200 * time.Millisecond

// serverHandler runs the listener side of every inbound link.
type serverHandler struct{ r *Relay }

var _ zinxkit.Handler = serverHandler{}

// inbound is the state of one accepted connection (zinxkit.Conn.Value).
// mu is held while a frame is handled, so OnClose (which takes it) waits
// for a Handler call in progress and none follows it.
type inbound struct {
	r     *Relay
	conn  *zinxkit.Conn
	timer *time.Timer // handshake deadline; set in OnOpen

	mu      sync.Mutex
	closed  bool // OnClose ran
	authed  bool
	refused bool   // closing after a refusal: ignore the rest
	nonceS  []byte // our challenge
	peer    string // authenticated node id
	peerB   []byte // the same, stamped as Source
	env     Envelope
}

// OnOpen sends the challenge and arms the handshake deadline.
func (h serverHandler) OnOpen(c *zinxkit.Conn) {
	r := h.r
	in := &inbound{r: r, conn: c}
	c.Value = in
	r.mu.Lock()
	r.inbound[in] = struct{}{}
	closed := r.closed
	r.mu.Unlock()
	if closed {
		c.Close()
		return
	}
	nonce, err := newNonce()
	if err != nil {
		r.log.Error("relay: no randomness for a challenge", "remote", c.RemoteAddr(), "cause", err)
		c.Close()
		return
	}
	in.nonceS = nonce
	in.timer = time.AfterFunc(r.cfg.HandshakeTimeout, in.expire)
	_ = c.Send(FrameChallenge, append([]byte{Version}, nonce...))
}

// OnFrame runs the handshake until the connection has authenticated, then
// decodes envelopes and hands them to the Handler.
func (h serverHandler) OnFrame(c *zinxkit.Conn, msgID uint32, payload []byte) {
	in := c.Value.(*inbound)
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed || in.refused {
		return
	}
	if !in.authed {
		in.handshake(msgID, payload)
		return
	}
	r := in.r
	if msgID != FrameEnvelope {
		in.refuse("unexpected frame", "msg_id", msgID)
		return
	}
	if err := in.env.Decode(payload); err != nil {
		in.refuse("malformed envelope", "cause", err)
		return
	}
	if r.closing.Load() {
		return
	}
	in.env.Source = in.peerB
	r.stats.received.Add(1)
	r.handler(&in.env)
	in.env.Reset()
}

// OnClose waits for a Handler call in progress and forgets the connection.
func (h serverHandler) OnClose(c *zinxkit.Conn) {
	in, ok := c.Value.(*inbound)
	if !ok {
		return
	}
	in.mu.Lock()
	in.closed = true
	peer := in.peer
	in.mu.Unlock()
	if in.timer != nil {
		in.timer.Stop()
	}
	r := in.r
	r.mu.Lock()
	delete(r.inbound, in)
	if len(r.inbound) == 0 && r.inboundGone != nil {
		close(r.inboundGone)
		r.inboundGone = nil
	}
	r.mu.Unlock()
	if peer != "" {
		r.log.Debug("inbound link down", "peer", peer, "remote", c.RemoteAddr())
	}
}

// handshake handles a frame before authentication: exactly one valid Auth
// is accepted; anything else closes the connection. Called with mu held.
func (in *inbound) handshake(msgID uint32, p []byte) {
	r := in.r
	if msgID != FrameAuth {
		in.refuseHandshake("frame before authentication", "msg_id", msgID)
		return
	}
	a, err := parseAuth(p)
	if err != nil {
		in.refuseHandshake("malformed auth", "cause", err)
		return
	}
	if !hmac.Equal(a.mac, clientMAC(r.secret, in.nonceS, a.nonceC, a.nodeID)) {
		in.refuseHandshake("wrong secret", "claimed_peer", string(a.nodeID))
		return
	}
	if r.cfg.TLS == nil {
		if len(a.proof) != 0 {
			in.refuseHandshake("malformed auth", "cause", "trailing bytes (is the peer running relay TLS?)")
			return
		}
	} else if err := verifyProof(a.proof, r.cfg.TLS.roots, in.nonceS, a.nonceC, a.nodeID); err != nil {
		// The secret is right but the certificate does not back the
		// claimed node id: a node impersonating another.
		in.refuseHandshake("node identity not proven", "claimed_peer", string(a.nodeID), "cause", err)
		return
	}
	in.authed = true
	if in.timer != nil {
		in.timer.Stop()
	}
	in.peer = string(a.nodeID)
	in.peerB = []byte(in.peer)
	_ = in.conn.Send(FrameAccept, buildAccept(r.secret, a.nonceC, in.nonceS, r.nodeID))
	in.nonceS = nil
	r.log.Debug("inbound link up", "peer", in.peer, "remote", in.conn.RemoteAddr())
}

// expire closes a connection that has not authenticated in time.
func (in *inbound) expire() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.authed || in.closed || in.refused {
		return
	}
	in.refuseHandshake("handshake timeout", "timeout", in.r.cfg.HandshakeTimeout)
}

// refuseHandshake counts, logs once and closes. Called with mu held.
func (in *inbound) refuseHandshake(reason string, args ...any) {
	in.refused = true
	in.r.stats.hsFail.Add(1)
	in.r.log.Warn("handshake refused", append([]any{"reason", reason, "remote", in.conn.RemoteAddr()}, args...)...)
	// The Challenge may still be queued (a loaded machine): let it out, so
	// the peer sees what it reached (a client pointed at a relay port is
	// told so) rather than a bare close.
	_ = in.conn.Flush(refuseFlush)
	in.conn.Close()
}

// refuse closes an authenticated link that broke the protocol. Called with
// mu held.
func (in *inbound) refuse(reason string, args ...any) {
	in.refused = true
	in.r.stats.refused.Add(1)
	in.r.log.Warn("inbound link refused", append([]any{"reason", reason, "peer", in.peer, "remote", in.conn.RemoteAddr()}, args...)...)
	in.conn.Close()
}
