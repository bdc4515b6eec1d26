// Package cluster holds the configuration every zcluster node shares,
// gate or backend: its identity, the stores it joins, the relay it speaks
// and the timings of leases and sessions. gate.Config and backend.Config
// embed a Node and add what only their kind needs.
package cluster

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/zcluster/zcluster/inbox"
	"github.com/zcluster/zcluster/registry"
	"github.com/zcluster/zcluster/relay"
	"github.com/zcluster/zcluster/session"
)

// Defaults of the Node fields, from the packages that use them.
const (
	DefaultPrefix      = registry.DefaultPrefix
	DefaultTTL         = registry.DefaultTTL
	DefaultRedisPrefix = session.DefaultPrefix
	DefaultSessionTTL  = session.DefaultTTL
	DefaultInboxMax    = inbox.DefaultMaxLen
	DefaultInboxTTL    = inbox.DefaultTTL
	DefaultVersion     = "dev"
)

// Node is what every node of a cluster is configured with. Zero fields
// take the defaults documented here.
type Node struct {
	// ID is the node id, unique in the cluster (required, at most 255
	// bytes).
	ID string
	// RelayListen is where other nodes connect, host:port (default: the
	// node kind's, ":19001" for gates and ":19101" for backends).
	RelayListen string
	// Advertise is the host other nodes dial; default: the listen host, or
	// the first non-loopback address when that is a wildcard.
	Advertise string
	// Etcd and Redis are the cluster's stores (required).
	Etcd  *clientv3.Client
	Redis redis.UniversalClient
	// Secret authenticates relay links (required unless Insecure).
	Secret   []byte
	Insecure bool
	// Prefix is the etcd key prefix (default "/zcluster").
	Prefix string
	// RedisPrefix starts every Redis key of the cluster (default "zc:");
	// two clusters sharing one Redis need different prefixes. Every node of
	// a cluster must use the same.
	RedisPrefix string
	// TTL is the etcd lease TTL: how long a crashed node stays listed
	// (default 10s).
	TTL time.Duration
	// SessionTTL is the Redis session record TTL, refreshed by gates every
	// third of it; every node of a cluster must use the same (default 30s).
	SessionTTL time.Duration
	// Version is published in etcd (default "dev").
	Version string
	// Logger receives lifecycle events (default slog.Default()).
	Logger *slog.Logger
	// RelayTLS, if set, puts this node's relay links under TLS; every node
	// of the cluster must agree (see relay.TLSConfig).
	RelayTLS *relay.TLSConfig
	// InboxMax is how many reliable messages each user's inbox keeps
	// (default 1000; see package inbox).
	InboxMax int
	// InboxTTL is how long a reliable message is kept (default 24h).
	InboxTTL time.Duration
}

// SetDefaults fills the zero fields; relayListen is the node kind's
// default relay address.
func (n *Node) SetDefaults(relayListen string) {
	if n.RelayListen == "" {
		n.RelayListen = relayListen
	}
	if n.Prefix == "" {
		n.Prefix = DefaultPrefix
	}
	if n.RedisPrefix == "" {
		n.RedisPrefix = DefaultRedisPrefix
	}
	if n.TTL == 0 {
		n.TTL = DefaultTTL
	}
	if n.SessionTTL == 0 {
		n.SessionTTL = DefaultSessionTTL
	}
	if n.Version == "" {
		n.Version = DefaultVersion
	}
	if n.InboxMax == 0 {
		n.InboxMax = DefaultInboxMax
	}
	if n.InboxTTL == 0 {
		n.InboxTTL = DefaultInboxTTL
	}
	if n.Logger == nil {
		n.Logger = slog.Default()
	}
}

// Problems returns everything wrong with n (after SetDefaults), each as a
// short phrase; none when n is valid.
func (n *Node) Problems() []string {
	var p []string
	add := func(bad bool, format string, args ...any) {
		if bad {
			p = append(p, fmt.Sprintf(format, args...))
		}
	}
	add(n.ID == "", "id is required")
	add(len(n.ID) > relay.MaxFieldLen, "id is %d bytes, at most %d", len(n.ID), relay.MaxFieldLen)
	add(n.Etcd == nil, "etcd client is required")
	add(n.Redis == nil, "redis client is required")
	add(len(n.Secret) == 0 && !n.Insecure, "a cluster secret is required (or run insecure for development)")
	add(n.TTL < time.Second, "ttl %v below 1s", n.TTL)
	add(n.SessionTTL < time.Second, "session ttl %v below 1s", n.SessionTTL)
	add(n.InboxMax < 0, "inbox max %d is negative", n.InboxMax)
	add(n.InboxTTL < 0, "inbox ttl %v is negative", n.InboxTTL)
	return p
}
