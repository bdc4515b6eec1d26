package clientnet

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/xtaci/kcp-go"

	"github.com/zcluster/zcluster/internal/runtime/frame"
)

// DefaultKCPIdleTimeout is the default KCPConfig.IdleTimeout.
const DefaultKCPIdleTimeout = 2 * time.Minute

// KCPConfig describes one KCP listener. KCP runs over UDP in stream mode:
// the bytes are those of a TCP connection (zinx TLV frames); a frame may be
// split across packets.
type KCPConfig struct {
	// Name appears in logs (the gate id).
	Name string
	// Addr is the UDP host:port to listen on; port 0 picks a free port.
	Addr string
	// MaxFrame is the largest frame payload accepted (default
	// frame.DefaultMaxFrame); a larger declared length closes the session.
	MaxFrame int
	// Writer tunes each session's send queue.
	Writer frame.WriterConfig
	// Logger receives connection-level events (default slog.Default()).
	Logger *slog.Logger
	// IdleTimeout closes a session that sent nothing for this long (UDP has
	// no connection close: a vanished peer is only noticed this way, or by
	// the gate's own idle timeout). Default DefaultKCPIdleTimeout.
	IdleTimeout time.Duration
}

// KCPServer is a running KCP listener.
type KCPServer struct {
	cfg   KCPConfig
	h     Handler
	ln    *kcp.Listener
	conns connSet
	stop  sync.Once
	done  chan struct{}
}

// ListenKCP starts a KCP listener whose sessions h handles.
func ListenKCP(cfg KCPConfig, h Handler) (*KCPServer, error) {
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = frame.DefaultMaxFrame
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultKCPIdleTimeout
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrListen, cfg.Addr, err)
	}
	ln, err := kcp.ListenWithOptions(cfg.Addr, nil, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrListen, err)
	}
	s := &KCPServer{cfg: cfg, h: h, ln: ln, done: make(chan struct{})}
	go s.accept()
	return s, nil
}

// Addr returns the bound UDP address (with the concrete port).
func (s *KCPServer) Addr() string { return s.ln.Addr().String() }

// Len returns the number of open sessions.
func (s *KCPServer) Len() int { return s.conns.len() }

// Stop closes the listener and every session and waits briefly for their
// readers. Safe to call twice.
func (s *KCPServer) Stop() {
	s.stop.Do(func() {
		_ = s.ln.Close()
		<-s.done
		s.conns.stop(closeGoingAway, "", 2*time.Second)
	})
}

func (s *KCPServer) accept() {
	defer close(s.done)
	for {
		sess, err := s.ln.AcceptKCP()
		if err != nil {
			// Stop closed the listener (io.ErrClosedPipe), or its socket
			// failed: either way no more sessions come.
			s.cfg.Logger.Debug("kcp accept ended", "server", s.cfg.Name, "cause", err)
			return
		}
		// Tuned for latency (the "fast" profile of kcp-go's docs): no
		// delay, 10 ms internal clock, fast resend, no congestion window.
		sess.SetStreamMode(true)
		sess.SetWriteDelay(false)
		sess.SetNoDelay(1, 10, 2, 1)
		sess.SetWindowSize(256, 256)
		sess.SetACKNoDelay(true)
		c := newConn(TransportKCP, sess.RemoteAddr().String(), func(int, string) { _ = sess.Close() })
		if !s.conns.add(c) {
			_ = sess.Close()
			continue
		}
		go s.serveConn(c, sess)
	}
}

func (s *KCPServer) serveConn(c *Conn, sess *kcp.UDPSession) {
	defer s.conns.remove(c)
	c.attachWriter(sess, s.cfg.Writer, s.cfg.Logger, s.cfg.Name)
	s.h.OnOpen(c)
	defer func() {
		_ = sess.Close()
		c.ended(s.h)
	}()
	dec := frame.NewDecoder(s.cfg.MaxFrame)
	buf := make([]byte, 4096)
	for {
		_ = sess.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		n, err := sess.Read(buf)
		c.touch()
		if err != nil {
			if !c.Closed() {
				s.cfg.Logger.Debug("kcp session ended", "server", s.cfg.Name, "remote", c.remote, "cause", err)
			}
			return
		}
		if c.Closed() {
			return
		}
		err = dec.Feed(buf[:n], func(msgID uint32, payload []byte) error {
			if c.Closed() {
				return errConnClosed
			}
			s.h.OnFrame(c, msgID, payload)
			return nil
		})
		if err != nil {
			if !errors.Is(err, errConnClosed) {
				s.cfg.Logger.Warn("closing kcp session: bad frame", "server", s.cfg.Name, "remote", c.remote, "cause", err)
			}
			return
		}
	}
}

var errConnClosed = errors.New("clientnet: connection closed")
