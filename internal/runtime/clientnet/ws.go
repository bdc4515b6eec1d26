package clientnet

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/zcluster/zcluster/internal/runtime/frame"
)

// DefaultWSPath is the default WebSocket endpoint path.
const DefaultWSPath = "/ws"

// DefaultHandshakeTimeout bounds reading an upgrade request's headers and,
// for wss://, the TLS handshake.
const DefaultHandshakeTimeout = 10 * time.Second

// closeWait is how long a connection closed by the server waits for the
// peer's close frame before the socket is closed (so the peer reads the
// last frames and the reason instead of a reset).
const closeWait = time.Second

// WSConfig describes one WebSocket listener.
type WSConfig struct {
	// Name appears in logs (the gate id).
	Name string
	// Addr is host:port to listen on; port 0 picks a free port.
	Addr string
	// Path is the endpoint path (default DefaultWSPath). Other paths get 404.
	Path string
	// Origins lists the browser origins allowed to connect: "*" allows
	// any; an entry with a scheme ("https://game.example.com:8443") must
	// equal the Origin header; an entry without one matches the origin's
	// host:port or host name. Empty: only pages from the host name the
	// client dialled (any port). Requests without an Origin header (not
	// from a browser) are always allowed. A refused origin gets 403.
	Origins []string
	// CertFile and KeyFile, both PEM files, make the listener serve wss://.
	CertFile, KeyFile string
	// MaxFrame is the largest frame payload accepted (default
	// frame.DefaultMaxFrame). A message may hold several frames, at most
	// MaxFrame+8 bytes in all.
	MaxFrame int
	// Writer tunes each connection's send queue.
	Writer frame.WriterConfig
	// Logger receives connection-level events (default slog.Default()).
	Logger *slog.Logger
	// HandshakeTimeout bounds the upgrade request and the TLS handshake
	// (default DefaultHandshakeTimeout).
	HandshakeTimeout time.Duration
}

// WSServer is a running WebSocket listener.
type WSServer struct {
	cfg      WSConfig
	h        Handler
	ln       net.Listener
	srv      *http.Server
	upgrader websocket.Upgrader
	conns    connSet
	served   chan struct{}
	scheme   string
}

// ListenWS starts a WebSocket listener whose connections h handles.
func ListenWS(cfg WSConfig, h Handler) (*WSServer, error) {
	if cfg.Path == "" {
		cfg.Path = DefaultWSPath
	}
	if !strings.HasPrefix(cfg.Path, "/") {
		return nil, fmt.Errorf("%w: websocket path %q must start with /", ErrConfig, cfg.Path)
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = frame.DefaultMaxFrame
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	for _, o := range cfg.Origins {
		if o == "" {
			return nil, fmt.Errorf("%w: empty entry in the origin list", ErrConfig)
		}
	}
	var tlsCfg *tls.Config
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: wss certificate: %w", ErrConfig, err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrListen, err)
	}
	s := &WSServer{cfg: cfg, h: h, ln: ln, served: make(chan struct{}), scheme: "ws"}
	if tlsCfg != nil {
		s.ln = tls.NewListener(ln, tlsCfg)
		s.scheme = "wss"
	}
	s.upgrader = websocket.Upgrader{
		ReadBufferSize:  4096,
		WriteBufferSize: 4096,
		CheckOrigin:     func(r *http.Request) bool { return originAllowed(cfg.Origins, r) },
	}
	mux := http.NewServeMux()
	mux.HandleFunc(cfg.Path, s.serveHTTP)
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		IdleTimeout:       cfg.HandshakeTimeout, // keep-alive between plain HTTP requests (upgraded connections are ours)
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(s.served)
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Logger.Error("websocket listener stopped", "server", cfg.Name, "addr", s.Addr(), "cause", err)
		}
	}()
	return s, nil
}

// Addr returns the bound address (with the concrete port).
func (s *WSServer) Addr() string { return s.ln.Addr().String() }

// Path returns the endpoint path.
func (s *WSServer) Path() string { return s.cfg.Path }

// Scheme returns "ws", or "wss" with TLS.
func (s *WSServer) Scheme() string { return s.scheme }

// URL returns the endpoint's URL for host (the bound host when empty, or
// 127.0.0.1 when that is a wildcard).
func (s *WSServer) URL(host string) string {
	bh, port, _ := net.SplitHostPort(s.Addr())
	if host == "" {
		host = bh
		if ip := net.ParseIP(bh); ip == nil || ip.IsUnspecified() {
			host = "127.0.0.1"
		}
	}
	return (&url.URL{Scheme: s.scheme, Host: net.JoinHostPort(host, port), Path: s.cfg.Path}).String()
}

// Len returns the number of open connections.
func (s *WSServer) Len() int { return s.conns.len() }

// Stop closes the listener and every connection (peers get close code 1001
// "server shutting down") and waits briefly for their readers. Safe to
// call twice.
func (s *WSServer) Stop() {
	_ = s.srv.Close() // the listener, and requests not upgraded yet
	<-s.served
	s.conns.stop(closeGoingAway, "server shutting down", 2*closeWait)
}

func (s *WSServer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		// The upgrader has answered (400, 403 for a refused origin, ...).
		s.cfg.Logger.Debug("websocket upgrade refused", "server", s.cfg.Name, "remote", r.RemoteAddr,
			"origin", r.Header.Get("Origin"), "cause", err)
		return
	}
	s.serveConn(ws, r.RemoteAddr)
}

// serveConn runs one connection's reader on the HTTP handler's goroutine.
func (s *WSServer) serveConn(ws *websocket.Conn, remote string) {
	nc := ws.NetConn()
	c := newConn(TransportWS, remote, func(code int, reason string) {
		// Tell the peer why, then let the reader wait (bounded) for its
		// answering close frame; the reader closes the socket.
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(closeWait))
		_ = nc.SetReadDeadline(time.Now().Add(closeWait))
	})
	if !s.conns.add(c) {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(closeGoingAway, "server shutting down"), time.Now().Add(closeWait))
		_ = nc.Close()
		return
	}
	defer s.conns.remove(c)
	c.attachWriter(wsWriteConn{ws}, s.cfg.Writer, s.cfg.Logger, s.cfg.Name)
	s.h.OnOpen(c)
	defer func() {
		_ = nc.Close()
		c.ended(s.h)
	}()
	max := s.cfg.MaxFrame + frame.HeaderLen
	var buf []byte
	for {
		mt, r, err := ws.NextReader()
		c.touch()
		if err != nil {
			if !c.Closed() && !websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived) && !errors.Is(err, net.ErrClosed) {
				s.cfg.Logger.Debug("websocket connection ended", "server", s.cfg.Name, "remote", remote, "cause", err)
			}
			return
		}
		if c.Closed() {
			// Closing: wait for the peer's close frame, ignore the rest.
			_, _ = io.Copy(io.Discard, r)
			continue
		}
		if mt != websocket.BinaryMessage {
			s.refuse(c, closeUnsupported, "text message: send binary messages holding zinx frames")
			continue
		}
		buf, err = readMessage(r, buf[:0], max)
		if errors.Is(err, errMessageTooBig) {
			s.refuse(c, closeTooBig, fmt.Sprintf("message over %d bytes", max))
			continue
		}
		if err != nil {
			return
		}
		if code, reason := checkFrames(buf, s.cfg.MaxFrame); code != 0 {
			s.refuse(c, code, reason)
			continue
		}
		for off := 0; off < len(buf) && !c.Closed(); {
			msgID := binary.BigEndian.Uint32(buf[off:])
			end := off + frame.HeaderLen + int(binary.BigEndian.Uint32(buf[off+4:]))
			s.h.OnFrame(c, msgID, buf[off+frame.HeaderLen:end])
			off = end
		}
		if cap(buf) > 256<<10 {
			buf = nil // do not keep a large buffer for an idle connection
		}
	}
}

// refuse closes c for a protocol violation, with a close code and reason.
func (s *WSServer) refuse(c *Conn, code int, reason string) {
	s.cfg.Logger.Warn("closing websocket connection: bad message", "server", s.cfg.Name, "remote", c.remote, "cause", reason)
	c.closeWith(code, reason)
}

var errMessageTooBig = errors.New("clientnet: message too big")

// readMessage appends r's message to buf, refusing more than max bytes.
func readMessage(r io.Reader, buf []byte, max int) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			if len(buf) > max {
				return buf, errMessageTooBig
			}
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > max {
			return buf, errMessageTooBig
		}
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// checkFrames checks that msg holds whole frames within the size limit; it
// returns a close code and reason when it does not.
func checkFrames(msg []byte, maxFrame int) (int, string) {
	if len(msg) == 0 {
		return closeProtocol, "empty message: send whole zinx frames"
	}
	for off := 0; off < len(msg); {
		if len(msg)-off < frame.HeaderLen {
			return closeInvalid, "frame split across messages: send whole frames"
		}
		msgID := binary.BigEndian.Uint32(msg[off:])
		n := binary.BigEndian.Uint32(msg[off+4:])
		if uint64(n) > uint64(maxFrame) {
			return closeTooBig, fmt.Sprintf("msgID %d: frame of %d bytes over the limit %d", msgID, n, maxFrame)
		}
		end := off + frame.HeaderLen + int(n)
		if end > len(msg) {
			return closeInvalid, "frame split across messages: send whole frames"
		}
		off = end
	}
	return 0, ""
}

// wsWriteConn sends each write of a frame.Writer as one binary message.
type wsWriteConn struct{ ws *websocket.Conn }

// Write sends b, whole frames, as one binary message.
func (w wsWriteConn) Write(b []byte) (int, error) {
	if err := w.ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// SetWriteDeadline bounds the next Write.
func (w wsWriteConn) SetWriteDeadline(t time.Time) error { return w.ws.SetWriteDeadline(t) }

// originAllowed applies WSConfig.Origins to an upgrade request.
func originAllowed(allowed []string, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser: origins protect browser users only
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if len(allowed) == 0 {
		host := r.Host
		if h, _, err := net.SplitHostPort(r.Host); err == nil {
			host = h
		}
		return strings.EqualFold(u.Hostname(), strings.Trim(host, "[]"))
	}
	for _, a := range allowed {
		switch {
		case a == "*":
			return true
		case strings.Contains(a, "://"):
			if strings.EqualFold(strings.TrimSuffix(a, "/"), u.Scheme+"://"+u.Host) {
				return true
			}
		case strings.EqualFold(a, u.Host), strings.EqualFold(a, u.Hostname()):
			return true
		}
	}
	return false
}
