// Package clusternode is the part every zcluster node shares: the etcd
// topology it routes by, its relay, its registration, and the session
// directory with the delivery helpers built on it (push to a session or a
// user on whichever gate owns it, kick, broadcast). gate and backend embed a
// Node; it is not API for users.
package clusternode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/zcluster/zcluster/inbox"
	"github.com/zcluster/zcluster/registry"
	"github.com/zcluster/zcluster/relay"
	"github.com/zcluster/zcluster/room"
	"github.com/zcluster/zcluster/session"
)

// MaxClientFrame is the largest client payload a gate may be configured to
// accept (gate.Config.MaxFrame).
const MaxClientFrame = 16 << 20

// RelayMaxFrame is every node's relay frame limit: any client payload a gate
// may accept, plus the envelope around it. Gates and backends use the same
// value, so no frame a gate accepted, and no answer as large, can be
// refused by a peer's relay (which would break the link for every session
// on it).
const RelayMaxFrame = MaxClientFrame + relay.MaxOverhead

// ErrOffline is returned when a session or user has no live owner.
var ErrOffline = errors.New("offline")

// Config is what a node needs to join the cluster.
type Config struct {
	ID          string
	Group       string
	Kind        string // registry.KindGate or registry.KindBackend
	RelayListen string // host:port the relay server binds
	Advertise   string // host (or host:port) other nodes dial; "" derives it
	Etcd        *clientv3.Client
	Redis       redis.UniversalClient
	Secret      []byte
	Insecure    bool
	Prefix      string
	RedisPrefix string        // Redis key prefix ("" is session.DefaultPrefix)
	TTL         time.Duration // etcd lease TTL
	SessionTTL  time.Duration // Redis record TTL
	Version     string
	Logger      *slog.Logger
	// Handler receives every envelope that arrives on the relay.
	Handler relay.Handler
	// RelayTLS, if set, puts the relay's links under TLS.
	RelayTLS *relay.TLSConfig
	// InboxMaxLen and InboxTTL bound each user's reliable inbox (0: the
	// inbox package's defaults).
	InboxMaxLen int
	InboxTTL    time.Duration
}

// Node is a started cluster member.
type Node struct {
	cfg      Config
	log      *slog.Logger
	Topology *registry.Topology
	Relay    *relay.Relay
	Sessions *session.Store
	// Rooms is the room directory (on the same Redis as Sessions).
	Rooms    *room.Store
	Inbox    *inbox.Store
	relayAdv string
	gone     goneWatch

	regMu sync.Mutex
	reg   *registry.Registration

	unsubscribe func()
	// avoid holds nodes not to pick (nodeID -> time.Time until which; the
	// zero time: until the node registers again): peers that announced they
	// are leaving, and peers whose link just failed.
	avoid     sync.Map
	isAvoided func(nodeID string) bool
	dropMu    sync.Mutex
	drops     map[string]*time.Timer // peers that left etcd, dropped after dropGrace
	stopInval context.CancelFunc
	invalDone chan struct{}
}

// Start watches the topology, opens the session store and starts the relay.
// The node is not registered yet: call Register once the caller's own
// listeners are up.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.ID == "" || cfg.Group == "" {
		return nil, errors.New("clusternode: id and group are required")
	}
	if cfg.Etcd == nil || cfg.Redis == nil {
		return nil, errors.New("clusternode: etcd and redis clients are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	n := &Node{cfg: cfg, log: cfg.Logger}
	n.isAvoided = n.Avoiding
	handler := cfg.Handler
	cfg.Handler = func(env *relay.Envelope) {
		if env.Kind == relay.KindLeaving {
			n.Avoid(string(env.Source), 0)
			n.Relay.PeerLeaving(string(env.Source))
			return
		}
		handler(env)
	}
	var err error
	n.Sessions, err = session.New(session.Config{Client: cfg.Redis, Prefix: cfg.RedisPrefix, TTL: cfg.SessionTTL, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	n.Rooms = room.New(cfg.Redis, cfg.RedisPrefix)
	n.Inbox, err = inbox.New(inbox.Config{Client: cfg.Redis, Prefix: cfg.RedisPrefix, MaxLen: cfg.InboxMaxLen, TTL: cfg.InboxTTL})
	if err != nil {
		return nil, err
	}
	regCfg := n.registryConfig()
	n.Topology, err = registry.Watch(ctx, regCfg)
	if err != nil {
		return nil, fmt.Errorf("clusternode %s: watch topology: %w", cfg.ID, err)
	}
	n.Relay, err = relay.New(relay.Config{
		NodeID:   cfg.ID,
		Listen:   cfg.RelayListen,
		Secret:   cfg.Secret,
		Insecure: cfg.Insecure,
		Resolve:  n.resolve,
		Logger:   cfg.Logger,
		TLS:      cfg.RelayTLS,
		MaxFrame: RelayMaxFrame,
	}, cfg.Handler)
	if err != nil {
		n.Topology.Close()
		return nil, err
	}
	if err := n.Relay.Start(); err != nil {
		n.Topology.Close()
		return nil, fmt.Errorf("clusternode %s: relay: %w", cfg.ID, err)
	}
	n.relayAdv, err = AdvertiseAddr(cfg.Advertise, n.Relay.Addr())
	if err != nil {
		n.Relay.Close()
		n.Topology.Close()
		return nil, err
	}
	// Other nodes' takeovers invalidate this node's session cache.
	invalCtx, stopInval := context.WithCancel(context.Background())
	n.stopInval, n.invalDone = stopInval, make(chan struct{})
	go func() {
		defer close(n.invalDone)
		n.Sessions.RunInvalidation(invalCtx)
	}()
	// A peer that leaves etcd loses its link, after a grace: answers still
	// travelling on it arrive, and a peer that only re-registers (etcd
	// restarted, lease lost) keeps it.
	n.drops = make(map[string]*time.Timer)
	n.unsubscribe = n.Topology.Subscribe(func(ev registry.Event) {
		if ev.Node.ID == cfg.ID {
			return
		}
		if ev.Type != registry.NodeRemoved {
			n.avoid.Delete(ev.Node.ID) // (re)registered: pick it again
		} else if slices.Contains(n.Relay.Peers(), ev.Node.ID) {
			// A peer that deregistered closes its end next: that is its
			// clean stop, not a failure. (A stopping node tells only the
			// peers it has links to; this covers the others.)
			n.Relay.PeerLeaving(ev.Node.ID)
		}
		n.scheduleDrop(ev.Node.ID, ev.Type == registry.NodeRemoved)
	})
	return n, nil
}

// Avoid keeps nodeID from being picked for d, or, for d <= 0, until it
// registers again.
func (n *Node) Avoid(nodeID string, d time.Duration) {
	var until time.Time
	if d > 0 {
		until = time.Now().Add(d)
	}
	n.avoid.Store(nodeID, until)
}

// Avoiding reports whether nodeID is not to be picked now.
func (n *Node) Avoiding(nodeID string) bool {
	v, ok := n.avoid.Load(nodeID)
	if !ok {
		return false
	}
	until := v.(time.Time)
	if until.IsZero() || time.Now().Before(until) {
		return true
	}
	n.avoid.Delete(nodeID)
	return false
}

// Pick chooses the node of group for key by rendezvous hashing, passing
// over avoided nodes while another node of the group is available.
func (n *Node) Pick(group, key string) (registry.Node, bool) {
	if nd, ok := n.Topology.PickExcept(group, key, n.isAvoided); ok {
		return nd, true
	}
	return n.Topology.Pick(group, key)
}

// PickOther is Pick among the nodes not avoided; ok is false when none is
// left.
func (n *Node) PickOther(group, key string) (registry.Node, bool) {
	return n.Topology.PickExcept(group, key, n.isAvoided)
}

// AnnounceLeaving tells the other nodes this one has a link to that it is
// shutting down, so they stop sending it anything new at once, without
// waiting for etcd's watch to deliver its deregistration. It opens no link:
// a node this one never sent to learns it from etcd (and from the end of its
// own link here, if it has one).
func (n *Node) AnnounceLeaving(ctx context.Context) {
	for _, nd := range n.Topology.All() {
		if nd.ID == n.cfg.ID {
			continue
		}
		if err := n.Relay.SendIfLinked(ctx, nd.ID, &relay.Envelope{Kind: relay.KindLeaving}); err != nil && !errors.Is(err, relay.ErrNoLink) {
			n.log.Debug("leaving notice not sent", "to", nd.ID, "cause", err)
		}
	}
}

// resolveWait bounds how long a send to a node missing from the topology
// waits for it to appear: a peer that just registered can send here (a
// request, a call) before this node's watch has seen it, and the answer
// must still reach it.
const resolveWait = time.Second

// resolve returns the relay address of a node, waiting up to resolveWait
// (and no longer than ctx allows) for one this node's topology does not
// know yet.
func (n *Node) resolve(ctx context.Context, id string) (string, bool) {
	deadline := time.Now().Add(resolveWait)
	var t *time.Timer
	for {
		if nd, ok := n.Topology.Node(id); ok {
			return nd.RelayAddr, true
		}
		if time.Now().After(deadline) {
			return "", false
		}
		if t == nil {
			t = time.NewTimer(10 * time.Millisecond)
			defer t.Stop()
		} else {
			t.Reset(10 * time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return "", false
		case <-t.C:
		}
	}
}

// dropGrace is how long a link to a peer that left etcd is kept.
const dropGrace = 2 * time.Second

func (n *Node) scheduleDrop(id string, removed bool) {
	n.dropMu.Lock()
	defer n.dropMu.Unlock()
	if t, ok := n.drops[id]; ok {
		t.Stop()
		delete(n.drops, id)
	}
	if !removed || n.drops == nil {
		return
	}
	n.drops[id] = time.AfterFunc(dropGrace, func() {
		n.dropMu.Lock()
		_, still := n.drops[id]
		delete(n.drops, id)
		n.dropMu.Unlock()
		if still {
			if _, back := n.Topology.Node(id); !back {
				n.Relay.DropPeer(id)
			}
		}
	})
}

func (n *Node) registryConfig() registry.Config {
	return registry.Config{Client: n.cfg.Etcd, Prefix: n.cfg.Prefix, TTL: n.cfg.TTL, Logger: n.cfg.Logger}
}

// ID returns the node id.
func (n *Node) ID() string { return n.cfg.ID }

// RelayAddr returns the advertised relay address.
func (n *Node) RelayAddr() string { return n.relayAdv }

// Register publishes the node and its routes in etcd under a lease.
func (n *Node) Register(ctx context.Context, clientAddr string, routes []registry.Route) error {
	node := registry.Node{
		ID:         n.cfg.ID,
		Group:      n.cfg.Group,
		Kind:       n.cfg.Kind,
		RelayAddr:  n.relayAdv,
		ClientAddr: clientAddr,
		Routes:     routes,
		Version:    n.cfg.Version,
		StartedAt:  time.Now().UTC(),
	}
	reg, err := registry.Register(ctx, n.registryConfig(), node)
	if err != nil {
		return fmt.Errorf("clusternode %s: %w", n.cfg.ID, err)
	}
	n.regMu.Lock()
	n.reg = reg
	n.regMu.Unlock()
	n.log.Debug("registered", "node", n.cfg.ID, "group", n.cfg.Group, "relay", n.relayAdv, "client", clientAddr, "routes", len(routes))
	return nil
}

// Registered reports whether the node's keys are believed present in etcd.
func (n *Node) Registered() bool {
	n.regMu.Lock()
	defer n.regMu.Unlock()
	return n.reg != nil && n.reg.Registered()
}

// Reregistrations returns how many times the node had to register again
// after losing its lease.
func (n *Node) Reregistrations() int64 {
	n.regMu.Lock()
	defer n.regMu.Unlock()
	if n.reg == nil {
		return 0
	}
	return n.reg.Reregistrations()
}

// Deregister revokes the lease so every other node drops this one at once.
func (n *Node) Deregister(ctx context.Context) error {
	n.regMu.Lock()
	reg := n.reg
	n.regMu.Unlock()
	if reg == nil {
		return nil
	}
	return reg.Close(ctx)
}

// Close deregisters (if still registered) and stops the relay and the watch.
func (n *Node) Close(ctx context.Context) {
	if err := n.Deregister(ctx); err != nil {
		n.log.Warn("deregister failed; the lease will expire", "node", n.cfg.ID, "cause", err)
	}
	if n.unsubscribe != nil {
		n.unsubscribe()
	}
	n.stopGone(ctx)
	n.dropMu.Lock()
	for id, t := range n.drops {
		t.Stop()
		delete(n.drops, id)
	}
	n.drops = nil
	n.dropMu.Unlock()
	// Reliable appends still waiting for Redis complete (and push) first.
	if err := n.Inbox.Close(ctx); err != nil {
		n.log.Warn("stopping with reliable appends still waiting for redis; their senders get no answer", "node", n.cfg.ID, "cause", err)
	}
	n.Relay.Close()
	n.Topology.Close()
	n.stopInval()
	<-n.invalDone
}

// ownerGate resolves the live gate that owns sid.
func (n *Node) ownerGate(ctx context.Context, sid string) (string, error) {
	o, err := n.Sessions.LookupOwner(ctx, sid)
	if err != nil {
		if errors.Is(err, session.ErrNotFound) {
			return "", fmt.Errorf("session %s: %w", sid, ErrOffline)
		}
		return "", err
	}
	if _, ok := n.Topology.Node(o.Gate); !ok {
		// Its gate is gone; the record will expire with its TTL.
		n.Sessions.Forget(sid)
		return "", fmt.Errorf("session %s: gate %s is gone: %w", sid, o.Gate, ErrOffline)
	}
	return o.Gate, nil
}

// Push sends one frame to a session on whichever gate owns it.
func (n *Node) Push(ctx context.Context, sid string, msgID uint32, payload []byte) error {
	gate, err := n.ownerGate(ctx, sid)
	if err != nil {
		return err
	}
	return n.sendToGate(ctx, gate, &relay.Envelope{Kind: relay.KindPush, MsgID: msgID, Session: []byte(sid), Payload: payload})
}

// sendToGate sends env to a gate; a gate that cannot be reached (it died
// and its lease has not expired yet) makes its sessions offline.
func (n *Node) sendToGate(ctx context.Context, gate string, env *relay.Envelope) error {
	err := n.Relay.Send(ctx, gate, env)
	if errors.Is(err, relay.ErrDial) || errors.Is(err, relay.ErrUnknownPeer) || errors.Is(err, relay.ErrHandshake) {
		n.Sessions.Forget(string(env.Session))
		return fmt.Errorf("gate %s unreachable: %w (%v)", gate, ErrOffline, err)
	}
	return err
}

// SessionOf returns the live session bound to user.
func (n *Node) SessionOf(ctx context.Context, user string) (sid, gate string, err error) {
	sid, o, err := n.Sessions.LookupUser(ctx, user)
	if err != nil {
		if errors.Is(err, session.ErrNotFound) {
			return "", "", fmt.Errorf("user %s: %w", user, ErrOffline)
		}
		return "", "", err
	}
	if _, ok := n.Topology.Node(o.Gate); !ok {
		n.Sessions.ForgetUser(user)
		n.Sessions.Forget(sid)
		return "", "", fmt.Errorf("user %s: gate %s is gone: %w", user, o.Gate, ErrOffline)
	}
	return sid, o.Gate, nil
}

// PushUser sends one frame to the session user is logged in with.
func (n *Node) PushUser(ctx context.Context, user string, msgID uint32, payload []byte) error {
	sid, gate, err := n.SessionOf(ctx, user)
	if err != nil {
		return err
	}
	err = n.sendToGate(ctx, gate, &relay.Envelope{Kind: relay.KindPush, MsgID: msgID, Session: []byte(sid), Payload: payload})
	if errors.Is(err, ErrOffline) {
		n.Sessions.ForgetUser(user)
	}
	return err
}

// Kick closes a session on its gate; the client is told reason first.
func (n *Node) Kick(ctx context.Context, sid, reason string) error {
	gate, err := n.ownerGate(ctx, sid)
	if err != nil {
		return err
	}
	return n.sendToGate(ctx, gate, &relay.Envelope{Kind: relay.KindKick, Session: []byte(sid), Payload: []byte(reason)})
}

// Broadcast sends one frame to every logged-in session on every gate. It
// returns the first error after trying every gate.
func (n *Node) Broadcast(ctx context.Context, msgID uint32, payload []byte) error {
	var first error
	for _, g := range n.Topology.Nodes(registry.GateGroup) {
		err := n.Relay.Send(ctx, g.ID, &relay.Envelope{Kind: relay.KindBroadcast, MsgID: msgID, Payload: payload})
		if err != nil && first == nil {
			first = fmt.Errorf("broadcast to %s: %w", g.ID, err)
		}
	}
	return first
}
