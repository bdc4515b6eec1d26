// Package backend is the API a zcluster application is written against.
// A backend node serves one group (say "im"): register handlers by msgID,
// Start, and the gates route every client message of those msgIDs to a node
// of the group, picked by the client's session so one session's messages go
// to one node in order. A handler gets a Context with the session, the user,
// the payload and the ways to answer: Reply, Push, PushUser, Broadcast, Kick,
// and Call to another backend group.
//
//	b, _ := backend.New(backend.Config{ID: "im-1", Group: "im", Etcd: etcd, Redis: rdb, Secret: secret})
//	b.Handle(4, "echo", func(c *backend.Context) error { return c.Reply(4, c.Payload()) })
//	_ = b.Start(ctx)
//	defer b.Shutdown(ctx)
package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/zcluster/zcluster/internal/clusternode"
	"github.com/zcluster/zcluster/registry"
	"github.com/zcluster/zcluster/relay"
	"github.com/zcluster/zcluster/session"
)

// HandlerFunc handles one message. A returned error reaches the client as
// an error frame (or the caller of Call as ErrCallFailed).
type HandlerFunc func(c *Context) error

// HandleOption adjusts a handler registration.
type HandleOption func(*registry.Route)

// Anonymous lets clients use the route before they log in.
func Anonymous() HandleOption { return func(r *registry.Route) { r.Anonymous = true } }

type handler struct {
	route    registry.Route
	fn       HandlerFunc
	callOnly bool
}

// task is one message queued for a worker; it owns its memory.
type task struct {
	kind    relay.Kind
	source  string
	seq     uint64
	msgID   uint32
	session string
	user    string
	payload []byte
}

// Server is one backend node.
type Server struct {
	cfg Config
	log *slog.Logger

	handlers map[uint32]handler

	closedHooks []SessionClosedFunc
	sessions    sessionTable

	node    *clusternode.Node
	workers []chan *task
	calls   *callTable
	callSeq atomic.Uint64

	inflight atomic.Int64
	lastMsg  atomic.Int64 // unix nanos of the last received message

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	started  atomic.Bool
	stopOnce sync.Once
	done     chan struct{}
}

// New validates cfg and returns a backend that is not started yet.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg:      cfg,
		log:      cfg.Logger.With("node", cfg.ID),
		handlers: make(map[uint32]handler),
		calls:    newCallTable(),
		ctx:      ctx,
		cancel:   cancel,
		done:     make(chan struct{}),
	}, nil
}

// Handle registers fn for client messages with msgID; the route (msgID ->
// this group, with name) is published in etcd. Call before Start.
func (s *Server) Handle(msgID uint32, name string, fn HandlerFunc, opts ...HandleOption) {
	s.mustNotBeStarted()
	r := registry.Route{MsgID: msgID, Group: s.cfg.Group, Name: name}
	for _, o := range opts {
		o(&r)
	}
	s.handlers[msgID] = handler{route: r, fn: fn}
}

// HandleCall registers fn for msgID as reachable only through Context.Call
// from other backends; clients cannot send it. Call before Start.
func (s *Server) HandleCall(msgID uint32, name string, fn HandlerFunc) {
	s.mustNotBeStarted()
	s.handlers[msgID] = handler{route: registry.Route{MsgID: msgID, Group: s.cfg.Group, Name: name}, fn: fn, callOnly: true}
}

func (s *Server) mustNotBeStarted() {
	if s.started.Load() {
		panic("backend: handlers must be registered before Start")
	}
}

// Start joins the cluster: topology watch, relay, workers, then the etcd
// registration that makes gates route to this node.
func (s *Server) Start(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("backend: already started")
	}
	var err error
	s.node, err = clusternode.Start(ctx, clusternode.Config{
		ID: s.cfg.ID, Group: s.cfg.Group, Kind: registry.KindBackend,
		RelayListen: s.cfg.RelayListen, Advertise: s.cfg.Advertise,
		Etcd: s.cfg.Etcd, Redis: s.cfg.Redis, Secret: s.cfg.Secret, Insecure: s.cfg.Insecure,
		Prefix: s.cfg.Prefix, RedisPrefix: s.cfg.RedisPrefix, TTL: s.cfg.TTL, SessionTTL: s.cfg.SessionTTL,
		Version: s.cfg.Version, Logger: s.cfg.Logger, Handler: s.onEnvelope,
		InboxMaxLen: s.cfg.InboxMax, InboxTTL: s.cfg.InboxTTL,
		RelayTLS: s.cfg.RelayTLS,
	})
	if err != nil {
		return fmt.Errorf("backend %s: %w", s.cfg.ID, err)
	}
	s.node.Relay.OnLinkDown(func(node string, _ error) { s.calls.failNode(node) })
	s.node.OnGateGone(s.gateGone)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.sweepSessions()
	}()
	s.workers = make([]chan *task, s.cfg.Workers)
	for i := range s.workers {
		ch := make(chan *task, s.cfg.QueueLen)
		s.workers[i] = ch
		s.wg.Add(1)
		go s.work(ch)
	}
	var routes []registry.Route
	for _, h := range s.handlers {
		if !h.callOnly {
			routes = append(routes, h.route)
		}
	}
	if err := s.node.Register(ctx, "", routes); err != nil {
		s.cancel()
		s.wg.Wait()
		s.node.Close(ctx)
		return err
	}
	return nil
}

// ID returns the node id.
func (s *Server) ID() string { return s.cfg.ID }

// Group returns the group the node serves.
func (s *Server) Group() string { return s.cfg.Group }

// RelayAddr returns the advertised relay address.
func (s *Server) RelayAddr() string { return s.node.RelayAddr() }

// Topology returns the live cluster view.
func (s *Server) Topology() *registry.Topology { return s.node.Topology }

// Registered reports whether the node is registered in etcd right now.
func (s *Server) Registered() bool { return s.node != nil && s.node.Registered() }

// Reregistrations returns how many times the node had to register again.
func (s *Server) Reregistrations() int64 { return s.node.Reregistrations() }

// RelayStats returns the relay's counters.
func (s *Server) RelayStats() relay.Stats { return s.node.Relay.Stats() }

// RelayPeers returns the nodes this backend has a live outbound link to.
func (s *Server) RelayPeers() []string { return s.node.Relay.Peers() }

// Queued returns the number of messages received and not yet handled.
func (s *Server) Queued() int64 { return s.inflight.Load() }

// SessionStats returns the session directory's counters.
func (s *Server) SessionStats() session.Stats { return s.node.Sessions.Stats() }

// PingRedis checks that Redis answers.
func (s *Server) PingRedis(ctx context.Context) error { return s.node.Sessions.Ping(ctx) }

// Done is closed when Shutdown has finished.
func (s *Server) Done() <-chan struct{} { return s.done }

// Shutdown leaves etcd first (gates stop routing here at once), keeps
// serving what is still arriving until it has been quiet for DrainQuiet
// (at most DrainTimeout), finishes queued messages, then stops. Safe to call
// twice; ctx bounds the whole.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() {
		defer close(s.done)
		if s.node == nil {
			s.cancel()
			return
		}
		if err := s.node.Deregister(ctx); err != nil {
			s.log.Warn("deregister failed; the lease will expire", "cause", err)
		}
		// Tell the peers directly too: they stop sending at once, however
		// late etcd's watch reaches them.
		s.node.AnnounceLeaving(ctx)
		s.drain(ctx)
		s.cancel()
		s.wg.Wait()
		s.stopHooks(ctx)
		s.node.Close(ctx)
		s.log.Info("backend stopped")
	})
	return nil
}

func (s *Server) drain(ctx context.Context) {
	deadline := time.Now().Add(s.cfg.DrainTimeout)
	s.lastMsg.Store(time.Now().UnixNano())
	for time.Now().Before(deadline) && ctx.Err() == nil {
		quiet := time.Since(time.Unix(0, s.lastMsg.Load())) >= s.cfg.DrainQuiet
		if quiet && s.inflight.Load() == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := s.inflight.Load(); n > 0 {
		s.log.Warn("drain timed out; dropping queued messages", "queued", n)
	}
}

func (s *Server) work(ch chan *task) {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case t := <-ch:
			s.run(t)
			s.inflight.Add(-1)
		}
	}
}

// onEnvelope runs on a relay link's reader goroutine. A queued message
// costs two allocations: the task, and one buffer holding its source,
// session, user and payload (the strings view the buffer's first bytes,
// which nothing writes; the payload is the rest, capped so appends cannot
// reach them).
func (s *Server) onEnvelope(env *relay.Envelope) {
	s.lastMsg.Store(time.Now().UnixNano())
	switch env.Kind {
	case relay.KindForward, relay.KindCall:
		src, ns, nu := len(env.Source), len(env.Session), len(env.User)
		head := src + ns + nu
		buf := make([]byte, 0, head+len(env.Payload))
		buf = append(append(append(append(buf, env.Source...), env.Session...), env.User...), env.Payload...)
		t := &task{
			kind:    env.Kind,
			source:  bytesString(buf[:src]),
			seq:     env.Seq,
			msgID:   env.MsgID,
			session: bytesString(buf[src : src+ns]),
			user:    bytesString(buf[src+ns : head]),
			payload: buf[head:len(buf):len(buf)],
		}
		if len(env.Payload) == 0 {
			t.payload = nil
		}
		if t.session != "" && s.trackOn() {
			s.track(t.kind, t.session, t.user, t.source)
		}
		s.inflight.Add(1)
		ch := s.workers[s.shard(env.Session, env.Seq)]
		select {
		case ch <- t:
		case <-s.ctx.Done():
			// Arrived after the drain: answer, never drop in silence.
			s.inflight.Add(-1)
			s.log.Warn("message arrived after the drain", "from", t.source, "msg_id", t.msgID)
			(&Context{s: s, t: t}).finish(fmt.Errorf("node %s is stopping", s.cfg.ID))
		}
	case relay.KindCallReply:
		s.calls.resolve(env.Seq, string(env.Source), env.Payload, env.Flags&relay.FlagError != 0)
	case relay.KindSessionClosed:
		s.sessionClosed(string(env.Session), string(env.User))
	default:
		s.log.Debug("unexpected envelope", "kind", env.Kind, "from", string(env.Source))
	}
}

// bytesString returns b as a string without copying; b must never be
// written afterwards.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// shard picks the worker of a session (FNV-1a, inline: no allocation), so
// one session's messages run in order; messages without one spread by seq.
func (s *Server) shard(session []byte, seq uint64) int {
	if len(session) == 0 {
		return int(seq % uint64(len(s.workers)))
	}
	h := uint32(2166136261)
	for _, b := range session {
		h ^= uint32(b)
		h *= 16777619
	}
	return int(h % uint32(len(s.workers)))
}

func (s *Server) run(t *task) {
	start := time.Now()
	c := &Context{s: s, t: t}
	h, ok := s.handlers[t.msgID]
	var err error
	switch {
	case !ok:
		err = fmt.Errorf("msgID %d has no handler on %s", t.msgID, s.cfg.ID)
	case h.callOnly && t.kind == relay.KindForward:
		err = fmt.Errorf("msgID %d cannot be sent by clients", t.msgID)
	default:
		err = s.safeCall(h.fn, c)
	}
	c.finish(err)
	s.cfg.Observer.Handled(t.msgID, t.kind == relay.KindCall, time.Since(start), err)
}

func (s *Server) safeCall(fn HandlerFunc, c *Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("handler panicked", "msg_id", c.t.msgID, "panic", r)
			err = errors.New("internal error")
		}
	}()
	return fn(c)
}

// send delivers env to node, logging (at debug: the peer is gone) on failure.
func (s *Server) send(node string, env *relay.Envelope) error {
	err := s.node.Relay.Send(s.ctx, node, env)
	if err != nil {
		s.log.Debug("relay send failed", "to", node, "kind", env.Kind, "cause", err)
	}
	return err
}

// callTable tracks outstanding Calls.
type callTable struct {
	mu sync.Mutex
	m  map[uint64]*pendingCall
}

type callResult struct {
	payload []byte
	err     error
}

type pendingCall struct {
	node string
	ch   chan callResult
}

func newCallTable() *callTable { return &callTable{m: make(map[uint64]*pendingCall)} }

func (t *callTable) add(seq uint64, node string) *pendingCall {
	p := &pendingCall{node: node, ch: make(chan callResult, 1)}
	t.mu.Lock()
	t.m[seq] = p
	t.mu.Unlock()
	return p
}

func (t *callTable) remove(seq uint64) {
	t.mu.Lock()
	delete(t.m, seq)
	t.mu.Unlock()
}

func (t *callTable) resolve(seq uint64, node string, payload []byte, isErr bool) {
	t.mu.Lock()
	p, ok := t.m[seq]
	if ok && p.node == node {
		delete(t.m, seq)
	} else {
		ok = false
	}
	t.mu.Unlock()
	if !ok {
		return
	}
	r := callResult{payload: append([]byte(nil), payload...)}
	if isErr {
		r = callResult{err: fmt.Errorf("%w: %s", ErrCallFailed, payload)}
	}
	p.ch <- r
}

func (t *callTable) failNode(node string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for seq, p := range t.m {
		if p.node == node {
			delete(t.m, seq)
			p.ch <- callResult{err: fmt.Errorf("%w: node %s went away", ErrNoNode, node)}
		}
	}
}
