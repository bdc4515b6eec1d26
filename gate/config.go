package gate

import (
	"errors"
	"math"
	"time"

	"github.com/zcluster/zcluster/cluster"
	"github.com/zcluster/zcluster/internal/runtime/clusternode"
	"github.com/zcluster/zcluster/internal/runtime/frame"
	"github.com/zcluster/zcluster/protocol"
)

// Reserved client msgIDs (see package protocol).
const (
	// MsgKick tells a client why it is being disconnected: {"reason":"..."}.
	MsgKick = protocol.MsgKick
	// MsgHeartbeat is answered by the gate itself, with the same payload.
	MsgHeartbeat = protocol.MsgHeartbeat
	// MsgError is an error frame: {"msg_id":N,"error":"..."}.
	MsgError = protocol.MsgError
)

// DefaultMaxInflight is the default Config.MaxInflight.
const DefaultMaxInflight = 64

// Config configures a gate. Zero fields take the defaults documented here.
type Config struct {
	// Node is what every node is configured with: id, stores, relay,
	// prefixes, TTLs, version, logger (see package cluster). Its fields
	// are promoted: cfg.ID, cfg.Etcd, ...
	cluster.Node
	// ClientListen is where clients connect, host:port (default ":18001").
	ClientListen string
	// MaxFrame is the largest client payload; a bigger frame closes the
	// connection (default 64 KiB).
	MaxFrame int
	// SendQueue bounds the bytes queued to one client; a client that does
	// not read is disconnected when it fills (default 1 MiB).
	SendQueue int
	// RequestTimeout is how long a forwarded request may wait for its
	// backend before the client gets an error frame (default 10s).
	RequestTimeout time.Duration
	// MaxInflight bounds the requests one client connection may have
	// forwarded and not yet answered (default 64). Past it the gate stops
	// reading that connection until answers come back, so TCP pushes back
	// on that client alone; no frame is dropped.
	MaxInflight int
	// LoginTimeout closes a connection that has not logged in by then,
	// after msgID 9 {"reason":"login timeout"}; anonymous routes work
	// before it (default 10s; negative disables).
	LoginTimeout time.Duration
	// IdleTimeout closes a connection that has sent no byte for that long
	// (a partial frame counts as a byte, a stall in the middle of a frame
	// does not), after msgID 9 {"reason":"idle"}. Any frame keeps a
	// connection alive; a client with nothing to say sends MsgHeartbeat,
	// which the gate answers itself. A connection waiting for answers to
	// its requests is not idle (default 60s; negative disables).
	IdleTimeout time.Duration
	// MaxConns bounds the client connections of this gate; past it a new
	// connection gets msgID 9 {"reason":"gate full"} and is closed, and
	// Full reports true (default 100,000).
	MaxConns int
	// ClientRate is the messages per second one connection may send,
	// enforced by a token bucket of ClientBurst tokens; a frame over it
	// gets the error frame "rate limited" and the connection stays
	// (default 0: no limit).
	ClientRate float64
	// ClientBurst is the token bucket size for ClientRate (default: one
	// second's worth, at least 1).
	ClientBurst int
	// Observer receives countable events for metrics (default NopObserver).
	Observer Observer
	// TLSCertFile and TLSKeyFile (PEM files), both set, make the client
	// listener speak TLS; both empty (the default) keep it plain TCP.
	TLSCertFile, TLSKeyFile string
	// WSListen, if set, opens a WebSocket listener on host:port (path
	// WSPath, default "/ws") carrying the same frames as ClientListen, one
	// or more whole frames per binary message; TLSCertFile and TLSKeyFile
	// make it wss://.
	WSListen string
	WSPath   string
	// WSOrigins lists the browser origins allowed to open a WebSocket: "*"
	// allows any; empty allows only pages served from the host name the
	// client dialled (see clientnet.WSConfig.Origins).
	WSOrigins []string
	// KCPListen, if set, opens a KCP (reliable UDP) listener on host:port
	// carrying the same byte stream as ClientListen.
	KCPListen string
}

// DefaultRelayListen is the default relay address of a gate.
const DefaultRelayListen = ":19001"

// DefaultConfig returns a Config with every default filled in except the
// required fields.
func DefaultConfig() Config {
	c := Config{
		ClientListen:   ":18001",
		MaxFrame:       frame.DefaultMaxFrame,
		SendQueue:      1 << 20,
		RequestTimeout: 10 * time.Second,
		MaxInflight:    DefaultMaxInflight,
		LoginTimeout:   10 * time.Second,
		IdleTimeout:    60 * time.Second,
		MaxConns:       100000,
	}
	c.Node.SetDefaults(DefaultRelayListen)
	c.Logger = nil
	return c
}

func (c *Config) setDefaults() {
	c.Node.SetDefaults(DefaultRelayListen)
	d := DefaultConfig()
	if c.ClientListen == "" {
		c.ClientListen = d.ClientListen
	}
	if c.MaxFrame == 0 {
		c.MaxFrame = d.MaxFrame
	}
	if c.SendQueue == 0 {
		c.SendQueue = d.SendQueue
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = d.MaxInflight
	}
	if c.LoginTimeout == 0 {
		c.LoginTimeout = d.LoginTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.MaxConns == 0 {
		c.MaxConns = d.MaxConns
	}
	if c.ClientRate > 0 && c.ClientBurst == 0 {
		c.ClientBurst = max(1, int(math.Ceil(c.ClientRate)))
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
	p.Check(c.MaxFrame < 16 || c.MaxFrame > clusternode.MaxClientFrame, "max frame %d out of range [16, 16 MiB]", c.MaxFrame)
	p.Check((c.TLSCertFile == "") != (c.TLSKeyFile == ""), "client TLS needs both a certificate and a key file")
	p.Check(c.WSPath != "" && c.WSPath[0] != '/', "websocket path %q must start with /", c.WSPath)
	p.Check(c.MaxInflight < 1, "max inflight %d below 1", c.MaxInflight)
	p.Check(c.MaxConns < 1, "max conns %d below 1", c.MaxConns)
	p.Check(c.ClientRate < 0 || math.IsNaN(c.ClientRate) || math.IsInf(c.ClientRate, 0), "client rate %v: want 0 (off) or a positive number of messages per second", c.ClientRate)
	p.Check(c.ClientBurst < 0, "client burst %d is negative", c.ClientBurst)
	return p.Err(ErrConfig)
}

// Sentinel errors.
var (
	// ErrConfig reports an invalid Config.
	ErrConfig = errors.New("gate: invalid config")
	// ErrNotLoggedIn is returned by Context methods that need a login.
	ErrNotLoggedIn = errors.New("gate: not logged in")
	// ErrBadUser is returned by Login for a user name that is empty, longer
	// than MaxUserLen bytes or not valid UTF-8.
	ErrBadUser = errors.New("gate: user name must be 1-64 bytes of UTF-8")
	// ErrAlreadyLoggedIn is returned by Login on a session that has a user.
	ErrAlreadyLoggedIn = errors.New("gate: already logged in")
	// ErrStopped is returned once the gate is shutting down.
	ErrStopped = errors.New("gate: stopped")
	// ErrOffline is returned by Context.Push, PushUser and Kick when the
	// session or user has no live owner (as backend.ErrOffline).
	ErrOffline = errors.New("gate: offline")
)
