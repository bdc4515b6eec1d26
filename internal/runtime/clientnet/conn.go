// Package clientnet runs the gate's client listeners that zinx does not
// run itself: WebSocket (ws:// and wss://, on an http.Server of its own)
// and KCP (reliable UDP, github.com/xtaci/kcp-go). Both carry exactly the
// bytes of the TCP listener, stock zinx TLV frames, and hand every frame to
// a Handler with the same contract as zinxkit's: OnOpen, then OnFrame in
// order on the connection's own reader goroutine (a handler that blocks
// holds back only that connection's reads), then OnClose. Writes go through
// the same coalescing, bounded frame.Writer as zinx connections.
//
// Nothing here touches zinx's process-wide configuration, the default HTTP
// mux or any other global: any number of listeners can run in one process
// (see docs/websocket.md for why zinx's own WebSocket and KCP modes are not
// used).
package clientnet

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zcluster/zcluster/internal/runtime/frame"
)

// Transport names, as they appear in metrics and `zcluster top`.
const (
	TransportWS  = "ws"
	TransportKCP = "kcp"
)

// Sentinel errors.
var (
	// ErrListen is returned when a listener cannot bind its address.
	ErrListen = errors.New("clientnet: cannot listen")
	// ErrConfig reports an invalid listener configuration.
	ErrConfig = errors.New("clientnet: invalid config")
)

// Handler receives the events of a listener's connections. OnFrame runs on
// the connection's reader goroutine, so the frames of one connection arrive
// in order and a blocking OnFrame pauses only that connection's reads; the
// payload is only valid during the call.
type Handler interface {
	OnOpen(c *Conn)
	OnFrame(c *Conn, msgID uint32, payload []byte)
	OnClose(c *Conn)
}

// Conn is one accepted connection, WebSocket or KCP.
type Conn struct {
	transport string
	remote    string
	w         *frame.Writer
	// shut closes the transport (a WebSocket close frame first, with code
	// and reason); the reader then ends and OnClose follows.
	shut   func(code int, reason string)
	closed atomic.Bool
	// lastRead is when the reader last received anything (UnixNano).
	lastRead atomic.Int64
	ctx      context.Context
	cancel   context.CancelFunc
	// Value is free for the handler's per-connection state. It is set in
	// OnOpen, before any OnFrame, and read on the reader goroutine.
	Value any
}

func newConn(transport, remote string, shut func(int, string)) *Conn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Conn{transport: transport, remote: remote, shut: shut, ctx: ctx, cancel: cancel}
	c.touch()
	return c
}

// touch records that the reader received something now.
func (c *Conn) touch() { c.lastRead.Store(time.Now().UnixNano()) }

// LastRead returns when the connection last received anything from its
// peer (a WebSocket message or a KCP read), or when it opened.
func (c *Conn) LastRead() time.Time { return time.Unix(0, c.lastRead.Load()) }

// attachWriter gives c its frame.Writer on out; a full queue or a failed
// write closes c.
func (c *Conn) attachWriter(out frame.WriteConn, cfg frame.WriterConfig, log *slog.Logger, server string) {
	userOnErr := cfg.OnError
	cfg.OnError = func(err error) {
		if userOnErr != nil {
			userOnErr(err)
		}
		if errors.Is(err, frame.ErrQueueFull) {
			log.Warn("closing slow connection", "server", server, "transport", c.transport, "remote", c.remote, "cause", err)
		}
		c.closeWith(closeGoingAway, "send queue full or write failed")
	}
	c.w = frame.NewWriter(out, cfg)
}

// Transport returns "ws" or "kcp".
func (c *Conn) Transport() string { return c.transport }

// RemoteAddr returns the peer address.
func (c *Conn) RemoteAddr() string { return c.remote }

// Send queues one frame; it never blocks on the network. A full queue
// closes the connection and returns frame.ErrQueueFull.
func (c *Conn) Send(msgID uint32, payload []byte) error { return c.w.WriteFrame(msgID, payload) }

// SendRaw queues bytes holding whole frames.
func (c *Conn) SendRaw(raw []byte) error { return c.w.WriteRaw(raw) }

// Flush waits up to timeout for queued frames to be written.
func (c *Conn) Flush(timeout time.Duration) error { return c.w.Flush(timeout) }

// Queued returns the bytes queued to the peer and not yet written.
func (c *Conn) Queued() int { return c.w.Queued() }

// Close closes the connection (a WebSocket peer gets a normal close frame);
// OnClose follows asynchronously.
func (c *Conn) Close() { c.closeWith(closeNormal, "") }

// closeWith closes the connection once, with a close code and reason for a
// WebSocket peer.
func (c *Conn) closeWith(code int, reason string) {
	if c.closed.CompareAndSwap(false, true) {
		c.shut(code, reason)
		c.cancel() // a reader blocked in OnFrame waits on it
	}
}

// Closed reports whether Close was called or the connection ended.
func (c *Conn) Closed() bool { return c.closed.Load() }

// Context is cancelled by Close and when the connection ends.
func (c *Conn) Context() context.Context { return c.ctx }

// ended runs once the reader has stopped: nothing more is written and the
// handler hears of it.
func (c *Conn) ended(h Handler) {
	c.closed.Store(true)
	c.cancel()
	c.w.Close()
	h.OnClose(c)
}

// WebSocket close codes (RFC 6455 section 7.4.1).
const (
	closeNormal      = 1000
	closeGoingAway   = 1001
	closeUnsupported = 1003
	closeProtocol    = 1002
	closeInvalid     = 1007
	closeTooBig      = 1009
)

// connSet tracks a listener's open connections and reader goroutines, so
// Stop can close them all and wait.
type connSet struct {
	mu      sync.Mutex
	conns   map[*Conn]struct{}
	stopped bool
	wg      sync.WaitGroup
}

// add registers c and counts its reader; false once the set is stopped.
func (s *connSet) add(c *Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[*Conn]struct{})
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *connSet) remove(c *Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

func (s *connSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// stop refuses new connections, closes the open ones (code and reason for
// WebSocket peers) and waits up to timeout for their readers to end.
func (s *connSet) stop(code int, reason string, timeout time.Duration) {
	s.mu.Lock()
	s.stopped = true
	all := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		all = append(all, c)
	}
	s.mu.Unlock()
	for _, c := range all {
		c.closeWith(code, reason)
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}
