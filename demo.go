package zcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/zctest"
)

// newDemoCmd is the demo of the binary's default application: a whole
// cluster in this process, serving until interrupted.
func newDemoCmd(c *cli) *cobra.Command {
	var (
		once  bool
		gates int
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Start a whole cluster of this application in this process and serve until interrupted",
		Long: `demo starts an embedded etcd, a Redis (a redis-server child when one is on
PATH, else an in-process miniredis), --gates gates and one backend of each
group of the application, all on 127.0.0.1 with free ports, prints the
gates' client addresses and serves until SIGINT or SIGTERM. With --once it
stops as soon as the cluster is up (a smoke test of the application's
setup).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runAppDemo(cmd.Context(), once, gates)
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&once, "once", false, "stop as soon as the cluster is up")
	fs.IntVar(&gates, "gates", 2, "number of gates (1 to 99)")
	annotateEnv(fs)
	return cmd
}

// runAppDemo runs the default application's demo cluster.
func (c *cli) runAppDemo(ctx context.Context, once bool, gates int) error {
	if gates < 1 || gates > 99 {
		return fmt.Errorf("--gates %d: want 1 to 99", gates)
	}
	app, err := (&c.apps).lookup((&c.apps).defaultName())
	if err != nil {
		return err
	}
	if len(app.Groups) == 0 {
		return errors.New("the application lists no backend groups (App.Groups): the demo does not know which backends to start")
	}
	level, err := parseLevel(c.logLevel)
	if err != nil {
		return err
	}
	h, err := newLogHandler(c.stderr, c.logFormat, max(level, slog.LevelWarn))
	if err != nil {
		return err
	}
	out := func(format string, args ...any) { fmt.Fprintf(c.stdout, format+"\n", args...) }
	cl, err := zctest.New(ctx, zctest.Config{
		Gate:    func(g *gate.Gate) error { return app.setupGate(g) },
		Backend: func(b *backend.Backend) error { return app.setupBackend(b) },
		Gates:   gates,
		Groups:  app.Groups,
		Logger:  slog.New(h),
		Version: version(),
		Out:     out,
	})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	var parts []string
	for _, g := range cl.Gates() {
		parts = append(parts, fmt.Sprintf("%s (clients %s)", g.ID(), g.ClientAddr()))
	}
	for _, b := range cl.Backends() {
		parts = append(parts, fmt.Sprintf("%s (%s)", b.ID(), b.Group()))
	}
	out("nodes: %s", strings.Join(parts, ", "))
	if !once && ctx.Err() == nil {
		out("serving %s; stop with Ctrl-C", app.Name)
		<-ctx.Done()
	}
	c.log.Info("stopping the demo cluster")
	return cl.Close()
}
