package clusternode

import (
	"fmt"
	"strings"

	"github.com/zcluster/zcluster/cluster"
	"github.com/zcluster/zcluster/relay"
)

// Problems collects what is wrong with a configuration, so that all of it
// is reported at once rather than one mistake per start (nats-server's
// validateOptions reports the same way).
type Problems struct{ list []string }

// Addf records a problem.
func (p *Problems) Addf(format string, args ...any) {
	p.list = append(p.list, fmt.Sprintf(format, args...))
}

// Check records the problem when bad is true.
func (p *Problems) Check(bad bool, format string, args ...any) {
	if bad {
		p.Addf(format, args...)
	}
}

// Err returns nil when nothing was recorded, else one error wrapping
// sentinel that lists every problem: "<sentinel>: a; b; c".
func (p *Problems) Err(sentinel error) error {
	if len(p.list) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", sentinel, strings.Join(p.list, "; "))
}

// AddAll records every problem of list.
func (p *Problems) AddAll(list []string) { p.list = append(p.list, list...) }

// FromNode is the clusternode configuration of a node of group and kind
// configured with n, whose relay envelopes go to handler.
func FromNode(n cluster.Node, group, kind string, handler relay.Handler) Config {
	return Config{
		ID: n.ID, Group: group, Kind: kind,
		RelayListen: n.RelayListen, Advertise: n.Advertise,
		Etcd: n.Etcd, Redis: n.Redis, Secret: n.Secret, Insecure: n.Insecure,
		Prefix: n.Prefix, RedisPrefix: n.RedisPrefix, TTL: n.TTL, SessionTTL: n.SessionTTL,
		Version: n.Version, Logger: n.Logger, Handler: handler,
		InboxMaxLen: n.InboxMax, InboxTTL: n.InboxTTL,
		RelayTLS: n.RelayTLS,
	}
}
