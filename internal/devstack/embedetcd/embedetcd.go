// Package embedetcd runs a single-member etcd inside the current process on
// loopback ports. It serves zcluster's tests (including fault tests that stop
// etcd and bring it back with its data) and the `zcluster demo` command.
//
// It is not meant for production: fsync is disabled for speed, so a machine
// crash (not a process stop) may lose the last writes.
package embedetcd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/zcluster/zcluster/internal/runtime/freeport"
)

// ErrClosed is returned by Restart after Close.
var ErrClosed = errors.New("embedetcd: server closed")

// Server is an embedded etcd (go.etcd.io/etcd/server/v3/embed) on random
// loopback ports. Its methods are safe for concurrent use.
type Server struct {
	dir       string
	clientURL url.URL
	peerURL   url.URL

	mu     sync.Mutex
	etcd   *embed.Etcd // nil while stopped
	closed bool

	// stopping silences the errors etcd logs about its own listeners while
	// it is being stopped on purpose ("use of closed network connection").
	stopping atomic.Bool
}

// Start starts a single-member etcd with its data in dir (created if
// missing), client and peer URLs on 127.0.0.1 with free ports, quiet logging
// (errors only, on stderr) and auto-compaction off, and waits until it is
// ready to serve; ctx bounds the wait. The caller owns dir: Close does not
// remove it.
func Start(ctx context.Context, dir string) (*Server, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedetcd: data dir: %w", err)
	}
	cport, err := freePort()
	if err != nil {
		return nil, err
	}
	pport, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{
		dir:       dir,
		clientURL: url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", cport)},
		peerURL:   url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", pport)},
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.startLocked(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Endpoints returns the client URLs, e.g. ["http://127.0.0.1:41234"]. They
// stay the same across Stop and Restart.
func (s *Server) Endpoints() []string {
	return []string{s.clientURL.String()}
}

// Dir returns the data directory.
func (s *Server) Dir() string { return s.dir }

// Stop stops etcd without removing its data; the ports are kept in s for a
// later Restart. Stopping a stopped server does nothing. Stop may take a few
// seconds while etcd drains open client streams.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

// Restart stops etcd if it is running and starts it again on the same client
// and peer ports with the same data dir, waiting until it is ready (ctx bounds
// the wait). It fails with ErrClosed after Close.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.stopLocked()
	return s.startLocked(ctx)
}

// Close stops etcd for good; it is safe to call twice. The data dir is left
// in place.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if s.etcd == nil {
		return
	}
	s.stopping.Store(true)
	s.etcd.Close()
	s.etcd = nil
}

func (s *Server) startLocked(ctx context.Context) error {
	cfg := embed.NewConfig()
	cfg.Name = "zcluster"
	cfg.Dir = s.dir
	cfg.ListenClientUrls = []url.URL{s.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{s.clientURL}
	cfg.ListenPeerUrls = []url.URL{s.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{s.peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	s.stopping.Store(false)
	tune(cfg, &s.stopping)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("embedetcd: start: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
		s.etcd = e
		return nil
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("embedetcd: start: %w", err)
	case <-ctx.Done():
		e.Close()
		return fmt.Errorf("embedetcd: not ready: %w", ctx.Err())
	case <-time.After(time.Minute):
		e.Close()
		return errors.New("embedetcd: not ready after 1m")
	}
}

// tune applies what every embedded member shares: quiet logging (errors
// only, none while stopping on purpose, none of the benign ones), no
// compaction, small snapshots, fast elections, no fsync.
func tune(cfg *embed.Config, stopping *atomic.Bool) {
	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"stderr"}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(&benignFilter{&quietCore{
		Core:     zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.Lock(os.Stderr), zapcore.ErrorLevel),
		stopping: stopping,
	}}))
	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = "0" // off
	cfg.SnapshotCount = 1000
	cfg.SnapshotCatchUpEntries = 1000
	cfg.ExperimentalSnapshotCatchUpEntries = 1000
	cfg.TickMs = 50
	cfg.ElectionMs = 500
	cfg.UnsafeNoFsync = true
	cfg.EnableGRPCGateway = false
}

// freePort returns a loopback port that was free a moment ago, outside the
// ephemeral range (internal/runtime/freeport).
func freePort() (string, error) {
	p, err := freeport.Pick("127.0.0.1")
	if err != nil {
		return "", fmt.Errorf("embedetcd: free port: %w", err)
	}
	return strconv.Itoa(p), nil
}

// quietCore logs errors only, and nothing while the server is being stopped.
type quietCore struct {
	zapcore.Core
	stopping *atomic.Bool
}

func (c *quietCore) With(fields []zapcore.Field) zapcore.Core {
	return &quietCore{Core: c.Core.With(fields), stopping: c.stopping}
}

func (c *quietCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.stopping.Load() || !c.Enabled(e.Level) {
		return ce
	}
	return ce.AddCore(e, c)
}
