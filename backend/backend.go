// Package backend is the API a zcluster application is written against.
// A backend node serves one group (say "im"): register handlers by msgID,
// Start, and the gates route every client message of those msgIDs to a node
// of the group, picked by the client's session so one session's messages go
// to one node in order. A handler gets a Context with the session, the user,
// the payload and the ways to answer: Reply, Push, PushUser, Broadcast, Kick,
// and Call to another backend group.
//
// Each session has its own queue on the node: its messages run in order,
// one at a time, while other sessions' run beside them (Config.Workers). A
// session that floods or whose handler is slow holds up only itself: past
// its bounds its next message is answered at once with an error frame
// "busy". Calls run on goroutines of their own, never behind a queue.
//
//	b, _ := backend.New(backend.Config{Node: cluster.Node{ID: "im-1", Etcd: etcd, Redis: rdb, Secret: secret}, Group: "im"})
//	b.Handle(4, "echo", func(c *backend.Context) error { return c.Reply(4, c.Payload()) })
//	_ = b.Start(ctx)
//	defer b.Shutdown(ctx)
package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zcluster/zcluster/internal/runtime/clusternode"
	"github.com/zcluster/zcluster/internal/runtime/waitgroup"
	"github.com/zcluster/zcluster/protocol"
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

// task is one message as its handler sees it.
type task struct {
	kind    relay.Kind
	source  string
	seq     uint64
	msgID   uint32
	session string
	user    string
	payload []byte
}

// Backend is one backend node.
type Backend struct {
	cfg Config
	log *slog.Logger

	handlers map[uint32]handler

	regErrs []string // bad Handle/HandleCall registrations, reported by Start

	closedHooks []SessionClosedFunc
	sessions    sessionTable

	node    *clusternode.Node // set by Start before live
	disp    *dispatcher       // client messages; exists from New on
	calls   *callTable
	callSeq atomic.Uint64
	orders  orderTable // sessions with an unfinished deferred message

	observed bool // Config.Observer is not NopObserver: handlers are timed

	inflight     atomic.Int64 // messages accepted and not finished
	callsRunning atomic.Int64 // Call handlers running or waiting for Start
	refused      atomic.Int64 // messages answered busy
	live         atomic.Bool  // node is set: replies can be sent

	// startMu orders goroutine launches from the relay's reader (Calls,
	// background sends) with Start (which launches the early ones) and
	// Shutdown (after stopping is set nothing is launched, so wg.Wait is
	// safe).
	startMu       sync.Mutex
	stopping      bool
	early         []task // Calls that arrived before Start had the node
	inflightSends int    // background sends running (sendNoWait)

	busySession, busyNode, busyCalls, stoppingText []byte // error texts

	ctx      context.Context
	cancel   context.CancelFunc
	noWait   context.Context // always cancelled: Send that never waits for a dial
	wg       sync.WaitGroup  // workers, Call handlers, the sweeper, background sends
	started  atomic.Bool
	stopOnce sync.Once
	stopErr  error
	done     chan struct{}
}

// maxBackgroundSends bounds the error answers the relay's reader hands to
// a goroutine because the link they go on is still dialing.
const maxBackgroundSends = 256

// sweepEvery is how often the session queues idle since the previous sweep
// are forgotten.
const sweepEvery = 10 * time.Second

// New validates cfg and returns a backend that is not started yet.
func New(cfg Config) (*Backend, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	noWait, stop := context.WithCancel(context.Background())
	stop()
	return &Backend{
		cfg:      cfg,
		observed: cfg.Observer != Observer(NopObserver{}),
		log:      cfg.Logger.With("node", cfg.ID),
		handlers: make(map[uint32]handler),
		disp:     newDispatcher(cfg.QueueLen, cfg.SessionQueueBytes, cfg.QueueBytes),
		calls:    newCallTable(),
		busySession: fmt.Appendf(nil, "busy: node %s: this session already has %d messages or %d bytes waiting",
			cfg.ID, cfg.QueueLen, cfg.SessionQueueBytes),
		busyNode:     fmt.Appendf(nil, "busy: node %s: %d bytes of messages waiting", cfg.ID, cfg.QueueBytes),
		busyCalls:    fmt.Appendf(nil, "busy: node %s already runs %d calls", cfg.ID, cfg.MaxCalls),
		stoppingText: fmt.Appendf(nil, "node %s is stopping", cfg.ID),
		ctx:          ctx,
		cancel:       cancel,
		noWait:       noWait,
		done:         make(chan struct{}),
	}, nil
}

// Handle registers fn for client messages with msgID; the route (msgID ->
// this group, with name) is published in etcd. Call before Start.
//
// A registration the framework cannot honour is not dropped in silence:
// a reserved msgID (protocol.Reserved: 9 and 65532-65535), a msgID already
// registered on this node (by Handle or HandleCall), or a nil fn is
// remembered, and Start fails with ErrConfig listing every such
// registration, so one run shows them all. Registering after Start is a
// programming error with no Start left to report it: it panics.
func (s *Backend) Handle(msgID uint32, name string, fn HandlerFunc, opts ...HandleOption) {
	r := registry.Route{MsgID: msgID, Group: s.cfg.Group, Name: name}
	for _, o := range opts {
		o(&r)
	}
	s.register(handler{route: r, fn: fn})
}

// HandleCall registers fn for msgID as reachable only through Context.Call
// from other backends; clients cannot send it. Call before Start. Bad
// registrations are reported as for Handle.
func (s *Backend) HandleCall(msgID uint32, name string, fn HandlerFunc) {
	s.register(handler{route: registry.Route{MsgID: msgID, Group: s.cfg.Group, Name: name}, fn: fn, callOnly: true})
}

func (s *Backend) register(h handler) {
	s.mustNotBeStarted()
	id, name := h.route.MsgID, h.route.Name
	switch prev, dup := s.handlers[id]; {
	case protocol.Reserved(id):
		s.regErrs = append(s.regErrs, fmt.Sprintf("msgID %d (%q) is reserved by the framework", id, name))
	case dup:
		s.regErrs = append(s.regErrs, fmt.Sprintf("msgID %d (%q) is already registered as %q", id, name, prev.route.Name))
	case h.fn == nil:
		s.regErrs = append(s.regErrs, fmt.Sprintf("msgID %d (%q) has a nil handler", id, name))
	default:
		s.handlers[id] = h
	}
}

func (s *Backend) mustNotBeStarted() {
	if s.started.Load() {
		panic("backend: handlers and hooks must be registered before Start")
	}
}

// Start joins the cluster: topology watch, relay, workers, then the etcd
// registration that makes gates route to this node.
//
// Messages that reach the relay before the node is fully up wait in their
// queues (within the same bounds) and run once it is.
func (s *Backend) Start(ctx context.Context) error {
	if len(s.regErrs) > 0 {
		return fmt.Errorf("%w: backend %s: %d bad handler registrations: %s", ErrConfig, s.cfg.ID, len(s.regErrs), strings.Join(s.regErrs, "; "))
	}
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("backend: already started")
	}
	node, err := clusternode.Start(ctx, clusternode.FromNode(s.cfg.Node, s.cfg.Group, registry.KindBackend, s.onEnvelope))
	if err != nil {
		return fmt.Errorf("backend %s: %w", s.cfg.ID, err)
	}
	s.node = node
	s.live.Store(true)
	s.node.Relay.OnLinkDown(func(node string, _ error) { s.calls.failNode(node) })
	s.node.OnGateGone(s.gateGone)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.sweepSessions()
	}()
	for range s.cfg.Workers {
		s.wg.Add(1)
		go s.work()
	}
	s.disp.start()
	s.wg.Add(1)
	go s.sweep()
	s.startMu.Lock()
	early := s.early
	s.early = nil
	for _, t := range early {
		s.goCall(t)
	}
	s.startMu.Unlock()
	var routes []registry.Route
	for _, h := range s.handlers {
		if !h.callOnly {
			routes = append(routes, h.route)
		}
	}
	if err := s.node.Register(ctx, "", routes); err != nil {
		s.stopLaunching()
		s.cancel()
		s.disp.close()
		s.wg.Wait()
		s.node.Close(ctx)
		return err
	}
	return nil
}

// ID returns the node id.
func (s *Backend) ID() string { return s.cfg.ID }

// Group returns the group the node serves.
func (s *Backend) Group() string { return s.cfg.Group }

// RelayAddr returns the advertised relay address.
func (s *Backend) RelayAddr() string {
	if s.node == nil {
		return ""
	}
	return s.node.RelayAddr()
}

// Topology returns the live cluster view.
func (s *Backend) Topology() *registry.Topology {
	if s.node == nil {
		return nil
	}
	return s.node.Topology
}

// Registered reports whether the node is registered in etcd right now.
func (s *Backend) Registered() bool { return s.node != nil && s.node.Registered() }

// Reregistrations returns how many times the node had to register again.
func (s *Backend) Reregistrations() int64 {
	if s.node == nil {
		return 0
	}
	return s.node.Reregistrations()
}

// RelayStats returns the relay's counters.
func (s *Backend) RelayStats() relay.Stats {
	if s.node == nil {
		return relay.Stats{}
	}
	return s.node.Relay.Stats()
}

// RelayPeers returns the nodes this backend has a live outbound link to.
func (s *Backend) RelayPeers() []string {
	if s.node == nil {
		return nil
	}
	return s.node.Relay.Peers()
}

// Queued returns the number of messages received and not yet handled.
func (s *Backend) Queued() int64 { return s.inflight.Load() }

// Refused returns how many messages were answered "busy" because their
// session's queue, the node's queued bytes or its Calls were at their
// limit (Config.QueueLen, SessionQueueBytes, QueueBytes, MaxCalls).
func (s *Backend) Refused() int64 { return s.refused.Load() }

// SessionStats returns the session directory's counters.
func (s *Backend) SessionStats() session.Stats {
	if s.node == nil {
		return session.Stats{}
	}
	return s.node.Sessions.Stats()
}

// PingRedis checks that Redis answers.
func (s *Backend) PingRedis(ctx context.Context) error {
	if s.node == nil {
		return ErrNotStarted
	}
	return s.node.Sessions.Ping(ctx)
}

// Done is closed when Shutdown has finished.
func (s *Backend) Done() <-chan struct{} { return s.done }

// Shutdown leaves etcd first (gates stop routing here at once), keeps
// serving what is still arriving until it has been quiet for DrainQuiet
// (at most DrainTimeout), answers what is still queued with a "stopping"
// error, waits for the handlers that are running, then stops.
//
// ctx bounds the whole: when it ends first (a handler does not return),
// Shutdown stops waiting, closes the node anyway and returns an error
// wrapping ctx.Err(); the stuck handlers' goroutines are left to end on
// their own (their Context's context is cancelled, their sends fail). Safe
// to call twice; the second call returns the first one's result.
func (s *Backend) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() {
		defer close(s.done)
		if s.node == nil {
			s.stopLaunching()
			s.cancel()
			s.disp.close()
			return
		}
		if err := s.node.Deregister(ctx); err != nil {
			s.log.Warn("deregister failed; the lease will expire", "cause", err)
		}
		// Tell the peers directly too: they stop sending at once, however
		// late etcd's watch reaches them.
		s.node.AnnounceLeaving(ctx)
		s.drain(ctx)
		s.stopLaunching()
		s.cancel()
		left := s.disp.close()
		if len(left) > 0 {
			s.log.Warn("stopping with messages still queued; answering them with an error", "queued", len(left))
		}
		for _, m := range left {
			// s.ctx is cancelled: these never wait for a dial.
			_ = s.send(m.source, &relay.Envelope{Kind: relay.KindDone, Flags: relay.FlagError, Seq: m.seq, MsgID: m.msgID, Session: []byte(m.session), Payload: s.stoppingText})
			s.inflight.Add(-1)
		}
		if err := s.waitHandlers(ctx); err != nil {
			s.stopErr = err
		}
		s.stopHooks(ctx)
		s.node.Close(ctx)
		s.log.Info("backend stopped")
	})
	return s.stopErr
}

// stopLaunching makes the relay's reader refuse new Calls ("stopping") and
// start no goroutine any more, so s.wg can be waited for.
func (s *Backend) stopLaunching() {
	s.startMu.Lock()
	s.stopping = true
	s.startMu.Unlock()
}

// waitHandlers waits for the worker and Call goroutines, or for ctx.
func (s *Backend) waitHandlers(ctx context.Context) error {
	if err := waitgroup.Wait(ctx, &s.wg); err != nil {
		n := s.inflight.Load()
		s.log.Warn("shutdown gave up waiting for running handlers", "running", n, "cause", err)
		return fmt.Errorf("backend %s: shutdown: %d handlers still running: %w", s.cfg.ID, n, err)
	}
	return nil
}

// drain waits until nothing has arrived for DrainQuiet and nothing is in
// flight, at most DrainTimeout. Arrivals are read from the relay's
// received-envelope counter, so the per-message path stamps no time.
func (s *Backend) drain(ctx context.Context) {
	deadline := time.Now().Add(s.cfg.DrainTimeout)
	seen, quietSince := s.node.Relay.Stats().EnvelopesReceived, time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if n := s.node.Relay.Stats().EnvelopesReceived; n != seen {
			seen, quietSince = n, time.Now()
		} else if time.Since(quietSince) >= s.cfg.DrainQuiet && s.inflight.Load() == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// work is one worker: it runs one message of a ready session at a time.
func (s *Backend) work() {
	defer s.wg.Done()
	for {
		q, it, ok := s.disp.next()
		if !ok {
			return
		}
		if q.key != "" && s.trackOn() {
			s.track(relay.KindForward, q.key, it.user, it.source)
		}
		c := &Context{s: s, t: task{kind: relay.KindForward, source: it.source, seq: it.seq,
			msgID: it.msgID, session: q.key, user: it.user, payload: it.payload}}
		s.orders.attach(c)
		s.run(c)
		s.disp.done(q, it)
		s.inflight.Add(-1)
	}
}

// sweep forgets idle session queues now and then.
func (s *Backend) sweep() {
	defer s.wg.Done()
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.disp.sweep()
		}
	}
}

// onEnvelope runs on a relay link's reader goroutine, so it never blocks:
// a client message is queued on its session (or refused busy at once), a
// Call gets a goroutine of its own (or is refused busy at once), a Call's
// answer wakes its caller.
func (s *Backend) onEnvelope(env *relay.Envelope) {
	switch env.Kind {
	case relay.KindForward:
		s.inflight.Add(1)
		var text []byte
		switch s.disp.enqueue(env.Source, env.Session, env.User, env.Seq, env.MsgID, env.Payload) {
		case accepted:
			return
		case busySession:
			text = s.busySession
		case busyNode:
			text = s.busyNode
		case busyStopping:
			text = s.stoppingText
		}
		s.inflight.Add(-1)
		s.refuse(env, text)
	case relay.KindCall:
		s.onCall(env)
	case relay.KindCallReply:
		s.calls.resolve(env.Seq, string(env.Source), env.Payload, env.Flags&relay.FlagError != 0)
	case relay.KindSessionClosed:
		s.sessionClosed(string(env.Session), string(env.User))
	default:
		s.log.Debug("unexpected envelope", "kind", env.Kind, "from", string(env.Source))
	}
}

// onCall starts a Call's handler on a goroutine of its own, never behind
// a queue: the caller may be a handler of this very node (a Call into its
// own group, or a cycle back to it) waiting for the answer, so the Call
// must not wait for anything that caller holds. MaxCalls bounds them.
func (s *Backend) onCall(env *relay.Envelope) {
	if s.callsRunning.Add(1) > int64(s.cfg.MaxCalls) {
		s.callsRunning.Add(-1)
		s.refuse(env, s.busyCalls)
		return
	}
	s.inflight.Add(1)
	buf := make([]byte, 0, len(env.Source)+len(env.Session)+len(env.User))
	buf = append(append(append(buf, env.Source...), env.Session...), env.User...)
	src, ns := len(env.Source), len(env.Session)
	t := task{kind: relay.KindCall, source: string(buf[:src]), seq: env.Seq, msgID: env.MsgID,
		session: string(buf[src : src+ns]), user: string(buf[src+ns:])}
	if len(env.Payload) > 0 {
		t.payload = append([]byte(nil), env.Payload...)
	}
	if t.session != "" && s.trackOn() {
		s.track(t.kind, t.session, t.user, t.source)
	}
	s.startMu.Lock()
	stopping := s.stopping
	switch {
	case stopping:
	case !s.live.Load():
		s.early = append(s.early, t)
	default:
		s.goCall(t)
	}
	s.startMu.Unlock()
	if stopping { // refuse takes startMu itself
		s.callsRunning.Add(-1)
		s.inflight.Add(-1)
		s.refuse(env, s.stoppingText)
	}
}

// goCall runs a Call's handler on its own goroutine. Called with startMu.
func (s *Backend) goCall(t task) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.run(&Context{s: s, t: t})
		s.inflight.Add(-1)
		s.callsRunning.Add(-1)
	}()
}

// refuse answers env (a client message or a Call) with an error at once,
// from the relay's reader: it never waits for a dial.
func (s *Backend) refuse(env *relay.Envelope, text []byte) {
	s.refused.Add(1)
	out := relay.Envelope{Kind: relay.KindDone, Flags: relay.FlagError, Seq: env.Seq, MsgID: env.MsgID, Session: env.Session, Payload: text}
	if env.Kind == relay.KindCall {
		out = relay.Envelope{Kind: relay.KindCallReply, Flags: relay.FlagError, Seq: env.Seq, Payload: text}
	}
	s.sendNoWait(string(env.Source), &out)
}

// sendNoWait sends env from the relay's reader: at once if the link to the
// node is up, else (it is dialing) from a goroutine of its own, at most
// maxBackgroundSends at a time.
func (s *Backend) sendNoWait(to string, env *relay.Envelope) {
	if !s.live.Load() {
		// Before Start has the node: the gate's request timeout answers.
		s.log.Warn("cannot answer a refused message before the node is up", "to", to, "msg_id", env.MsgID)
		return
	}
	err := s.node.Relay.Send(s.noWait, to, env)
	if err == nil || !errors.Is(err, context.Canceled) {
		if err != nil {
			s.log.Debug("relay send failed", "to", to, "kind", env.Kind, "cause", err)
		}
		return
	}
	cp := *env
	cp.Session = append([]byte(nil), env.Session...)
	s.startMu.Lock()
	defer s.startMu.Unlock()
	if s.stopping || s.inflightSends >= maxBackgroundSends {
		s.log.Warn("dropping an error answer: its link is not up", "to", to, "msg_id", env.MsgID)
		return
	}
	s.inflightSends++
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := s.timeoutCtx()
		_ = s.send2(ctx, to, &cp)
		cancel()
		s.startMu.Lock()
		s.inflightSends--
		s.startMu.Unlock()
	}()
}

func (s *Backend) run(c *Context) {
	var start time.Time
	if s.observed {
		start = time.Now()
	}
	t := &c.t
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
	switch {
	case c.deferred == nil:
		c.finish(err)
	case err != nil:
		c.deferred.Finish(err)
	}
	if s.observed {
		s.cfg.Observer.Handled(t.msgID, t.kind == relay.KindCall, time.Since(start), err)
	}
}

func (s *Backend) safeCall(fn HandlerFunc, c *Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("handler panicked", "msg_id", c.t.msgID, "panic", r)
			err = errors.New("internal error")
		}
	}()
	return fn(c)
}

// send delivers env to node, logging (at debug: the peer is gone) on failure.
func (s *Backend) send(node string, env *relay.Envelope) error {
	return s.send2(s.ctx, node, env)
}

// timeoutCtx bounds one send from a goroutine of its own.
func (s *Backend) timeoutCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, s.cfg.CallTimeout)
}

func (s *Backend) send2(ctx context.Context, node string, env *relay.Envelope) error {
	err := s.node.Relay.Send(ctx, node, env)
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

// Server is the former name of Backend, kept so that code written against
// it still compiles.
//
// Deprecated: use Backend.
type Server = Backend
