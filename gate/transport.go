package gate

import (
	"context"
	"fmt"
	"maps"
	"net"
	"time"

	"github.com/zcluster/zcluster/internal/runtime/clientnet"
	"github.com/zcluster/zcluster/internal/runtime/frame"
	"github.com/zcluster/zcluster/internal/runtime/zinxkit"
)

// A client reaches the gate over one of several transports. Each listener
// turns its connections into the same three calls: openClient when a
// connection starts, onFrame for every frame (on the connection's own
// reader goroutine, in order), closeClient when it ends. Everything else a
// session is (routing, error frames, kicks, pushes, broadcasts, limits) is
// decided above that line and so holds for every transport alike.

// clientConn is the gate's side of one client connection. Send never
// blocks on the network (a full queue closes the connection); Close makes
// the listener end the connection, after which closeClient runs; Context
// is cancelled by Close or when the connection ends (a reader blocked in
// onFrame waits on it).
type clientConn interface {
	Send(msgID uint32, payload []byte) error
	Flush(timeout time.Duration) error
	Close()
	RemoteAddr() string
	Context() context.Context
	// LastRead is when the connection last received bytes from its peer
	// (for Config.IdleTimeout).
	LastRead() time.Time
	// Queued is how many bytes wait to be written to the peer.
	Queued() int
}

var (
	_ clientConn = (*zinxkit.Conn)(nil)
	_ clientConn = (*clientnet.Conn)(nil)
)

// transport identifies a client listener.
type transport int

const (
	transportTCP transport = iota
	transportWS
	transportKCP
	numTransports
)

// Transport names, as in metrics and `zcluster top`.
const (
	TransportTCP = "tcp"
	TransportWS  = clientnet.TransportWS
	TransportKCP = clientnet.TransportKCP
)

// String returns the transport's name ("tcp", "ws", "kcp").
func (t transport) String() string {
	switch t {
	case transportWS:
		return TransportWS
	case transportKCP:
		return TransportKCP
	}
	return TransportTCP
}

// Conns returns the open client connections by transport ("tcp", "ws",
// "kcp"); a transport without a listener is absent.
func (g *Gate) Conns() map[string]int {
	m := map[string]int{TransportTCP: int(g.conns[transportTCP].Load())}
	if g.ws != nil {
		m[TransportWS] = int(g.conns[transportWS].Load())
	}
	if g.kcp != nil {
		m[TransportKCP] = int(g.conns[transportKCP].Load())
	}
	return m
}

// WSURL returns the WebSocket endpoint's URL (ws:// or wss://, with the
// advertised host), or "" without a WebSocket listener.
func (g *Gate) WSURL() string {
	if g.ws == nil {
		return ""
	}
	return g.ws.URL(g.advertiseHost())
}

// WSAddr returns the address the WebSocket listener is bound to, or "".
func (g *Gate) WSAddr() string {
	if g.ws == nil {
		return ""
	}
	return g.ws.Addr()
}

// KCPAddr returns the address the KCP listener is bound to, or "".
func (g *Gate) KCPAddr() string {
	if g.kcp == nil {
		return ""
	}
	return g.kcp.Addr()
}

// advertiseHost is the host part of the advertised client address.
func (g *Gate) advertiseHost() string {
	h, _, _ := net.SplitHostPort(g.clientAdv)
	return h
}

// startExtraListeners starts the WebSocket and KCP listeners the config asks for.
func (g *Gate) startExtraListeners() error {
	wcfg := frame.WriterConfig{MaxPending: g.cfg.SendQueue}
	var err error
	if g.cfg.WSListen != "" {
		g.ws, err = clientnet.ListenWS(clientnet.WSConfig{
			Name: g.cfg.ID, Addr: g.cfg.WSListen, Path: g.cfg.WSPath, Origins: g.cfg.WSOrigins,
			CertFile: g.cfg.TLSCertFile, KeyFile: g.cfg.TLSKeyFile,
			MaxFrame: g.cfg.MaxFrame, Writer: wcfg, Logger: g.log,
		}, netHandler{g, transportWS})
		if err != nil {
			return fmt.Errorf("gate %s: websocket listener: %w", g.cfg.ID, err)
		}
	}
	if g.cfg.KCPListen != "" {
		g.kcp, err = clientnet.ListenKCP(clientnet.KCPConfig{
			Name: g.cfg.ID, Addr: g.cfg.KCPListen,
			MaxFrame: g.cfg.MaxFrame, Writer: wcfg, Logger: g.log,
		}, netHandler{g, transportKCP})
		if err != nil {
			return fmt.Errorf("gate %s: kcp listener: %w", g.cfg.ID, err)
		}
	}
	return nil
}

// stopListeners stops every client listener that was started.
func (g *Gate) stopListeners() {
	if g.server != nil {
		g.server.Stop()
	}
	if g.ws != nil {
		g.ws.Stop()
	}
	if g.kcp != nil {
		g.kcp.Stop()
	}
}

// clientHandler feeds zinx TCP connections to the gate.
type clientHandler struct{ g *Gate }

var _ zinxkit.Handler = clientHandler{}

// OnOpen implements zinxkit.Handler.
func (h clientHandler) OnOpen(conn *zinxkit.Conn) { conn.Value = h.g.openClient(conn, transportTCP) }

// OnClose implements zinxkit.Handler.
func (h clientHandler) OnClose(conn *zinxkit.Conn) {
	if c, ok := conn.Value.(*client); ok {
		h.g.closeClient(c)
	}
}

// OnFrame implements zinxkit.Handler.
func (h clientHandler) OnFrame(conn *zinxkit.Conn, msgID uint32, payload []byte) {
	if c, ok := conn.Value.(*client); ok {
		h.g.onFrame(c, msgID, payload)
	}
}

// netHandler feeds WebSocket and KCP connections to the gate.
type netHandler struct {
	g  *Gate
	tr transport
}

var _ clientnet.Handler = netHandler{}

// OnOpen implements clientnet.Handler.
func (h netHandler) OnOpen(conn *clientnet.Conn) { conn.Value = h.g.openClient(conn, h.tr) }

// OnClose implements clientnet.Handler.
func (h netHandler) OnClose(conn *clientnet.Conn) {
	if c, ok := conn.Value.(*client); ok {
		h.g.closeClient(c)
	}
}

// OnFrame implements clientnet.Handler.
func (h netHandler) OnFrame(conn *clientnet.Conn, msgID uint32, payload []byte) {
	if c, ok := conn.Value.(*client); ok {
		h.g.onFrame(c, msgID, payload)
	}
}

// connsPublishEvery is how often the gate checks whether its connection
// counts changed and, if so, publishes them in Redis for `zcluster top`.
const connsPublishEvery = 2 * time.Second

// connsLoop publishes the open connections by transport in Redis when they
// change, and at least every third of the session TTL (the record's TTL).
func (g *Gate) connsLoop() {
	t := time.NewTicker(connsPublishEvery)
	defer t.Stop()
	var (
		last   map[string]int
		lastAt time.Time
	)
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		}
		now := g.Conns()
		if maps.Equal(now, last) && time.Since(lastAt) < g.cfg.SessionTTL/3 {
			continue
		}
		ctx, cancel := context.WithTimeout(g.ctx, connsPublishEvery)
		err := g.node.Sessions.PublishConns(ctx, g.cfg.ID, now, g.cfg.SessionTTL)
		cancel()
		if err != nil {
			// The session refresh reports Redis trouble at warn already.
			g.log.Debug("publishing connection counts failed", "cause", err)
			continue
		}
		last, lastAt = now, time.Now()
	}
}
