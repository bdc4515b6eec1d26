package zcluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/cluster"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/internal/runtime/httpserve"
	"github.com/zcluster/zcluster/internal/tools/metrics"
	"github.com/zcluster/zcluster/registry"
	"github.com/zcluster/zcluster/relay"
	"github.com/zcluster/zcluster/session"
	"github.com/zcluster/zcluster/web"
)

const (
	// startTimeout bounds how long a node may take to join the cluster.
	startTimeout = 30 * time.Second
	// shutdownTimeout bounds a node's clean stop after SIGINT or SIGTERM.
	shutdownTimeout = 15 * time.Second
)

// nodeKind says which flags a node command has and how its id defaults.
type nodeKind int

const (
	kindGate nodeKind = iota
	kindBackend
)

func (k nodeKind) String() string {
	if k == kindGate {
		return "gate"
	}
	return "backend"
}

// nodeFlags holds the flags of the gate and backend commands.
type nodeFlags struct {
	id         string
	listen     string // gate only
	maxFrame   int    // gate only
	group      string // backend only
	relay      string
	advertise  string
	etcd       string
	etcdPrefix string
	// redisPrefix starts every Redis key of the cluster.
	redisPrefix string
	redis       string
	secret      string
	insecure    bool
	ttl         time.Duration
	sessionTTL  time.Duration
	app         string
	httpAddr    string
	pprof       bool
	config      string
	// apps are the binary's applications, for --app.
	apps *appSet
	// gate only: client port limits (issue 9)
	maxInflight  int
	loginTimeout time.Duration
	idleTimeout  time.Duration
	maxConns     int
	clientRate   float64
	// backend only: dispatch bounds (backend.Config)
	workers, sessionQueue, sessionQueueBytes, queueBytes, maxCalls int
	// TLS (docs/security.md)
	tlsCert, tlsKey    string // gate only: client listener
	wsListen           string // gate only
	wsPath             string // gate only
	wsOrigins          string // gate only: comma list
	kcpListen          string // gate only
	relayTLSCert       string
	relayTLSKey        string
	relayTLSCA         string
	relayTLSServerName string

	// reliable inbox (issue 14)
	inboxMax int
	inboxTTL time.Duration
}

// bindNodeFlags defines the flags of a node of kind on fs, with defaults
// taken from the gate and backend packages, and names each flag's
// environment variable in its usage text.
func bindNodeFlags(fs *pflag.FlagSet, f *nodeFlags, kind nodeKind) {
	gd, bd := gate.DefaultConfig(), backend.DefaultConfig()
	if kind == kindGate {
		fs.StringVar(&f.id, "id", "", "node id, unique in the cluster (default gate-<hostname>-<4 random hex>, new at every start)")
		fs.StringVar(&f.listen, "listen", gd.ClientListen, "address clients connect to, host:port")
		fs.StringVar(&f.relay, "relay", gd.RelayListen, "relay address other nodes connect to, host:port")
		fs.IntVar(&f.maxFrame, "max-frame", gd.MaxFrame, "largest client frame payload in bytes; a bigger frame closes the connection")
		fs.IntVar(&f.maxInflight, "max-inflight", gd.MaxInflight, "forwarded requests one client connection may have unanswered; past it the gate stops reading that connection until answers come back")
		fs.DurationVar(&f.loginTimeout, "login-timeout", gd.LoginTimeout, "close a client connection that has not logged in by then (msgID 9 \"login timeout\"); 0 disables")
		fs.DurationVar(&f.idleTimeout, "idle-timeout", gd.IdleTimeout, "close a client connection that sent no byte for that long (msgID 9 \"idle\"); clients keep quiet connections open with heartbeat msgID 65534; 0 disables")
		fs.IntVar(&f.maxConns, "max-conns", gd.MaxConns, "client connections this gate accepts; past it a new one gets msgID 9 \"gate full\" and /readyz reports not ready")
		fs.Float64Var(&f.clientRate, "client-rate", 0, "messages per second one client connection may send (token bucket, one second of burst); over it a frame gets the error frame \"rate limited\"; 0 is no limit")
		fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate for the client listener; with --tls-key, clients must connect with TLS")
		fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
		fs.StringVar(&f.wsListen, "ws-listen", "", "also accept WebSocket clients on this host:port (same frames, one or more per binary message; wss:// with --tls-cert) (default: off)")
		fs.StringVar(&f.wsPath, "ws-path", "/ws", "path of the WebSocket endpoint")
		fs.StringVar(&f.wsOrigins, "ws-origins", "", "browser origins allowed to open a WebSocket, comma list: https://game.example.com, a host name, or * for any (default: pages from the host name the client dialled)")
		fs.StringVar(&f.kcpListen, "kcp-listen", "", "also accept KCP (reliable UDP) clients on this UDP host:port, same byte stream as TCP (default: off)")
	} else {
		fs.StringVar(&f.id, "id", "", "node id, unique in the cluster (default <group>-<hostname>-<4 random hex>, new at every start)")
		fs.StringVar(&f.group, "group", "", "backend group this node serves, e.g. im or echo (required)")
		fs.StringVar(&f.relay, "relay", bd.RelayListen, "relay address gates and other backends connect to, host:port")
		fs.IntVar(&f.workers, "workers", bd.Workers, "client messages handled at once; one session's messages run in order, one at a time")
		fs.IntVar(&f.sessionQueue, "session-queue", bd.QueueLen, "messages one session may have waiting or running; past it the client gets a \"busy\" error frame")
		fs.IntVar(&f.sessionQueueBytes, "session-queue-bytes", bd.SessionQueueBytes, "payload bytes one session may have waiting or running (\"busy\" past it)")
		fs.IntVar(&f.queueBytes, "queue-bytes", bd.QueueBytes, "payload bytes all sessions together may have waiting or running (\"busy\" past it)")
		fs.IntVar(&f.maxCalls, "max-calls", bd.MaxCalls, "Call handlers run at once; past it a Call fails at once with \"busy\"")
	}
	fs.StringVar(&f.advertise, "advertise", "", "host other nodes dial to reach this node (default: the listen host, or the first non-loopback address if that is a wildcard)")
	fs.StringVar(&f.etcd, "etcd", "127.0.0.1:2379", "etcd endpoints, comma list (http:// is added when no scheme is given)")
	fs.StringVar(&f.etcdPrefix, "etcd-prefix", gd.Prefix, "etcd key prefix")
	fs.StringVar(&f.redisPrefix, "redis-prefix", session.DefaultPrefix, "Redis key prefix; two clusters sharing one Redis need different prefixes (every node of a cluster the same)")
	fs.StringVar(&f.redis, "redis", "127.0.0.1:6379", "Redis address host:port; a comma list means several addresses (Redis Cluster)")
	fs.StringVar(&f.secret, "secret", "", "cluster secret that authenticates relay links (required unless --insecure; prefer the environment variable: command lines are visible to other users)")
	fs.BoolVar(&f.insecure, "insecure", false, "development only: allow relay links without a secret")
	fs.StringVar(&f.relayTLSCert, "relay-tls-cert", "", "PEM certificate of this node's relay listener; with --relay-tls-key, relay links run over TLS (all nodes must agree)")
	fs.StringVar(&f.relayTLSKey, "relay-tls-key", "", "PEM private key of --relay-tls-cert")
	fs.StringVar(&f.relayTLSCA, "relay-tls-ca", "", "PEM CA certificates that peers' relay certificates must chain to (default: the system roots)")
	fs.StringVar(&f.relayTLSServerName, "relay-tls-server-name", "", "name checked in peers' relay certificates (default: the host of each peer's relay address)")
	fs.DurationVar(&f.ttl, "ttl", gd.TTL, "etcd lease TTL: how long a crashed node stays listed")
	fs.DurationVar(&f.sessionTTL, "session-ttl", gd.SessionTTL, "Redis session record TTL, refreshed every third of it")
	fs.IntVar(&f.inboxMax, "inbox-max", gd.InboxMax, "reliable messages kept per user inbox (backend.Deliver); older ones are trimmed and a resume from before them answers gap")
	fs.DurationVar(&f.inboxTTL, "inbox-ttl", gd.InboxTTL, "how long a reliable message is kept in a user's inbox")
	fs.StringVar(&f.app, "app", f.apps.defaultName(), "application whose handlers the node runs ("+f.apps.names()+")")
	fs.StringVar(&f.httpAddr, "http", "", "serve /metrics (Prometheus), /healthz and /readyz on this host:port (default: off)")
	fs.BoolVar(&f.pprof, "pprof", false, "also serve /debug/pprof/ on --http")
	fs.StringVar(&f.config, configFlag, "", "YAML file whose keys are these flags' names (see below); flags and ZC_* variables win over it")
	annotateEnv(fs)
}

// check validates the flags that need no network, and fills in a default id.
func (f *nodeFlags) check(kind nodeKind) error {
	if kind == kindBackend && f.group == "" {
		return errors.New("--group (or ZC_GROUP) is required for a backend, e.g. --group im")
	}
	if f.secret == "" && !f.insecure {
		return errors.New("--secret (or ZC_SECRET) is required; --insecure runs without one, for development only")
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if kind == kindGate {
		if err := f.checkClientLimits(); err != nil {
			return err
		}
	}
	if kind == kindGate && (f.wsPath == "" || f.wsPath[0] != '/') {
		return fmt.Errorf("--ws-path %q: must start with /", f.wsPath)
	}
	if (f.relayTLSCert == "") != (f.relayTLSKey == "") {
		return errors.New("--relay-tls-cert and --relay-tls-key go together")
	}
	if f.relayTLSCert == "" && (f.relayTLSCA != "" || f.relayTLSServerName != "") {
		return errors.New("--relay-tls-ca and --relay-tls-server-name need --relay-tls-cert and --relay-tls-key")
	}
	if f.ttl < time.Second {
		return fmt.Errorf("--ttl %v: must be at least 1s", f.ttl)
	}
	if f.sessionTTL < time.Second {
		return fmt.Errorf("--session-ttl %v: must be at least 1s", f.sessionTTL)
	}
	if kind == kindBackend {
		for _, v := range []struct {
			name string
			n    int
		}{{"workers", f.workers}, {"session-queue", f.sessionQueue}, {"session-queue-bytes", f.sessionQueueBytes}, {"queue-bytes", f.queueBytes}, {"max-calls", f.maxCalls}} {
			if v.n < 1 {
				return fmt.Errorf("--%s %d: must be at least 1", v.name, v.n)
			}
		}
	}
	if f.inboxMax < 1 {
		return fmt.Errorf("--inbox-max %d: must be at least 1", f.inboxMax)
	}
	if f.inboxTTL < time.Second {
		return fmt.Errorf("--inbox-ttl %v: must be at least 1s", f.inboxTTL)
	}
	if _, err := f.apps.lookup(f.app); err != nil {
		return err
	}
	if f.id == "" {
		prefix := "gate"
		if kind == kindBackend {
			prefix = f.group
		}
		f.id = defaultID(prefix)
	}
	return nil
}

// checkClientLimits validates a gate's client port limits.
func (f *nodeFlags) checkClientLimits() error {
	switch {
	case f.maxInflight < 1:
		return fmt.Errorf("--max-inflight %d: must be at least 1", f.maxInflight)
	case f.maxConns < 1:
		return fmt.Errorf("--max-conns %d: must be at least 1", f.maxConns)
	case f.loginTimeout < 0:
		return fmt.Errorf("--login-timeout %v: must be positive, or 0 to disable", f.loginTimeout)
	case f.idleTimeout < 0:
		return fmt.Errorf("--idle-timeout %v: must be positive, or 0 to disable", f.idleTimeout)
	case !(f.clientRate >= 0) || math.IsInf(f.clientRate, 0):
		return fmt.Errorf("--client-rate %v: want messages per second, or 0 for no limit", f.clientRate)
	}
	return nil
}

// node is the configuration every node kind shares, from the flags.
func (f *nodeFlags) node(st *stores, log *slog.Logger) cluster.Node {
	return cluster.Node{
		ID:          f.id,
		RelayListen: f.relay,
		Advertise:   f.advertise,
		Etcd:        st.etcd,
		Redis:       st.redis,
		Secret:      []byte(f.secret),
		Insecure:    f.insecure,
		Prefix:      f.etcdPrefix,
		RedisPrefix: f.redisPrefix,
		TTL:         f.ttl,
		SessionTTL:  f.sessionTTL,
		RelayTLS:    f.relayTLS(),
		Version:     version(),
		Logger:      log,
		InboxMax:    f.inboxMax,
		InboxTTL:    f.inboxTTL,
	}
}

// relayTLS returns the relay TLS settings, or nil when relay TLS is off.
func (f *nodeFlags) relayTLS() *relay.TLSConfig {
	if f.relayTLSCert == "" {
		return nil
	}
	return &relay.TLSConfig{CertFile: f.relayTLSCert, KeyFile: f.relayTLSKey, CAFile: f.relayTLSCA, ServerName: f.relayTLSServerName}
}

// defaultID returns "<prefix>-<hostname>-<4 random hex digits>": unique per
// start, recognisable in etcd.
func defaultID(prefix string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	var b [2]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return prefix + "-" + host + "-" + hex.EncodeToString(b[:])
}

func newGateCmd(c *cli) *cobra.Command {
	f := &nodeFlags{apps: &c.apps}
	cmd := &cobra.Command{
		Use:   "gate",
		Short: "Run a gate: the client-facing node that routes messages to backend groups",
		Example: `  zcluster gate --id gate-1 --listen 127.0.0.1:18001 --relay 127.0.0.1:19001 \
    --etcd 127.0.0.1:2379 --redis 127.0.0.1:6379 --secret S`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runGate(cmd.Context(), f)
		},
	}
	bindNodeFlags(cmd.Flags(), f, kindGate)
	cmd.Long = cmd.Short + ".\n" + configHelp(cmd.Flags(), "log-level", "log-format")
	return cmd
}

func newBackendCmd(c *cli) *cobra.Command {
	f := &nodeFlags{apps: &c.apps}
	cmd := &cobra.Command{
		Use:   "backend",
		Short: "Run a backend node serving one group of msgIDs",
		Example: `  zcluster backend --id im-1 --group im --app chat --relay 127.0.0.1:19101 \
    --etcd 127.0.0.1:2379 --redis 127.0.0.1:6379 --secret S`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runBackend(cmd.Context(), f)
		},
	}
	bindNodeFlags(cmd.Flags(), f, kindBackend)
	cmd.Long = cmd.Short + ".\n" + configHelp(cmd.Flags(), "log-level", "log-format")
	return cmd
}

// runGate runs a gate until ctx ends, then shuts it down.
func (c *cli) runGate(ctx context.Context, f *nodeFlags) error {
	if err := f.check(kindGate); err != nil {
		return err
	}
	app, _ := f.apps.lookup(f.app)
	m := f.newMetrics(registry.GateGroup)
	st, err := openStoresWith(f.etcd, f.redis, m)
	if err != nil {
		return err
	}
	defer st.Close()
	var obs gate.Observer
	if m != nil {
		obs = m.Gate()
	}
	g, err := gate.New(gate.Config{
		Node:         f.node(st, c.log),
		ClientListen: f.listen,
		MaxFrame:     f.maxFrame,
		MaxInflight:  f.maxInflight,
		LoginTimeout: disabledIfZero(f.loginTimeout),
		IdleTimeout:  disabledIfZero(f.idleTimeout),
		MaxConns:     f.maxConns,
		ClientRate:   f.clientRate,
		TLSCertFile:  f.tlsCert,
		TLSKeyFile:   f.tlsKey,
		WSListen:     f.wsListen,
		WSPath:       f.wsPath,
		WSOrigins:    splitList(f.wsOrigins),
		KCPListen:    f.kcpListen,
		Observer:     obs,
	})
	if err != nil {
		return err
	}
	if err := app.setupGate(g); err != nil {
		return err
	}
	var endpoint atomic.Pointer[web.Endpoint] // set once g has started
	var pages map[string]http.Handler
	if f.wsListen != "" {
		pages = map[string]http.Handler{chatPagePrefix: web.Handler(chatPagePrefix, func() []web.Endpoint {
			if e := endpoint.Load(); e != nil {
				return []web.Endpoint{*e}
			}
			return nil
		})}
	}
	return c.serveNode(ctx, f, st, node{
		web:      pages,
		start:    g.Start,
		shutdown: g.Shutdown,
		started: func() {
			if m != nil {
				m.SetGate(g)
			}
			c.log.Info("gate running", "id", g.ID(), "app", f.app, "clients", g.ClientAddr(), "relay", g.RelayAddr())
			if u := g.WSURL(); u != "" {
				c.log.Info("websocket clients", "id", g.ID(), "url", u, "origins", originsText(f.wsOrigins))
				if e, ok := web.EndpointOf(g.ID(), u); ok {
					endpoint.Store(&e)
				}
			}
			if a := g.KCPAddr(); a != "" {
				c.log.Info("kcp clients", "id", g.ID(), "addr", a)
			}
		},
		ready: readiness(g.Registered, g.PingRedis, func() error {
			if g.Full() {
				return fmt.Errorf("gate full: %d client connections (--max-conns)", f.maxConns)
			}
			return nil
		}),
		metrics: m,
	})
}

// disabledIfZero maps a flag's 0 ("disabled") to the negative duration
// the gate's Config takes for it (its zero means "the default").
func disabledIfZero(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// runBackend runs a backend until ctx ends, then shuts it down.
func (c *cli) runBackend(ctx context.Context, f *nodeFlags) error {
	if err := f.check(kindBackend); err != nil {
		return err
	}
	app, _ := f.apps.lookup(f.app)
	m := f.newMetrics(f.group)
	st, err := openStoresWith(f.etcd, f.redis, m)
	if err != nil {
		return err
	}
	defer st.Close()
	var obs backend.Observer
	if m != nil {
		obs = m.Backend()
	}
	b, err := backend.New(backend.Config{
		Node:              f.node(st, c.log),
		Group:             f.group,
		Observer:          obs,
		Workers:           f.workers,
		QueueLen:          f.sessionQueue,
		SessionQueueBytes: f.sessionQueueBytes,
		QueueBytes:        f.queueBytes,
		MaxCalls:          f.maxCalls,
	})
	if err != nil {
		return err
	}
	if err := app.setupBackend(b); err != nil {
		return err
	}
	return c.serveNode(ctx, f, st, node{
		start:    b.Start,
		shutdown: b.Shutdown,
		started: func() {
			if m != nil {
				m.SetBackend(b)
			}
			c.log.Info("backend running", "id", b.ID(), "group", b.Group(), "app", f.app, "relay", b.RelayAddr())
		},
		ready:   readiness(b.Registered, b.PingRedis),
		metrics: m,
	})
}

// node is the lifecycle of a gate or a backend.
type node struct {
	start    func(context.Context) error
	shutdown func(context.Context) error
	started  func()
	// ready says why the started node cannot serve, or nil (for /readyz).
	ready func(context.Context) error
	// metrics is nil unless --http is set.
	metrics *metrics.Metrics
	// web, if set, is served on --http too (the chat page of a gate with
	// a WebSocket listener), by ServeMux pattern.
	web map[string]http.Handler
}

// serveNode checks that etcd and Redis answer, starts n, waits for ctx to
// end (SIGINT or SIGTERM) and shuts n down within shutdownTimeout.
func (c *cli) serveNode(ctx context.Context, f *nodeFlags, st *stores, n node) error {
	if f.insecure {
		c.log.Warn("running with --insecure: relay links are not authenticated; for development only")
	}
	var phase atomic.Int32 // phaseStarting, phaseRunning, phaseStopping
	if f.httpAddr != "" {
		hs, err := httpserve.Start(f.httpAddr, "--http", n.metrics.Handler(metrics.HandlerOptions{
			Ready: func(ctx context.Context) error {
				switch phase.Load() {
				case phaseStarting:
					return errors.New("starting")
				case phaseStopping:
					return errors.New("stopping")
				}
				return n.ready(ctx)
			},
			Pprof: f.pprof,
			Extra: n.web,
		}), c.log)
		if err != nil {
			return err
		}
		defer hs.Close()
		c.log.Info("http serving", "id", f.id, "addr", hs.Addr(), "pprof", f.pprof)
		if n.web != nil {
			c.log.Info("chat page", "id", f.id, "url", "http://"+hs.Addr()+chatPagePrefix)
		}
	}
	if err := st.check(ctx, f.etcdPrefix); err != nil {
		return err
	}
	startCtx, cancel := context.WithTimeout(ctx, startTimeout)
	err := n.start(startCtx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted while starting %s", f.id)
		}
		return err
	}
	n.started()
	phase.Store(phaseRunning)
	<-ctx.Done()
	phase.Store(phaseStopping)
	c.log.Info("stopping", "id", f.id, "timeout", shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := n.shutdown(sctx); err != nil {
		return fmt.Errorf("%s: shutdown: %w", f.id, err)
	}
	if sctx.Err() != nil {
		return fmt.Errorf("%s: shutdown did not finish within %v", f.id, shutdownTimeout)
	}
	c.log.Debug("stopped", "id", f.id) // the gate or backend logged its own "stopped" line
	return nil
}

// Phases of a node, for /readyz.
const (
	phaseStarting int32 = iota
	phaseRunning
	phaseStopping
)

// newMetrics returns the node's metrics when --http is set, else nil. Every
// series carries the node id (node) and its group (node_group).
func (f *nodeFlags) newMetrics(group string) *metrics.Metrics {
	if f.httpAddr == "" {
		return nil
	}
	labels := prometheus.Labels{"node": f.id, "node_group": group}
	if group == registry.GateGroup {
		return metrics.NewGate(labels)
	}
	return metrics.NewBackend(labels)
}

// readiness is a started node's /readyz check: registered in etcd right
// now, every extra check passes (a gate is not full), and Redis answers
// PING.
func readiness(registered func() bool, pingRedis func(context.Context) error, extra ...func() error) func(context.Context) error {
	return func(ctx context.Context) error {
		if !registered() {
			return errors.New("not registered in etcd")
		}
		for _, check := range extra {
			if err := check(); err != nil {
				return err
			}
		}
		if err := pingRedis(ctx); err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		return nil
	}
}

// chatPagePrefix is where a gate's --http server serves the chat page
// (web/chat.html) and web/zcluster.js when it has a WebSocket listener.
const chatPagePrefix = "/chat/"

// originsText describes --ws-origins for the startup log.
func originsText(origins string) string {
	if len(splitList(origins)) == 0 {
		return "same host name"
	}
	return origins
}
