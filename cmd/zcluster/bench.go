package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/zcluster/zcluster/internal/tools/bench"
)

// benchOptions are the flags of the bench command.
type benchOptions struct {
	scenario   string
	compare    string
	conns      int
	window     int
	payload    int
	rate       float64
	duration   time.Duration
	warmup     time.Duration
	gates      string
	redis      string
	nGates     int
	backends   int
	json       bool
	cpuprofile string
	memprofile string
}

// errLost is returned when a run lost messages.
var errLost = errors.New("messages were lost")

func newBenchCmd(c *cli) *cobra.Command {
	var o benchOptions
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure throughput, latency and cost: stock zinx, plain Go, and the cluster",
		Long: `bench is a load generator that speaks stock zinx frames. Scenarios:

  direct     a stock zinx echo server (router + SendMsg) started in this process
  plain      a plain Go bufio echo server that flushes when its input drains
  echo       client -> gate -> backend (msgID 4) -> gate -> client
  ws-echo    the same echo over the gate's WebSocket listener (one binary
             message per flush of the window's requests)
  kcp-echo   the same echo over the gate's KCP (reliable UDP) listener
  send       user to user (msgID 2) across two gates; deliveries (100) counted
  broadcast  one sender; msgID 5 fanned out (101) to every session on every gate
  reliable   as send with the reliable msgID 6 (a deferred answer and
             backend.DeliverAsync: stored in the recipient's Redis inbox, then
             pushed, then acked); receivers resume first and count each offset
             once, in order
  room       --conns sessions in one room over the gates; one sender's msgID 21
             pushed to the room (121), one relay envelope per gate with members
  idle       memory per idle connection: a gate vs a bare zinx server (--conns,
             default here 9000: client and server share this process's
             open-file limit)

echo, ws-echo, kcp-echo, send, broadcast and reliable start a cluster in this process (embedded etcd, a
redis-server child or miniredis, gates and im backends running the chat app)
unless --gates names running gates (for ws-echo: their ws:// URLs; for kcp-echo: their KCP host:port). --compare direct,echo runs scenarios back
to back and prints "ratio echo/direct: X".

Printed per run: msgs/s (answers or deliveries in the measured interval),
p50/p99/p999 latency, CPU seconds of this process per 100k messages (servers
or cluster nodes plus the load generator, from getrusage) and without the load
generator's share (its goroutines carry a pprof label; a CPU profile of the
measured interval gives their share), heap allocations and system calls per
message, Redis commands per delivered message (INFO commandstats), and
sent/answered/errors/lost.
The exit status is 1 if any message was lost.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runBench(cmd, o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.scenario, "scenario", "echo", "direct, plain, echo, ws-echo, kcp-echo, send, broadcast, room, reliable or idle")
	fs.StringVar(&o.compare, "compare", "", "comma list of scenarios to run back to back, e.g. plain,direct,echo (overrides --scenario)")
	fs.IntVar(&o.conns, "conns", 50, "client connections (send: sender/receiver pairs; broadcast: sessions)")
	fs.IntVar(&o.window, "window", 8, "requests in flight per sending connection")
	fs.IntVar(&o.payload, "payload", 64, "payload bytes per request")
	fs.Float64Var(&o.rate, "rate", 0, "cap on requests per second over all connections (0: as fast as the window allows)")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "measured interval per scenario")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured load before the interval")
	fs.StringVar(&o.gates, "gates", "", "comma list of running gates' client addresses (default: start a cluster in-process)")
	fs.StringVar(&o.redis, "redis", "", "with --gates: the Redis whose INFO commandstats to read")
	fs.IntVar(&o.nGates, "cluster-gates", 0, "gates of the in-process cluster (default 1 for echo, 2 for send, broadcast and reliable)")
	fs.IntVar(&o.backends, "backends", 1, "im backends of the in-process cluster")
	fs.BoolVar(&o.json, "json", false, "print JSON instead of a table")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a pprof CPU profile of the whole invocation to this file")
	fs.StringVar(&o.memprofile, "memprofile", "", "write a pprof allocation profile to this file at the end")
	annotateEnv(fs)
	return cmd
}

func (c *cli) runBench(cmd *cobra.Command, o benchOptions) error {
	if strings.TrimSpace(o.scenario) == "idle" && o.compare == "" {
		return c.runIdle(cmd, o)
	}
	scenarios := []string{strings.TrimSpace(o.scenario)}
	if o.compare != "" {
		scenarios = splitList(o.compare)
	}
	if len(scenarios) == 0 {
		return errors.New("--compare: no scenario given")
	}
	cfg := bench.Config{
		Conns: o.conns, Window: o.window, Payload: o.payload,
		Duration: o.duration, Warmup: o.warmup, Rate: o.rate,
		Gates: splitList(o.gates), Redis: o.redis,
		ClusterGates: o.nGates, Backends: o.backends,
		Logger: c.log.With("component", "bench-cluster"),
	}
	if o.warmup == 0 {
		cfg.Warmup = time.Nanosecond
	}
	if c.log.Enabled(cmd.Context(), slog.LevelInfo) && !c.log.Enabled(cmd.Context(), slog.LevelDebug) {
		// The cluster's info lines (nodes joining, sessions) are noise here.
		cfg.Logger = slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := bench.RunAll(cmd.Context(), cfg, scenarios)
	if err != nil {
		return err
	}
	if o.memprofile != "" {
		f, err := os.Create(o.memprofile)
		if err != nil {
			return fmt.Errorf("--memprofile: %w", err)
		}
		werr := pprof.Lookup("allocs").WriteTo(f, 0)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("--memprofile: %w", werr)
		}
	}
	if o.json {
		err = rep.WriteJSON(c.stdout)
	} else {
		err = rep.WriteText(c.stdout)
	}
	if err != nil {
		return err
	}
	if n := rep.Lost(); n != 0 {
		return fmt.Errorf("%w: %d", errLost, n)
	}
	return nil
}

// runIdle measures idle connection memory: a gate against bare zinx.
func (c *cli) runIdle(cmd *cobra.Command, o benchOptions) error {
	n := o.conns
	if !cmd.Flags().Changed("conns") {
		n = 9000
	}
	rep, err := bench.Idle(cmd.Context(), n)
	if err != nil {
		return err
	}
	if o.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	for _, r := range rep.Results {
		fmt.Fprintf(c.stdout, "%-17s %d idle conns: RSS %.0f B/conn, heap+stacks %.0f B/conn (client side subtracted)\n", r.Target, r.Conns, r.RSSPerConn, r.InUsePerConn)
	}
	fmt.Fprintf(c.stdout, "ratio rss gate/zinx: %.2f\n", rep.Ratio)
	return nil
}
