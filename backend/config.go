package backend

import (
	"errors"
	"time"

	"github.com/zcluster/zcluster/cluster"
	"github.com/zcluster/zcluster/codec"
	"github.com/zcluster/zcluster/internal/runtime/clusternode"
)

// Config configures a backend node. Zero fields take the defaults documented
// here.
type Config struct {
	// Node is what every node is configured with: id, stores, relay,
	// prefixes, TTLs, version, logger (see package cluster). Its fields
	// are promoted: cfg.ID, cfg.Etcd, ...
	cluster.Node
	// Group is the backend group the node serves (required), e.g. "im".
	Group string
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
	// Codec encodes and decodes the messages of typed handlers (Typed)
	// and Context.Encode (default codec.JSON{}).
	Codec codec.Codec
	// Observer receives countable events for metrics (default NopObserver).
	Observer Observer
}

// DefaultRelayListen is the default relay address of a backend.
const DefaultRelayListen = ":19101"

// DefaultConfig returns a Config with every default filled in except the
// required fields.
func DefaultConfig() Config {
	c := Config{
		Workers:           64,
		QueueLen:          256,
		SessionQueueBytes: 4 << 20,
		QueueBytes:        64 << 20,
		MaxCalls:          1024,
		CallTimeout:       5 * time.Second,
		DrainTimeout:      5 * time.Second,
		DrainQuiet:        300 * time.Millisecond,
	}
	c.Node.SetDefaults(DefaultRelayListen)
	c.Logger = nil
	return c
}

func (c *Config) setDefaults() {
	c.Node.SetDefaults(DefaultRelayListen)
	d := DefaultConfig()
	if c.Codec == nil {
		c.Codec = codec.JSON{}
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
	if c.Observer == nil {
		c.Observer = NopObserver{}
	}
}

// validate reports every problem of c at once, in one error wrapping
// ErrConfig.
func (c *Config) validate() error {
	var p clusternode.Problems
	p.AddAll(c.Node.Problems())
	p.Check(c.Group == "", "group is required")
	p.Check(c.Group == "gate", "group \"gate\" is reserved for gates")
	p.Check(c.Workers < 1, "workers %d below 1", c.Workers)
	p.Check(c.QueueLen < 1, "queue length %d below 1", c.QueueLen)
	p.Check(c.SessionQueueBytes < 1, "session queue bytes %d below 1", c.SessionQueueBytes)
	p.Check(c.QueueBytes < 1, "queue bytes %d below 1", c.QueueBytes)
	p.Check(c.MaxCalls < 1, "max calls %d below 1", c.MaxCalls)
	return p.Err(ErrConfig)
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
	// ErrNotStarted is returned by methods that need the cluster when
	// they are called before Start.
	ErrNotStarted = errors.New("backend: not started")
	// ErrStopped is returned once the backend is shutting down.
	ErrStopped = errors.New("backend: stopped")
	// ErrAlreadyReplied is returned by a second Reply in a Call handler:
	// a Call has one result, the first Reply.
	ErrAlreadyReplied = errors.New("backend: call already replied")
)
