package registry

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults used by DefaultConfig and filled in for zero Config fields.
const (
	DefaultPrefix      = "/zcluster"
	DefaultTTL         = 10 * time.Second
	DefaultRouteMemory = time.Hour
)

// Config is shared by Register and Watch.
type Config struct {
	// Client is the etcd client; required. The registry never closes it.
	Client *clientv3.Client
	// Prefix is the root of every key; default "/zcluster". Trailing slashes
	// are ignored.
	Prefix string
	// TTL is the lease TTL of a registration; default 10s, rounded up to whole
	// seconds, at least 1s. A crashed node disappears after about this long.
	TTL time.Duration
	// Logger receives one line per lifecycle event; default slog.Default().
	Logger *slog.Logger
	// RouteMemory is how long the routes of a backend group stay known
	// after its last node has gone (stopped or crashed), so that a gate
	// answers "no live node for group" rather than "unknown msgID" and
	// `zcluster routes` lists them as down. A backend's Registration keeps
	// "<prefix>/known/<msgID>/<nodeID>" keys on a lease of this TTL, kept
	// alive while the node lives; a live claim of another group replaces
	// them at once. Default 1h, rounded up to whole seconds; negative: no
	// memory (and no known keys written).
	RouteMemory time.Duration
}

// DefaultConfig returns a Config with every default filled in except Client.
func DefaultConfig() Config {
	return Config{Prefix: DefaultPrefix, TTL: DefaultTTL, Logger: slog.Default(), RouteMemory: DefaultRouteMemory}
}

// withDefaults returns c with zero fields set to their defaults and the TTL
// rounded up to whole seconds.
func (c Config) withDefaults() Config {
	c.Prefix = strings.TrimRight(c.Prefix, "/")
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.TTL <= 0 {
		c.TTL = DefaultTTL
	}
	if r := c.TTL % time.Second; r != 0 {
		c.TTL += time.Second - r
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.RouteMemory == 0 {
		c.RouteMemory = DefaultRouteMemory
	}
	if r := c.RouteMemory % time.Second; c.RouteMemory > 0 && r != 0 {
		c.RouteMemory += time.Second - r
	}
	return c
}

// validate reports whether c (after withDefaults) can be used.
func (c Config) validate() error {
	if c.Client == nil {
		return fmt.Errorf("%w: Client is required", ErrInvalidConfig)
	}
	return nil
}

// ttlSeconds is the TTL as etcd wants it.
func (c Config) ttlSeconds() int64 { return int64(c.TTL / time.Second) }

// callTimeout bounds every single etcd call so that a dead etcd never blocks
// a loop or Close for long: the TTL, clamped to [1s, 5s]. A call slower than
// the TTL could not have saved the lease anyway.
func (c Config) callTimeout() time.Duration {
	return min(max(c.TTL, time.Second), 5*time.Second)
}

// callCtx bounds one etcd call: by ctx's own deadline if it has one, else by
// callTimeout.
func (c Config) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.callTimeout())
}

// Key layout.
func (c Config) nodesPrefix() string             { return c.Prefix + "/nodes/" }
func (c Config) routesPrefix() string            { return c.Prefix + "/routes/" }
func (c Config) nodeKey(group, id string) string { return c.nodesPrefix() + group + "/" + id }
func (c Config) routePrefix(msgID uint32) string {
	return fmt.Sprintf("%s%d/", c.routesPrefix(), msgID)
}
func (c Config) routeKey(msgID uint32, nodeID string) string {
	return c.routePrefix(msgID) + nodeID
}
func (c Config) knownPrefix() string { return c.Prefix + "/known/" }
func (c Config) knownKey(msgID uint32, nodeID string) string {
	return fmt.Sprintf("%s%d/%s", c.knownPrefix(), msgID, nodeID)
}
