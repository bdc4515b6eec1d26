package zcluster

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/zcluster/zcluster/internal/tools/topview"
	"github.com/zcluster/zcluster/session"
)

// readTimeout bounds one snapshot read of etcd and Redis.
const readTimeout = 10 * time.Second

// viewFlags are the flags of top and routes.
type viewFlags struct {
	etcd        string
	etcdPrefix  string
	redisPrefix string
	redis       string
	output      string
	watch       bool
	interval    time.Duration
}

func bindViewFlags(fs *pflag.FlagSet, f *viewFlags, watch bool) {
	fs.StringVar(&f.etcd, "etcd", "127.0.0.1:2379", "etcd endpoints, comma list")
	fs.StringVar(&f.etcdPrefix, "etcd-prefix", "/zcluster", "etcd key prefix")
	fs.StringVar(&f.redisPrefix, "redis-prefix", session.DefaultPrefix, "Redis key prefix of the cluster")
	fs.StringVar(&f.redis, "redis", "127.0.0.1:6379", "Redis address (comma list: several addresses)")
	fs.StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	if watch {
		fs.BoolVarP(&f.watch, "watch", "w", false, "refresh in place until interrupted")
		fs.DurationVar(&f.interval, "interval", 2*time.Second, "refresh interval with --watch")
	}
	annotateEnv(fs)
}

func (f *viewFlags) check() error {
	if f.output != "table" && f.output != "json" {
		return fmt.Errorf("--output %q: want table or json", f.output)
	}
	if f.watch && f.interval < 100*time.Millisecond {
		return fmt.Errorf("--interval %v: must be at least 100ms", f.interval)
	}
	return nil
}

func newTopCmd(c *cli) *cobra.Command {
	f := &viewFlags{}
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Show the cluster: every node, its routes, sessions, lease and uptime (reads etcd and Redis)",
		Long: `top reads etcd and Redis directly (no node needs to answer) and prints one
row per registered node: group, node id, kind, relay and client address,
the routes it serves (msgID and name), the sessions each gate owns in Redis,
its open client connections by transport (tcp, ws, kcp; published by the
gate every few seconds), the seconds left on its etcd lease, its version
and uptime. --watch
refreshes in place; -o json prints the same data for scripts.`,
		Example: `  zcluster top --etcd 127.0.0.1:2379 --redis 127.0.0.1:6379
  zcluster top --watch --interval 1s
  zcluster top -o json | jq '.nodes[] | {id, sessions}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			return c.view(cmd.Context(), f, true, func(w io.Writer, s *topview.Snapshot) error {
				if f.output == "json" {
					return topview.WriteJSON(w, s)
				}
				return s.WriteTable(w)
			})
		},
	}
	bindViewFlags(cmd.Flags(), f, true)
	return cmd
}

// view reads snapshots and writes them with write: once, or every interval
// until ctx ends with --watch (clearing the screen first for a table).
func (c *cli) view(ctx context.Context, f *viewFlags, withRedis bool, write func(io.Writer, *topview.Snapshot) error) error {
	redisList := f.redis
	st, err := openStores(f.etcd, redisList)
	if err != nil {
		return err
	}
	defer st.Close()
	src := topview.Source{Etcd: st.etcd, Prefix: f.etcdPrefix, SessionPrefix: f.redisPrefix}
	if withRedis {
		src.Redis = st.redis
	}
	once := func() error {
		rctx, cancel := context.WithTimeout(ctx, readTimeout)
		defer cancel()
		snap, err := topview.Read(rctx, src)
		if err != nil {
			if rctx.Err() != nil && ctx.Err() == nil {
				if dialErr := st.etcdDials.lastErr(); dialErr != nil {
					return fmt.Errorf("etcd at %s not reachable within %v: %w", st.etcdAddrs, readTimeout, dialErr)
				}
				return fmt.Errorf("etcd at %s or redis at %s did not answer within %v: %w", st.etcdAddrs, st.redisAddrs, readTimeout, err)
			}
			return err
		}
		if f.watch && f.output == "table" {
			fmt.Fprint(c.stdout, topview.ClearScreen)
		}
		return write(c.stdout, snap)
	}
	if err := once(); err != nil || !f.watch {
		return err
	}
	tick := time.NewTicker(f.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if err := once(); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// Keep watching through a store outage: say so and retry.
			fmt.Fprintf(c.stdout, "%s: %s\n", time.Now().Format(time.TimeOnly), oneLine(err.Error()))
		}
	}
}
