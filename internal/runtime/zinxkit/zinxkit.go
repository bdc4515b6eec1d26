// Package zinxkit runs zinx v1.2.8 servers the way zcluster needs them:
// every byte a connection reads is framed by zcluster (hard size limit,
// no "msgID not FOUND" log, no per-message worker hop), every write goes
// through a coalescing frame.Writer, and several servers can live in one
// process without changing each other's settings.
//
// zinx keeps its configuration in one process-wide object
// (zconf.GlobalObject). zinxkit sets the few fields it relies on exactly once
// per process, to the same values for every server, and gives each server
// its own name, host and port through the znet.Server fields instead.
//
// # TLS
//
// zinx v1.2.8 terminates TLS itself, but only from the process-wide
// zconf.GlobalObject.CertFile and PrivateKeyFile, which it reads exactly once
// per server: when that server's listener is created, at the start of
// znet.Server.ListenTcpConn. zinxkit therefore serialises every Listen in
// the process: it sets the two fields to this server's certificate (or
// clears them), starts the server, waits until its listener has accepted
// the probe connection (so zinx has read them), and puts them back to "".
// Each server gets its own certificate or none; TLS and plain servers mix
// freely in one process. The cost is nil at run time (zinx's own tls.Conn,
// no extra goroutine or copy). The limits are zinx's: the certificate comes
// from PEM files, read once at Listen (no reload), with Go's default server
// settings (TLS 1.2 and up) and no client certificates. A zinx server
// started in the same process without zinxkit, while a zinxkit Listen runs,
// could pick up the certificate; zcluster starts none.
package zinxkit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aceld/zinx/zconf"
	"github.com/aceld/zinx/ziface"
	"github.com/aceld/zinx/zlog"
	"github.com/aceld/zinx/znet"

	"github.com/zcluster/zcluster/internal/runtime/frame"
	"github.com/zcluster/zcluster/internal/runtime/freeport"
	"github.com/zcluster/zcluster/internal/runtime/zinxquiet"
)

// ErrListen is returned when a server cannot bind its address.
var ErrListen = errors.New("zinxkit: cannot listen")

// ErrTLS is returned when a server's certificate or key cannot be used.
var ErrTLS = errors.New("zinxkit: bad TLS certificate")

// Handler receives the events of a server's connections. OnFrame runs on the
// connection's reader goroutine, so frames of one connection arrive in order;
// the payload is only valid during the call.
type Handler interface {
	OnOpen(c *Conn)
	OnFrame(c *Conn, msgID uint32, payload []byte)
	OnClose(c *Conn)
}

// Config describes one server.
type Config struct {
	// Name appears in zinx's own logs.
	Name string
	// Addr is host:port to listen on; port 0 picks a free port.
	Addr string
	// MaxFrame is the largest payload accepted; a larger declared length
	// closes the connection (default frame.DefaultMaxFrame).
	MaxFrame int
	// Writer tunes each connection's send queue.
	Writer frame.WriterConfig
	// Logger receives connection-level events (default slog.Default()).
	Logger *slog.Logger
	// CertFile and KeyFile, both PEM files, make the listener speak TLS
	// with that certificate. Both or neither must be set.
	CertFile, KeyFile string
	// HandshakeTimeout bounds a TLS connection's handshake (default 10s):
	// a connection that has not completed it by then is closed before the
	// Handler hears of it. Unused without TLS.
	HandshakeTimeout time.Duration
}

// DefaultHandshakeTimeout is the default Config.HandshakeTimeout.
const DefaultHandshakeTimeout = 10 * time.Second

// TLS reports whether the config asks for a TLS listener.
func (c Config) TLS() bool { return c.CertFile != "" || c.KeyFile != "" }

// checkTLS loads the key pair once, so that a bad file is an error here
// instead of a panic in zinx's listener goroutine.
func (c Config) checkTLS() error {
	if !c.TLS() {
		return nil
	}
	if c.CertFile == "" || c.KeyFile == "" {
		return fmt.Errorf("%w: both a certificate and a key file are needed (cert %q, key %q)", ErrTLS, c.CertFile, c.KeyFile)
	}
	if _, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile); err != nil {
		return fmt.Errorf("%w: %w", ErrTLS, err)
	}
	return nil
}

// Server is a running zinx server.
type Server struct {
	cfg     Config
	handler Handler
	zs      *znet.Server
	addr    string
	stop    sync.Once
	conns   sync.Map // ziface.IConnection -> *Conn
	nconns  atomic.Int64
	opened  atomic.Int64 // connections ever started; Listen waits for its probe
	probe   atomic.Value // string: the local address Listen's probe dials from
}

// Conn is one accepted connection.
type Conn struct {
	// mu serialises frame delivery with close: zinx may run OnConnStop while
	// the reader is still inside the decoder.
	mu     sync.Mutex
	zc     ziface.IConnection
	w      *frame.Writer
	dec    *frame.Decoder
	id     uint64
	closed atomic.Bool
	// lastRead is when the connection last read any byte (UnixNano).
	lastRead atomic.Int64
	// Value is free for the handler's per-connection state. It is set in
	// OnOpen, before any OnFrame, and read on the reader goroutine.
	Value any
}

var setupOnce sync.Once

// zinx's zconf has read its configuration by now (this package imports it,
// so zconf's init ran first): undo what zinxquiet set up for it.
func init() { zinxquiet.Done() }

// setup applies the process-wide zinx settings every zcluster server shares.
func setup() {
	setupOnce.Do(func() {
		g := zconf.GlobalObject
		g.Mode = zconf.ServerModeTcp
		g.MaxConn = 1 << 30 // zcluster applies its own limits
		g.WorkerPoolSize = 1
		g.MaxWorkerTaskLen = 1
		g.WorkerMode = zconf.WorkerModeHash
		g.RouterSlicesMode = false
		g.IOReadBuffSize = 4096
		g.CertFile, g.PrivateKeyFile = "", ""
		zlog.SetLogger(zinxLogger{slog.Default().With("component", "zinx")})
	})
}

// listenMu serialises Listen: zinx reads the TLS files from the global
// config when a server's listener starts (see the package comment).
var listenMu sync.Mutex

// stdoutMu serialises the moments stdout is silenced around znet.NewServer,
// which prints a logo and the whole global config on every call.
var stdoutMu sync.Mutex

func newQuietServer() *znet.Server {
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	if devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0); err == nil {
		if saved, err := syscall.Dup(1); err == nil {
			_ = syscall.Dup3(int(devnull.Fd()), 1, 0)
			defer func() {
				_ = syscall.Dup3(saved, 1, 0)
				_ = syscall.Close(saved)
			}()
		}
		defer devnull.Close()
	}
	return znet.NewServer().(*znet.Server)
}

// Listen starts a server. It checks that the address can be bound before it
// hands it to zinx (which panics in a goroutine on a listen failure), and
// resolves port 0 to a concrete free port.
func Listen(cfg Config, h Handler) (*Server, error) {
	setup()
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = frame.DefaultMaxFrame
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.checkTLS(); err != nil {
		return nil, err
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	host, port, err := probe(cfg.Addr)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, handler: h, addr: net.JoinHostPort(host, strconv.Itoa(port))}
	zs := newQuietServer()
	zs.Name = cfg.Name
	zs.IPVersion = "tcp"
	zs.IP = host
	zs.Port = port
	zs.SetDecoder(rawDecoder{s})
	zs.SetOnConnStart(s.onStart)
	zs.SetOnConnStop(s.onStop)
	s.zs = zs
	if err := s.start(); err != nil {
		s.Stop()
		return nil, fmt.Errorf("%w %s: %v", ErrListen, s.addr, err)
	}
	return s, nil
}

// start starts zinx with this server's TLS files in the global config and
// clears them once its listener is up (see the package comment).
func (s *Server) start() error {
	listenMu.Lock()
	defer listenMu.Unlock()
	g := zconf.GlobalObject
	g.CertFile, g.PrivateKeyFile = s.cfg.CertFile, s.cfg.KeyFile
	defer func() { g.CertFile, g.PrivateKeyFile = "", "" }()
	s.zs.Start()
	return s.waitListening(3 * time.Second)
}

func probe(addr string) (string, int, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%w %q: %v", ErrListen, addr, err)
	}
	if _, p, _ := net.SplitHostPort(addr); p == "0" {
		// "Any port": one outside the ephemeral range, so no outgoing
		// connection can take it before zinx binds it.
		port, err := freeport.Pick(host)
		if err != nil {
			return "", 0, fmt.Errorf("%w %q: %v", ErrListen, addr, err)
		}
		return host, port, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %v", ErrListen, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	return host, port, nil
}

// waitListening dials the server until it accepts, then waits until zinx
// has started that probe connection (zinx's Stop panics on a connection it
// accepted but has not started yet).
func (s *Server) waitListening(timeout time.Duration) error {
	dialAddr := s.addr
	if host, port, _ := net.SplitHostPort(s.addr); host == "" || net.ParseIP(host).IsUnspecified() {
		dialAddr = net.JoinHostPort("127.0.0.1", port)
	}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		// The probe dials from a known local address, so onStart can tell
		// it from a client and keep it from the handler.
		dialer := net.Dialer{Timeout: 200 * time.Millisecond}
		if local, err := reservePort(dialAddr); err == nil {
			dialer.LocalAddr = local
			s.probe.Store(local.String())
		}
		c, err := dialer.Dial("tcp", dialAddr)
		if err != nil {
			last = err
			time.Sleep(10 * time.Millisecond)
			continue
		}
		defer c.Close()
		if s.cfg.TLS() {
			// Complete the handshake so that the probe reaches OnOpen as
			// it does on a plain listener. This only checks that our own
			// listener is up; nothing is sent, so the certificate is not
			// verified.
			_ = c.SetDeadline(deadline)
			_ = tls.Client(c, &tls.Config{InsecureSkipVerify: true}).Handshake() //nolint:gosec // see above
		}
		for s.opened.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		return nil
	}
	return last
}

// reservePort returns a loopback address of the family of dialAddr's host
// with a port that was free a moment ago.
func reservePort(dialAddr string) (*net.TCPAddr, error) {
	host, _, err := net.SplitHostPort(dialAddr)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().(*net.TCPAddr)
	_ = ln.Close()
	return addr, nil
}

// Addr returns the address the server listens on (with the concrete port).
func (s *Server) Addr() string { return s.addr }

// Len returns the number of open connections.
func (s *Server) Len() int { return int(s.nconns.Load()) }

// Stop closes the listener and every connection. Safe to call twice.
func (s *Server) Stop() {
	s.stop.Do(func() {
		defer func() {
			// zinx v1.2.8 can panic stopping a connection it has accepted
			// but not started; the listener must still be closed.
			if r := recover(); r != nil {
				s.cfg.Logger.Warn("zinx stop panicked", "server", s.cfg.Name, "panic", r)
			}
		}()
		s.zs.Stop()
		s.waitClosed(time.Second)
	})
}

// waitClosed waits until zinx has closed its listener (its accept
// goroutine does so after Stop returns), so that a Stop is followed by
// refused connections, not accepted-then-dropped ones: the port is free
// again once it can be bound.
func (s *Server) waitClosed(timeout time.Duration) {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		ln, err := net.Listen("tcp", s.addr)
		if err == nil {
			_ = ln.Close()
			return
		}
	}
}

// Range calls fn for every open connection until fn returns false.
func (s *Server) Range(fn func(*Conn) bool) {
	s.conns.Range(func(_, v any) bool { return fn(v.(*Conn)) })
}

func (s *Server) onStart(zc ziface.IConnection) {
	if tc, ok := zc.GetConnection().(*tls.Conn); ok {
		// zinx would run the handshake in its reader's first Read, with no
		// deadline: a client that never completes it would hold the
		// connection forever. Run it here, bounded; this goroutine is the
		// connection's own (zinx starts each connection on its own).
		s.opened.Add(1)
		ctx, cancel := context.WithTimeout(zc.Context(), s.cfg.HandshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			s.cfg.Logger.Debug("TLS handshake failed", "server", s.cfg.Name, "remote", zc.RemoteAddrString(), "cause", err)
			zc.Stop()
			return
		}
	}
	if probe, _ := s.probe.Load().(string); probe != "" && zc.RemoteAddrString() == probe {
		s.opened.Add(1) // Listen's own probe: not a client
		return
	}
	c := &Conn{zc: zc, dec: frame.NewDecoder(s.cfg.MaxFrame), id: zc.GetConnID()}
	c.lastRead.Store(time.Now().UnixNano())
	wcfg := s.cfg.Writer
	userOnErr := wcfg.OnError
	wcfg.OnError = func(err error) {
		if userOnErr != nil {
			userOnErr(err)
		}
		if errors.Is(err, frame.ErrQueueFull) {
			s.cfg.Logger.Warn("closing slow connection", "server", s.cfg.Name, "remote", c.RemoteAddr(), "cause", err)
		}
		c.Close()
	}
	c.w = frame.NewWriter(zc.GetConnection(), wcfg)
	s.conns.Store(zc, c)
	s.nconns.Add(1)
	s.handler.OnOpen(c)
	s.opened.Add(1)
}

func (s *Server) onStop(zc ziface.IConnection) {
	v, ok := s.conns.LoadAndDelete(zc)
	if !ok {
		return
	}
	c := v.(*Conn)
	c.mu.Lock()
	c.closed.Store(true)
	c.mu.Unlock()
	c.w.Close()
	s.nconns.Add(-1)
	s.handler.OnClose(c)
}

// rawDecoder is installed as zinx's frame decoder. Its nil length field makes
// zinx hand over raw read chunks; it frames them itself and never calls
// Proceed, so zinx's router (and its "not FOUND" log) is never reached.
type rawDecoder struct{ s *Server }

func (d rawDecoder) GetLengthField() *ziface.LengthField { return nil }

func (d rawDecoder) Intercept(chain ziface.IChain) ziface.IcResp {
	req, ok := chain.Request().(ziface.IRequest)
	if !ok {
		return nil
	}
	v, ok := d.s.conns.Load(req.GetConnection())
	if !ok {
		return nil
	}
	c := v.(*Conn)
	c.lastRead.Store(time.Now().UnixNano())
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return nil
	}
	err := c.dec.Feed(req.GetData(), func(msgID uint32, payload []byte) error {
		if c.closed.Load() {
			return errConnClosed
		}
		d.s.handler.OnFrame(c, msgID, payload)
		return nil
	})
	if err != nil && !errors.Is(err, errConnClosed) {
		d.s.cfg.Logger.Warn("closing connection: bad frame", "server", d.s.cfg.Name, "remote", c.RemoteAddr(), "cause", err)
		c.Close()
	}
	return nil
}

var errConnClosed = errors.New("zinxkit: connection closed")

// ID returns the connection id, unique within its server.
func (c *Conn) ID() uint64 { return c.id }

// RemoteAddr returns the peer address.
func (c *Conn) RemoteAddr() string { return c.zc.RemoteAddrString() }

// Send queues one frame; it never blocks on the network. A full queue
// closes the connection and returns frame.ErrQueueFull.
func (c *Conn) Send(msgID uint32, payload []byte) error { return c.w.WriteFrame(msgID, payload) }

// SendRaw queues bytes holding whole frames.
func (c *Conn) SendRaw(raw []byte) error { return c.w.WriteRaw(raw) }

// Flush waits up to timeout for queued frames to be written.
func (c *Conn) Flush(timeout time.Duration) error { return c.w.Flush(timeout) }

// Queued returns the bytes queued to the peer and not yet written.
func (c *Conn) Queued() int { return c.w.Queued() }

// Close closes the connection; OnClose follows asynchronously.
func (c *Conn) Close() {
	if c.closed.CompareAndSwap(false, true) {
		c.zc.Stop()
	}
}

// LastRead returns when the connection last read any byte from its peer
// (a partial frame counts), or when it opened if it has read nothing.
func (c *Conn) LastRead() time.Time { return time.Unix(0, c.lastRead.Load()) }

// Closed reports whether Close was called or the connection ended.
func (c *Conn) Closed() bool { return c.closed.Load() }

// Context is cancelled when the connection ends.
func (c *Conn) Context() context.Context { return c.zc.Context() }

// zinxLogger sends zinx's log lines to slog at debug level: its "errors" are
// connection resets and EOFs that zcluster reports itself where they matter.
type zinxLogger struct{ l *slog.Logger }

func (z zinxLogger) InfoF(format string, v ...any) { z.DebugF(format, v...) }
func (z zinxLogger) ErrorF(format string, v ...any) {
	z.l.Debug(fmt.Sprintf(format, v...))
}
func (z zinxLogger) DebugF(format string, v ...any) {
	if z.l.Enabled(context.Background(), slog.LevelDebug) {
		z.l.Debug(fmt.Sprintf(format, v...))
	}
}
func (z zinxLogger) InfoFX(_ context.Context, format string, v ...any)  { z.InfoF(format, v...) }
func (z zinxLogger) ErrorFX(_ context.Context, format string, v ...any) { z.ErrorF(format, v...) }
func (z zinxLogger) DebugFX(_ context.Context, format string, v ...any) { z.DebugF(format, v...) }
