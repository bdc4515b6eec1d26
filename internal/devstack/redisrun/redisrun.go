// Package redisrun runs a Redis for development and tests: a redis-server
// child process on a free loopback port, or an in-process miniredis. The
// `zcluster demo` command and the test kit use it; production deployments
// point at a real Redis instead.
package redisrun

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/zcluster/zcluster/internal/runtime/tailbuf"
)

// ErrNoRedisServer is returned (wrapped) by StartProcess when no
// redis-server binary is on PATH.
var ErrNoRedisServer = errors.New("redisrun: redis-server not found on PATH")

// ErrClosed is returned by Restart after Close.
var ErrClosed = errors.New("redisrun: server closed")

// ErrNotProcess is returned by Restart on an in-process miniredis.
var ErrNotProcess = errors.New("redisrun: restart needs a redis-server process")

// startAttempts bounds how many free ports StartProcess tries: a port found
// free can be taken by someone else before redis-server binds it.
const startAttempts = 5

// Server is a Redis for development: a redis-server child process on a free
// loopback port, or an in-process miniredis. Its methods are safe for
// concurrent use.
type Server struct {
	addr string
	kind string

	mu     sync.Mutex
	closed bool
	bin    string // process kind: path of redis-server
	dir    string // process kind: working directory, removed by Close
	proc   *child // process kind: the running child; nil after a failed Restart
	mem    *miniredis.Miniredis
}

// child is one redis-server process.
type child struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once Wait has returned
	out    *tailbuf.Buffer
}

// StartProcess starts `redis-server` (found on PATH) on 127.0.0.1 and a free
// port, with persistence off, as a child process, and waits until PING
// answers; ctx bounds the wait. On Linux the child is killed if this process
// dies. It returns an error wrapping ErrNoRedisServer if the binary is not on
// PATH.
func StartProcess(ctx context.Context) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoRedisServer, err)
	}
	version, err := serverVersion(ctx, bin)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "zc-redis-")
	if err != nil {
		return nil, fmt.Errorf("redisrun: temp dir: %w", err)
	}
	var lastErr error
	for range startAttempts {
		var port int
		port, err = freePort()
		if err != nil {
			lastErr = err
			break
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		var c *child
		c, err = startChild(ctx, bin, dir, addr)
		if err == nil {
			return &Server{
				addr: addr,
				kind: "redis-server " + version,
				bin:  bin,
				dir:  dir,
				proc: c,
			}, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	_ = os.RemoveAll(dir)
	return nil, lastErr
}

// StartMemory starts an in-process miniredis on a free loopback port.
func StartMemory() (*Server, error) {
	m, err := miniredis.Run()
	if err != nil {
		return nil, fmt.Errorf("redisrun: miniredis: %w", err)
	}
	return &Server{addr: m.Addr(), kind: "in-process miniredis", mem: m}, nil
}

// Addr returns the server's address as host:port.
func (s *Server) Addr() string { return s.addr }

// Kind describes the server: "redis-server <version>" or
// "in-process miniredis".
func (s *Server) Kind() string { return s.kind }

// Close kills the child process and waits for it, or stops the miniredis.
// It is safe to call more than once.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if s.mem != nil {
		s.mem.Close()
	}
	if s.proc != nil {
		s.proc.stop()
		s.proc = nil
	}
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

// Restart stops the redis-server child and starts a new one on the same
// port, with empty data, and waits until it answers PING (ctx bounds the
// wait). It is meant for fault tests. It returns ErrNotProcess for a
// miniredis and ErrClosed after Close.
func (s *Server) Restart(ctx context.Context) error {
	if err := s.Stop(); err != nil {
		return err
	}
	return s.Start(ctx)
}

// Stop kills the redis-server child, keeping its port for Start: Redis is
// down until then. For fault tests.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.mem != nil {
		return ErrNotProcess
	}
	if s.proc != nil {
		s.proc.stop()
		s.proc = nil
	}
	return nil
}

// Start starts a stopped redis-server child again on the same port, with
// empty data, and waits until it answers PING.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.mem != nil {
		return ErrNotProcess
	}
	if s.proc != nil {
		return nil
	}
	var err error
	for {
		var c *child
		if c, err = startChild(ctx, s.bin, s.dir, s.addr); err == nil {
			s.proc = c
			return nil
		}
		// The old socket may linger for a moment; try again until ctx ends.
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// startChild runs redis-server on addr and waits until it answers PING.
// extra arguments are appended to the common ones (no persistence, files
// in dir, warnings only).
func startChild(ctx context.Context, bin, dir, addr string, extra ...string) (*child, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("redisrun: address %q: %w", addr, err)
	}
	args := append([]string{
		"--port", port,
		"--bind", host,
		"--save", "",
		"--appendonly", "no",
		"--protected-mode", "no",
		"--dir", dir,
		"--logfile", "",
		"--loglevel", "warning",
	}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = childAttr()
	out := &tailbuf.Buffer{Max: 4096}
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("redisrun: start %s: %w", bin, err)
	}
	c := &child{cmd: cmd, exited: make(chan struct{}), out: out}
	go func() {
		_ = cmd.Wait()
		close(c.exited)
	}()
	if err := waitPing(ctx, addr, c.exited); err != nil {
		c.stop()
		return nil, fmt.Errorf("redisrun: redis-server on %s: %w (output: %q)", addr, err, out.String())
	}
	return c, nil
}

// stop kills the child and waits until it has exited.
func (c *child) stop() {
	_ = c.cmd.Process.Kill()
	<-c.exited
}

// waitPing polls addr with PING until it answers +PONG, the child exits, or
// ctx ends.
func waitPing(ctx context.Context, addr string, exited <-chan struct{}) error {
	for {
		err := ping(ctx, addr)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no PING answer: %w (last: %v)", ctx.Err(), err)
		case <-exited:
			return errors.New("exited before answering PING")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// ping sends one inline PING and expects +PONG.
func ping(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// serverVersion runs `redis-server --version` and extracts the version.
func serverVersion(ctx context.Context, bin string) (string, error) {
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("redisrun: %s --version: %w", bin, err)
	}
	for f := range strings.FieldsSeq(string(out)) {
		if v, ok := strings.CutPrefix(f, "v="); ok {
			return v, nil
		}
	}
	return strings.TrimSpace(string(out)), nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("redisrun: free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
