package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/internal/embedetcd"
	"github.com/zcluster/zcluster/internal/redisrun"
	"github.com/zcluster/zcluster/registry"
)

const (
	// demoTTL is the etcd lease TTL of the demo's nodes.
	demoTTL = 5 * time.Second
	// demoReadyTimeout bounds the wait until every node sees every other.
	demoReadyTimeout = 10 * time.Second
	// Port offsets from --base-port.
	gateRelayOffset   = 100
	backendPortOffset = 200
	gateWSOffset      = 300
	webPortOffset     = 400
	maxDemoGates      = 99
)

// demoOptions are the flags of the demo command.
type demoOptions struct {
	once     bool
	gates    int
	basePort int
}

func (o demoOptions) check() error {
	if o.gates < 2 || o.gates > maxDemoGates {
		return fmt.Errorf("--gates %d: want 2 to %d (the tour uses two)", o.gates, maxDemoGates)
	}
	if o.basePort != 0 && (o.basePort < 1 || o.basePort+webPortOffset > 65535) {
		return fmt.Errorf("--base-port %d: want 0 (random ports) or 1 to %d", o.basePort, 65535-webPortOffset)
	}
	return nil
}

// addr returns the listen address at offset from the base port, or a random
// loopback port when no base port is set.
func (o demoOptions) addr(offset int) string {
	port := 0
	if o.basePort != 0 {
		port = o.basePort + offset
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}

func newDemoCmd(c *cli) *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Start a whole cluster in this process, run a scripted tour, then keep serving",
		Long: `demo starts an embedded etcd, a Redis (a redis-server child when one is on
PATH, else an in-process miniredis), gates gate-1..gate-N, backends im-1,
im-2 (group im) and echo-1 (group echo) running the chat app, all on
127.0.0.1. It then runs a scripted tour with real client connections,
prints PASS or FAIL per step, and keeps serving until SIGINT or SIGTERM
(join it with "zcluster chat"). With --once it stops after the tour and
exits 0 only if every step passed.

Every gate also accepts WebSocket clients, and a chat page for browsers
(web/chat.html, using web/zcluster.js) is served on its own port; the demo
prints its URL.

With --base-port P the gates listen for clients on P, P+1, ..., their relays
on P+100, P+101, ..., and the backends' relays on P+200, P+201, P+202; the
gates' WebSocket endpoints are on P+300, P+301, ... and the chat page on
P+400.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			results, err := c.runDemo(cmd.Context(), o)
			if err != nil {
				return err
			}
			if n := passed(results); o.once && n != len(results) {
				return fmt.Errorf("tour failed: %d of %d steps passed", n, len(results))
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&o.once, "once", false, "stop after the tour; exit 0 only if every step passed")
	fs.IntVar(&o.gates, "gates", 2, "number of gates")
	fs.IntVar(&o.basePort, "base-port", 0, "first client port (0: random ports); see above for the others")
	annotateEnv(fs)
	return cmd
}

// runDemo starts the demo cluster, runs the tour and prints its results to
// c.stdout, then, unless o.once, serves until ctx ends. It stops the cluster
// before returning the tour's results. Node logs below warn are silenced
// during the tour (and, with --once, for good).
func (c *cli) runDemo(ctx context.Context, o demoOptions) ([]stepResult, error) {
	level, err := parseLevel(c.logLevel)
	if err != nil {
		return nil, err
	}
	nodeLevel := new(slog.LevelVar)
	nodeLevel.Set(max(level, slog.LevelWarn))
	h, err := newLogHandler(c.stderr, c.logFormat, nodeLevel)
	if err != nil {
		return nil, err
	}
	nodeLog := slog.New(h)

	d, err := startDemo(ctx, o, c.stdout, nodeLog)
	if err != nil {
		return nil, err
	}
	g1, g2 := d.gates[0], d.gates[1]
	results := runTour(ctx,
		tourGate{ID: g1.ID(), Addr: g1.ClientAddr()},
		tourGate{ID: g2.ID(), Addr: g2.ClientAddr()},
		c.stdout)
	fmt.Fprintf(c.stdout, "tour: %d/%d passed\n", passed(results), len(results))

	if !o.once && ctx.Err() == nil {
		fmt.Fprintln(c.stdout, "serving; clients connect to:")
		for _, g := range d.gates {
			fmt.Fprintf(c.stdout, "  %s %s\n", g.ID(), g.ClientAddr())
		}
		for _, g := range d.gates {
			fmt.Fprintf(c.stdout, "  %s %s (websocket)\n", g.ID(), g.WSURL())
		}
		fmt.Fprintf(c.stdout, "join with: zcluster chat --gate %s --user NAME\n", g1.ClientAddr())
		fmt.Fprintf(c.stdout, "  (or: go run ./cmd/zcluster chat --gate %s --user NAME)\n", g1.ClientAddr())
		fmt.Fprintf(c.stdout, "  or over websocket: zcluster chat --ws %s --user NAME\n", g2.WSURL())
		fmt.Fprintf(c.stdout, "chat in a browser: open %s\n", d.pageURL())
		fmt.Fprintln(c.stdout, "stop with Ctrl-C")
		nodeLevel.Set(level)
		<-ctx.Done()
	}
	c.log.Info("stopping the demo cluster", "timeout", shutdownTimeout)
	if err := d.close(); err != nil {
		return results, err
	}
	c.log.Info("demo cluster stopped")
	return results, nil
}

// demoCluster is a whole cluster in this process.
type demoCluster struct {
	etcd     *embedetcd.Server
	etcdDir  string
	redis    *redisrun.Server
	gates    []*gate.Gate
	backends []*backend.Server
	stores   []*stores
	web      *demoWeb
}

// startDemo starts etcd, Redis, o.gates gates and the backends im-1, im-2
// and echo-1, and waits until every node sees all the others. What it
// started is printed to out. On error everything started is stopped.
func startDemo(ctx context.Context, o demoOptions, out io.Writer, nodeLog *slog.Logger) (_ *demoCluster, err error) {
	d := &demoCluster{}
	defer func() {
		if err != nil {
			_ = d.close()
			if ctx.Err() != nil {
				err = fmt.Errorf("demo interrupted while starting: %w", err)
			}
		}
	}()

	ectx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if d.etcdDir, err = os.MkdirTemp("", "zcluster-demo-etcd-"); err != nil {
		return nil, fmt.Errorf("etcd data dir: %w", err)
	}
	if d.etcd, err = embedetcd.Start(ectx, d.etcdDir); err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	fmt.Fprintf(out, "etcd: embedded, %s\n", strings.Join(d.etcd.Endpoints(), ","))

	d.redis, err = redisrun.StartProcess(ectx)
	switch {
	case err == nil:
		fmt.Fprintf(out, "redis: %s on %s\n", d.redis.Kind(), d.redis.Addr())
	case errors.Is(err, redisrun.ErrNoRedisServer):
		if d.redis, err = redisrun.StartMemory(); err != nil {
			return nil, err
		}
		fmt.Fprintf(out, "redis: in-process miniredis on %s (install redis-server for a real one)\n", d.redis.Addr())
	default:
		return nil, fmt.Errorf("redis: %w", err)
	}

	var secret [32]byte
	_, _ = rand.Read(secret[:]) // never fails (crypto/rand)
	base := nodeBase{
		etcd: strings.Join(d.etcd.Endpoints(), ","), redis: d.redis.Addr(),
		secret: secret[:], log: nodeLog,
	}
	for i := range o.gates {
		g, err := d.startGate(ectx, base, fmt.Sprintf("gate-%d", i+1), o.addr(i), o.addr(gateRelayOffset+i), o.addr(gateWSOffset+i))
		if err != nil {
			return nil, err
		}
		d.gates = append(d.gates, g)
	}
	for i, nb := range []struct{ id, group string }{
		{"im-1", chat.GroupIM}, {"im-2", chat.GroupIM}, {"echo-1", chat.GroupEcho},
	} {
		b, err := d.startBackend(ectx, base, nb.id, nb.group, o.addr(backendPortOffset+i))
		if err != nil {
			return nil, err
		}
		d.backends = append(d.backends, b)
	}
	if err := d.waitReady(ectx, o.gates); err != nil {
		return nil, err
	}

	if d.web, err = startDemoWeb(o.addr(webPortOffset), d.gates, nodeLog); err != nil {
		return nil, err
	}
	parts := make([]string, 0, len(d.gates)+len(d.backends))
	for _, g := range d.gates {
		parts = append(parts, fmt.Sprintf("%s (clients %s, websocket %s)", g.ID(), g.ClientAddr(), g.WSURL()))
	}
	for _, b := range d.backends {
		parts = append(parts, fmt.Sprintf("%s (%s)", b.ID(), b.Group()))
	}
	fmt.Fprintf(out, "nodes: %s\n", strings.Join(parts, ", "))
	fmt.Fprintf(out, "chat page: %s\n", d.pageURL())
	return d, nil
}

// nodeBase is what every demo node shares.
type nodeBase struct {
	etcd, redis string
	secret      []byte
	log         *slog.Logger
}

// openStores gives each node its own clients, as separate processes have.
func (d *demoCluster) openStores(b nodeBase) (*stores, error) {
	st, err := openStores(b.etcd, b.redis)
	if err != nil {
		return nil, err
	}
	d.stores = append(d.stores, st)
	return st, nil
}

func (d *demoCluster) startGate(ctx context.Context, b nodeBase, id, listen, relayAddr, wsAddr string) (*gate.Gate, error) {
	st, err := d.openStores(b)
	if err != nil {
		return nil, err
	}
	g, err := gate.New(gate.Config{
		ID: id, ClientListen: listen, RelayListen: relayAddr, WSListen: wsAddr,
		Etcd: st.etcd, Redis: st.redis, Secret: b.secret,
		TTL: demoTTL, Version: version(), Logger: b.log,
	})
	if err != nil {
		return nil, err
	}
	chat.SetupGate(g)
	if err := g.Start(ctx); err != nil {
		return nil, err
	}
	return g, nil
}

func (d *demoCluster) startBackend(ctx context.Context, b nodeBase, id, group, relayAddr string) (*backend.Server, error) {
	st, err := d.openStores(b)
	if err != nil {
		return nil, err
	}
	s, err := backend.New(backend.Config{
		ID: id, Group: group, RelayListen: relayAddr,
		Etcd: st.etcd, Redis: st.redis, Secret: b.secret,
		TTL: demoTTL, Version: version(), Logger: b.log,
	})
	if err != nil {
		return nil, err
	}
	if err := chat.SetupBackend(s); err != nil {
		return nil, err
	}
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// demoNode is what waitReady needs of a gate or a backend.
type demoNode interface {
	ID() string
	Topology() *registry.Topology
}

// waitReady waits until every node sees all gates and backends in its
// topology, so the tour does not race the etcd watches.
func (d *demoCluster) waitReady(ctx context.Context, gates int) error {
	want := map[string]int{registry.GateGroup: gates, chat.GroupIM: 2, chat.GroupEcho: 1}
	var nodes []demoNode
	for _, g := range d.gates {
		nodes = append(nodes, g)
	}
	for _, b := range d.backends {
		nodes = append(nodes, b)
	}
	ctx, cancel := context.WithTimeout(ctx, demoReadyTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		lag := ""
		for _, n := range nodes {
			for group, w := range want {
				if got := len(n.Topology().Nodes(group)); got != w {
					lag = fmt.Sprintf("%s sees %d nodes in group %s, want %d", n.ID(), got, group, w)
				}
			}
		}
		if lag == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not ready after %v: %s", demoReadyTimeout, lag)
		case <-tick.C:
		}
	}
}

// close stops the gates (their clients are told why), then the backends,
// then Redis and etcd, and removes etcd's data. It reports a shutdown that
// did not finish within shutdownTimeout.
func (d *demoCluster) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, g := range d.gates {
		wg.Go(func() { _ = g.Shutdown(ctx) })
	}
	wg.Wait()
	if d.web != nil {
		d.web.close()
	}
	for _, b := range d.backends {
		wg.Go(func() { _ = b.Shutdown(ctx) })
	}
	wg.Wait()
	timedOut := ctx.Err() != nil
	for _, st := range d.stores {
		st.Close()
	}
	if d.redis != nil {
		d.redis.Close()
	}
	if d.etcd != nil {
		d.etcd.Close()
	}
	if d.etcdDir != "" {
		_ = os.RemoveAll(d.etcdDir)
	}
	if timedOut {
		return fmt.Errorf("demo cluster did not stop within %v", shutdownTimeout)
	}
	return nil
}
