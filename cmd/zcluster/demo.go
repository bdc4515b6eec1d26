package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/zctest"
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

// demoCluster is a whole cluster in this process (the public test kit's
// builder, zctest), and the chat page's web server.
type demoCluster struct {
	*zctest.Cluster
	gates    []*gate.Gate
	backends []*backend.Backend
	web      *demoWeb
}

// startDemo starts etcd, Redis, o.gates gates and the backends im-1, im-2
// and echo-1, and waits until every node sees all the others. What it
// started is printed to out. On error everything started is stopped.
func startDemo(ctx context.Context, o demoOptions, out io.Writer, nodeLog *slog.Logger) (_ *demoCluster, err error) {
	zc, err := zctest.New(ctx, zctest.Config{
		Gate:    func(g *gate.Gate) error { chat.SetupGate(g); return nil },
		Backend: chat.SetupBackend,
		TTL:     demoTTL,
		Logger:  nodeLog,
		Version: version(),
		Out:     func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) },
	})
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	d := &demoCluster{Cluster: zc}
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
	for i := range o.gates {
		ws := o.addr(gateWSOffset + i)
		g, err := zc.StartGate(ectx, fmt.Sprintf("gate-%d", i+1),
			zctest.Listen(o.addr(i)), zctest.RelayAt(o.addr(gateRelayOffset+i)),
			zctest.GateConfig(func(c *gate.Config) { c.WSListen = ws }))
		if err != nil {
			return nil, err
		}
		d.gates = append(d.gates, g)
	}
	for i, nb := range []struct{ id, group string }{
		{"im-1", chat.GroupIM}, {"im-2", chat.GroupIM}, {"echo-1", chat.GroupEcho},
	} {
		b, err := zc.StartBackend(ectx, nb.id, nb.group, zctest.RelayAt(o.addr(backendPortOffset+i)))
		if err != nil {
			return nil, err
		}
		d.backends = append(d.backends, b)
	}
	if err := zc.WaitReady(ectx, demoReadyTimeout); err != nil {
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

// close stops the chat page, the gates (their clients are told why), then
// the backends, then Redis and etcd, and removes etcd's data. It reports a
// shutdown that did not finish in time.
func (d *demoCluster) close() error {
	if d.web != nil {
		d.web.close()
	}
	return d.Close()
}
