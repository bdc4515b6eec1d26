package backend

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/zcluster/zcluster/codec"
	"github.com/zcluster/zcluster/inbox"
	"github.com/zcluster/zcluster/relay"
)

// Config configures a backend node. Zero fields take the defaults documented
// here.
type Config struct {
	// ID is the node id, unique in the cluster (required).
	ID string
	// Group is the backend group the node serves (required), e.g. "im".
	Group string
	// RelayListen is where gates and other backends connect (default ":19101").
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
	// TTL is the etcd lease TTL (default 10s).
	TTL time.Duration
	// SessionTTL must match the gates' (default 30s); it bounds how long a
	// cached session owner is trusted.
	SessionTTL time.Duration
	// Workers is how many client messages run at once (default 64). Each
	// session has its own queue: its messages run in order, one at a time,
	// and a session whose handler is slow holds up only itself.
	Workers int
	// QueueLen bounds one session's queue: messages waiting or running
	// (default 256). Past it, or past SessionQueueBytes, the session's next
	// message is answered at once with an error frame "busy: ...".
	QueueLen int
	// SessionQueueBytes bounds the payload bytes (plus 128 per message)
	// one session may have waiting or running (default 4 MiB). One message
	// always fits an empty queue, however large.
	SessionQueueBytes int
	// QueueBytes bounds the same over all sessions of the node (default
	// 64 MiB): past it every session's next message is answered "busy".
	QueueBytes int
	// MaxCalls bounds the Call handlers running at once (default 1024).
	// Calls do not queue behind client messages (a handler waiting on a
	// Call into its own group, or in a cycle back to this node, would
	// wait for itself); past MaxCalls a Call fails at once with "busy".
	MaxCalls int
	// CallTimeout bounds Context.Call (default 5s).
	CallTimeout time.Duration
	// DrainTimeout bounds how long Shutdown keeps serving after leaving etcd
	// (default 5s); it returns sooner once no message arrived for DrainQuiet.
	DrainTimeout time.Duration
	// DrainQuiet is the quiet period that ends draining (default 300ms).
	DrainQuiet time.Duration
	// Version is published in etcd.
	Version string
	// Logger receives lifecycle events (default slog.Default()).
	Logger *slog.Logger
	// Codec encodes and decodes the messages of typed handlers (Typed)
	// and Context.Encode (default codec.JSON{}).
	Codec codec.Codec
	// Observer receives countable events for metrics (default NopObserver).
	Observer Observer
	// RelayTLS, if set, puts this node's relay links under TLS; every node
	// of the cluster must agree (see relay.TLSConfig).
	RelayTLS *relay.TLSConfig
	// InboxMax is how many reliable messages each user's inbox keeps
	// (default 1000; see Deliver and package inbox).
	InboxMax int
	// InboxTTL is how long a reliable message is kept (default 24h).
	InboxTTL time.Duration
}

// DefaultConfig returns a Config with every default filled in except the
// required fields.
func DefaultConfig() Config {
	return Config{
		RelayListen:       ":19101",
		Prefix:            "/zcluster",
		TTL:               10 * time.Second,
		SessionTTL:        30 * time.Second,
		Workers:           64,
		QueueLen:          256,
		SessionQueueBytes: 4 << 20,
		QueueBytes:        64 << 20,
		MaxCalls:          1024,
		CallTimeout:       5 * time.Second,
		DrainTimeout:      5 * time.Second,
		DrainQuiet:        300 * time.Millisecond,
		Version:           "dev",
		InboxMax:          inbox.DefaultMaxLen,
		InboxTTL:          inbox.DefaultTTL,
	}
}

func (c *Config) setDefaults() {
	d := DefaultConfig()
	if c.Codec == nil {
		c.Codec = codec.JSON{}
	}
	if c.RelayListen == "" {
		c.RelayListen = d.RelayListen
	}
	if c.Prefix == "" {
		c.Prefix = d.Prefix
	}
	if c.TTL == 0 {
		c.TTL = d.TTL
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = d.SessionTTL
	}
	if c.Workers == 0 {
		c.Workers = d.Workers
	}
	if c.QueueLen == 0 {
		c.QueueLen = d.QueueLen
	}
	if c.SessionQueueBytes == 0 {
		c.SessionQueueBytes = d.SessionQueueBytes
	}
	if c.QueueBytes == 0 {
		c.QueueBytes = d.QueueBytes
	}
	if c.MaxCalls == 0 {
		c.MaxCalls = d.MaxCalls
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = d.CallTimeout
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = d.DrainTimeout
	}
	if c.DrainQuiet == 0 {
		c.DrainQuiet = d.DrainQuiet
	}
	if c.Version == "" {
		c.Version = d.Version
	}
	if c.InboxMax == 0 {
		c.InboxMax = d.InboxMax
	}
	if c.InboxTTL == 0 {
		c.InboxTTL = d.InboxTTL
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Observer == nil {
		c.Observer = NopObserver{}
	}
}

func (c *Config) validate() error {
	switch {
	case c.ID == "":
		return fmt.Errorf("%w: id is required", ErrConfig)
	case c.Group == "":
		return fmt.Errorf("%w: group is required", ErrConfig)
	case c.Group == "gate":
		return fmt.Errorf("%w: group \"gate\" is reserved for gates", ErrConfig)
	case c.Etcd == nil:
		return fmt.Errorf("%w: etcd client is required", ErrConfig)
	case c.Redis == nil:
		return fmt.Errorf("%w: redis client is required", ErrConfig)
	case len(c.Secret) == 0 && !c.Insecure:
		return fmt.Errorf("%w: a cluster secret is required (or run insecure for development)", ErrConfig)
	case c.Workers < 1 || c.QueueLen < 1 || c.SessionQueueBytes < 1 || c.QueueBytes < 1 || c.MaxCalls < 1:
		return fmt.Errorf("%w: workers, queue length, queue bytes and max calls must be positive", ErrConfig)
	}
	return nil
}

// Sentinel errors.
var (
	// ErrConfig reports an invalid Config.
	ErrConfig = errors.New("backend: invalid config")
	// ErrOffline is returned when a session or user has no live owner.
	ErrOffline = errors.New("backend: offline")
	// ErrNoNode is returned by Call when the group has no live node.
	ErrNoNode = errors.New("backend: no live node")
	// ErrCallTimeout is returned by Call when no answer came in time.
	ErrCallTimeout = errors.New("backend: call timed out")
	// ErrCallFailed wraps an error the called handler returned.
	ErrCallFailed = errors.New("backend: call failed")
	// ErrStopped is returned once the backend is shutting down.
	ErrStopped = errors.New("backend: stopped")
	// ErrAlreadyReplied is returned by a second Reply in a Call handler:
	// a Call has one result, the first Reply.
	ErrAlreadyReplied = errors.New("backend: call already replied")
)
