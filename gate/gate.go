// Package gate is the client-facing side of a zcluster: a zinx server that
// speaks stock zinx TLV frames, gives each connection a cluster-unique
// session, and routes every frame by msgID to a handler in the gate (routes
// of group "gate") or to a node of the route's backend group over the relay.
// Replies and pushes from backends are written back to the client.
//
// Every frame a client sends gets an answer or an error frame (msgID 65535,
// {"msg_id":N,"error":"..."}): unknown msgID, not logged in, no live node for
// the group, node unreachable, node gone, request timed out.
package gate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/zcluster/zcluster/inbox"
	"github.com/zcluster/zcluster/internal/runtime/clientnet"
	"github.com/zcluster/zcluster/internal/runtime/clusternode"
	"github.com/zcluster/zcluster/internal/runtime/frame"
	"github.com/zcluster/zcluster/internal/runtime/waitgroup"
	"github.com/zcluster/zcluster/internal/runtime/zinxkit"
	"github.com/zcluster/zcluster/protocol"
	"github.com/zcluster/zcluster/registry"
	"github.com/zcluster/zcluster/relay"
	"github.com/zcluster/zcluster/session"
)

// HandlerFunc handles a client message inside the gate. A returned error is
// sent to the client as an error frame. The payload is only valid during the
// call.
type HandlerFunc func(c *Context) error

// HandleOption adjusts a handler registration.
type HandleOption func(*registry.Route)

// Anonymous lets clients use the route before they log in.
func Anonymous() HandleOption { return func(r *registry.Route) { r.Anonymous = true } }

type localHandler struct {
	route registry.Route
	fn    HandlerFunc
}

// Gate is one client-facing node. Create it with New, add handlers with
// Handle, then Start; Shutdown stops it.
type Gate struct {
	cfg Config
	log *slog.Logger

	handlers map[uint32]localHandler

	node      *clusternode.Node
	server    *zinxkit.Server
	ws        *clientnet.WSServer  // nil unless Config.WSListen
	kcp       *clientnet.KCPServer // nil unless Config.KCPListen
	clientAdv string
	conns     [numTransports]atomic.Int64 // open connections by transport

	mu      sync.RWMutex
	clients map[string]*client // by session id

	pending *pendingTable
	seq     atomic.Uint64
	rooms   roomTable

	inbox *inboxHub // resumed connections (resume.go)

	ctx      context.Context
	cancel   context.CancelFunc
	wgMu     sync.Mutex
	wgClosed bool // Shutdown is waiting on wg: no more Add
	wg       sync.WaitGroup
	started  atomic.Bool
	stopping atomic.Bool
	// refusedReplies counts replies from a node for a request it was not
	// given (or that is no longer open).
	refusedReplies atomic.Int64
	// fullLogged is set while the gate is full and has said so once.
	fullLogged atomic.Bool
	// refreshMu orders a session refresh against closed sessions'
	// cleanups (see refreshOnce).
	refreshMu sync.RWMutex
	// reclaiming is set while reclaimRooms runs.
	reclaiming atomic.Bool
	// testHookRefresh, if set (by tests), runs inside refreshOnce between
	// listing the sessions and writing them.
	testHookRefresh func()
	// testHookRegister, if set (by tests), runs in Start once the client
	// listener is up, just before the gate registers.
	testHookRegister func(ctx context.Context)
	stopOnce         sync.Once
	stopErr          error // what Shutdown returned; written once, in stopOnce
	done             chan struct{}
}

// client is the gate's state for one client connection.
type client struct {
	conn      clientConn
	transport transport
	sid       string
	sidB      []byte
	token     string
	// slots holds one token per forwarded request not answered yet;
	// capacity Config.MaxInflight.
	slots chan struct{}
	// limiter enforces Config.ClientRate; nil when there is none. Used on
	// the reader goroutine only.
	limiter *rate.Limiter
	// loginTimer enforces Config.LoginTimeout; nil when there is none.
	loginTimer *time.Timer
	mu         sync.Mutex
	// ident is the logged-in user, set once by login; read without mu on
	// every frame.
	ident   atomic.Pointer[identity]
	closing atomic.Bool
	// handlers are the backend nodes that handled its messages (under
	// mu), told when the session closes.
	handlers []string
	// lastHandler is the node noted last, so that the common case (the
	// same node again) takes no lock.
	lastHandler atomic.Pointer[string]
}

// identity is a logged-in client's user, as a string and as bytes.
type identity struct {
	user  string
	userB []byte
}

func (c *client) login(user string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ident.CompareAndSwap(nil, &identity{user: user, userB: []byte(user)}) {
		return false
	}
	if c.loginTimer != nil {
		c.loginTimer.Stop()
	}
	return true
}

// identity returns the client's user ("" and nil before login).
func (c *client) identity() (string, []byte) {
	if id := c.ident.Load(); id != nil {
		return id.user, id.userB
	}
	return "", nil
}

// New validates cfg and returns a gate that is not started yet.
func New(cfg Config) (*Gate, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &Gate{
		cfg:      cfg,
		log:      cfg.Logger.With("node", cfg.ID),
		handlers: make(map[uint32]localHandler),
		clients:  make(map[string]*client),
		pending:  newPendingTable(),
		inbox:    newInboxHub(),
		ctx:      ctx,
		cancel:   cancel,
		done:     make(chan struct{}),
	}
	return g, nil
}

// suspectFor is how long a node whose link failed is avoided before the
// gate tries it again (if it is still in etcd).
const suspectFor = time.Second

// linkGrace is how long requests to a node whose link broke may still be
// answered (over the node's own link) before they get an error frame.
const linkGrace = 500 * time.Millisecond

// linkWait is how long a client's request waits for a link to be dialed
// when another node of the group could take it instead.
const linkWait = 250 * time.Millisecond

// hasOther reports whether group has a node other than except that is not
// avoided, for key.
func (g *Gate) hasOther(group, key, except string) bool {
	_, ok := g.node.Topology.PickExcept(group, key, func(id string) bool { return id == except || g.node.Avoiding(id) })
	return ok
}

// markSuspect avoids a node whose link failed for suspectFor: its sessions
// go to the next node of their group in rendezvous order meanwhile.
func (g *Gate) markSuspect(nodeID string) { g.node.Avoid(nodeID, suspectFor) }

// Handle registers a handler that runs inside the gate for msgID; the route
// is published in etcd under group "gate". Call before Start.
func (g *Gate) Handle(msgID uint32, name string, fn HandlerFunc, opts ...HandleOption) {
	if g.started.Load() {
		panic("gate: Handle after Start")
	}
	if protocol.Reserved(msgID) {
		panic(fmt.Sprintf("gate: Handle(%d, %q): msgID %d is reserved by the client protocol (see package protocol)", msgID, name, msgID))
	}
	r := registry.Route{MsgID: msgID, Group: registry.GateGroup, Name: name}
	for _, o := range opts {
		o(&r)
	}
	g.handlers[msgID] = localHandler{route: r, fn: fn}
}

// Start joins the cluster: it watches the topology, starts the relay and the
// client listener, and registers the gate and its routes in etcd.
func (g *Gate) Start(ctx context.Context) error {
	if !g.started.CompareAndSwap(false, true) {
		return errors.New("gate: already started")
	}
	var err error
	g.node, err = clusternode.Start(ctx, clusternode.FromNode(g.cfg.Node, registry.GateGroup, registry.KindGate, g.onEnvelope))
	if err != nil {
		return fmt.Errorf("gate %s: %w", g.cfg.ID, err)
	}
	g.node.Relay.OnLinkDown(g.onLinkDown)
	g.server, err = zinxkit.Listen(zinxkit.Config{
		Name:     g.cfg.ID,
		Addr:     g.cfg.ClientListen,
		MaxFrame: g.cfg.MaxFrame,
		Writer:   frame.WriterConfig{MaxPending: g.cfg.SendQueue},
		Logger:   g.log,
		CertFile: g.cfg.TLSCertFile,
		KeyFile:  g.cfg.TLSKeyFile,
	}, clientHandler{g})
	if err != nil {
		g.node.Close(ctx)
		return fmt.Errorf("gate %s: client listener: %w", g.cfg.ID, err)
	}
	g.clientAdv, err = clusternode.AdvertiseAddr(g.cfg.Advertise, g.server.Addr())
	if err == nil {
		err = g.startExtraListeners()
	}
	if err != nil {
		g.abortStart(ctx)
		return err
	}
	routes := make([]registry.Route, 0, len(g.handlers))
	for _, h := range g.handlers {
		routes = append(routes, h.route)
	}
	if g.testHookRegister != nil {
		g.testHookRegister(ctx)
	}
	if err := g.node.Register(ctx, g.clientAdv, routes); err != nil {
		g.abortStart(ctx)
		return err
	}
	g.goLoop(g.sweepLoop)
	g.goLoop(g.refreshLoop)
	if g.cfg.IdleTimeout > 0 {
		g.goLoop(g.idleLoop)
	}
	g.goLoop(g.onlineLoop)
	g.goLoop(g.inboxSweepLoop)
	g.goLoop(g.connsLoop)
	return nil
}

// abortStartTimeout bounds the stop of a gate whose Start failed after its
// client listener was up (see abortStart).
const abortStartTimeout = 10 * time.Second

// abortStart stops a gate whose Start failed once its client listener was
// up: clients may have connected and logged in meanwhile (registering in
// etcd can take a while, and a SIGTERM may interrupt it), so they are
// stopped as Shutdown stops them: told why (msgID 9), closed, their Redis
// records removed. ctx may be over already (an interrupted start): the
// stop gets abortStartTimeout of its own.
func (g *Gate) abortStart(ctx context.Context) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortStartTimeout)
	defer cancel()
	if err := g.Shutdown(sctx); err != nil {
		g.log.Warn("stopping the gate after a failed start", "cause", err)
	}
}

// goLoop runs fn in a goroutine the gate waits for on Shutdown. Once
// Shutdown has started waiting, fn runs on the caller's goroutine instead
// (a WaitGroup must not grow while it is waited on).
func (g *Gate) goLoop(fn func()) {
	g.wgMu.Lock()
	if g.wgClosed {
		g.wgMu.Unlock()
		fn()
		return
	}
	g.wg.Add(1)
	g.wgMu.Unlock()
	go func() {
		defer g.wg.Done()
		fn()
	}()
}

// ID returns the gate's node id.
func (g *Gate) ID() string { return g.cfg.ID }

// ClientAddr returns the address clients connect to (as advertised).
func (g *Gate) ClientAddr() string { return g.clientAdv }

// ListenAddr returns the address the client listener is bound to.
func (g *Gate) ListenAddr() string { return g.server.Addr() }

// RelayAddr returns the advertised relay address.
func (g *Gate) RelayAddr() string { return g.node.RelayAddr() }

// Topology returns the live cluster view the gate routes by.
func (g *Gate) Topology() *registry.Topology { return g.node.Topology }

// Sessions returns the number of connected clients.
func (g *Gate) Sessions() int {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return len(g.clients)
}

// LoggedIn returns the number of logged-in sessions on this gate.
func (g *Gate) LoggedIn() int {
	g.mu.RLock()
	defer g.mu.RUnlock()
	n := 0
	for _, c := range g.clients {
		if u, _ := c.identity(); u != "" {
			n++
		}
	}
	return n
}

// RefusedReplies returns how many replies the gate dropped because they
// answered no open request of the sending node and session: late answers
// to requests that timed out, or a node answering for another.
func (g *Gate) RefusedReplies() int64 { return g.refusedReplies.Load() }

// Pending returns the number of forwarded requests not answered yet.
func (g *Gate) Pending() int { return g.pending.len() }

// Registered reports whether the gate is registered in etcd right now.
func (g *Gate) Registered() bool { return g.node != nil && g.node.Registered() }

// Reregistrations returns how many times the gate had to register again.
func (g *Gate) Reregistrations() int64 { return g.node.Reregistrations() }

// RelayStats returns the relay's counters.
func (g *Gate) RelayStats() relay.Stats { return g.node.Relay.Stats() }

// RelayPeers returns the nodes this gate has a live outbound link to.
func (g *Gate) RelayPeers() []string { return g.node.Relay.Peers() }

// SessionStats returns the session directory's counters.
func (g *Gate) SessionStats() session.Stats { return g.node.Sessions.Stats() }

// PingRedis checks that Redis answers.
func (g *Gate) PingRedis(ctx context.Context) error { return g.node.Sessions.Ping(ctx) }

// Done is closed when Shutdown has finished.
func (g *Gate) Done() <-chan struct{} { return g.done }

// Shutdown stops the gate: it leaves etcd, tells every client why it is
// being closed (msgID 9), closes the connections, removes their Redis
// records and stops the relay. Safe to call twice (the second call returns
// what the first did). ctx bounds the waits: when it ends before every
// connection has closed (a gate handler that does not return holds its
// connection) or every cleanup has finished, Shutdown stops waiting,
// closes the rest and returns ctx.Err().
func (g *Gate) Shutdown(ctx context.Context) error {
	g.stopOnce.Do(func() {
		defer close(g.done)
		g.stopErr = g.shutdown(ctx)
	})
	return g.stopErr
}

func (g *Gate) shutdown(ctx context.Context) error {
	g.stopping.Store(true)
	if g.node == nil {
		g.cancel()
		return nil
	}
	if err := g.node.Deregister(ctx); err != nil {
		g.log.Warn("deregister failed; the lease will expire", "cause", err)
	}
	g.node.AnnounceLeaving(ctx)
	if g.server != nil {
		notice := kickPayload("gate shutting down")
		var all []*client
		g.mu.RLock()
		for _, c := range g.clients {
			all = append(all, c)
		}
		g.mu.RUnlock()
		for _, c := range all {
			_ = c.conn.Send(MsgKick, notice)
		}
		// Let the notices be written: they normally are at once; the
		// bound (5s for them all) covers a starved or loaded machine.
		deadline := time.Now().Add(5 * time.Second)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		for _, c := range all {
			if d := time.Until(deadline); d > 0 {
				_ = c.conn.Flush(d)
			}
		}
		g.stopListeners()
		// Wait for OnClose of every connection (it starts the unbinds).
		for g.Sessions() > 0 && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
	g.cancel()
	g.wgMu.Lock()
	g.wgClosed = true
	g.wgMu.Unlock()
	_ = waitgroup.Wait(ctx, &g.wg) // a timeout shows in ctx.Err below
	gaveUp := ctx.Err()
	if gaveUp != nil {
		g.log.Warn("gate stop did not finish in time; closing what is left", "sessions", g.Sessions(), "cause", gaveUp)
	}
	g.node.Close(ctx)
	g.log.Info("gate stopped")
	return gaveUp
}

// sweepLoop answers timed-out forwarded requests with error frames.
func (g *Gate) sweepLoop() {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case now := <-t.C:
			for _, r := range g.pending.expire(now) {
				text := r.reason
				if text == "" {
					text = fmt.Sprintf("request timed out after %v (node %s)", g.cfg.RequestTimeout, r.node)
				}
				g.sendErrorTo(r.session, r.msgID, text)
			}
		}
	}
}

// idleLoop closes connections that have sent no byte for IdleTimeout,
// except those waiting for answers to their requests.
func (g *Gate) idleLoop() {
	t := time.NewTicker(min(max(g.cfg.IdleTimeout/4, 10*time.Millisecond), 5*time.Second))
	defer t.Stop()
	var idle []*client
	for {
		select {
		case <-g.ctx.Done():
			return
		case now := <-t.C:
			cutoff := now.Add(-g.cfg.IdleTimeout)
			idle = idle[:0]
			g.mu.RLock()
			for _, c := range g.clients {
				if len(c.slots) == 0 && c.conn.LastRead().Before(cutoff) && !c.closing.Load() {
					idle = append(idle, c)
				}
			}
			g.mu.RUnlock()
			for i, c := range idle {
				g.kickLocal(c, "idle")
				idle[i] = nil
			}
		}
	}
}

// refreshLoop keeps this gate's Redis records alive, rewrites them after a
// Redis restart, and kicks sessions whose user logged in elsewhere meanwhile.
func (g *Gate) refreshLoop() {
	t := time.NewTicker(g.cfg.SessionTTL / 3)
	defer t.Stop()
	claimed := g.node.Reregistrations()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		}
		g.refreshOnce()
		if n := g.node.Reregistrations(); n != claimed {
			// The lease was lost: the backends may have taken this gate
			// for dead and purged its room members meanwhile.
			claimed = n
			if g.reclaiming.CompareAndSwap(false, true) {
				// Beside the refreshes: one join per member may take a while.
				g.goLoop(func() {
					defer g.reclaiming.Store(false)
					g.reclaimRooms()
				})
			}
		}
	}
}

// refreshOnce re-asserts the records of every logged-in session and kicks
// those that were lost, also when the refresh failed part way (what it
// learnt before the failure still holds).
//
// It holds refreshMu from taking the list of sessions until Redis has
// answered, and a closed session's cleanup (OnClose) deletes its records
// only under refreshMu too, after the session left g.clients. So a refresh
// that listed a session finishes before that session's records are
// deleted, and one that starts later does not list it: a closed session's
// records are never written again.
func (g *Gate) refreshOnce() {
	g.refreshMu.Lock()
	defer g.refreshMu.Unlock()
	var bs []session.Binding
	g.mu.RLock()
	for _, c := range g.clients {
		if u, _ := c.identity(); u != "" {
			bs = append(bs, session.Binding{Session: c.sid, User: u, Owner: session.Owner{Gate: g.cfg.ID, Token: c.token}})
		}
	}
	g.mu.RUnlock()
	if len(bs) == 0 {
		return
	}
	if g.testHookRefresh != nil {
		g.testHookRefresh()
	}
	ctx, cancel := context.WithTimeout(g.ctx, g.cfg.SessionTTL/3)
	lost, err := g.node.Sessions.Refresh(ctx, bs)
	cancel()
	if err != nil {
		g.log.Warn("session refresh failed", "sessions", len(bs), "lost", len(lost), "cause", err)
	}
	for _, b := range lost {
		if c := g.client(b.Session); c != nil {
			g.kickLocal(c, "logged in elsewhere")
		}
	}
}

func (g *Gate) client(sid string) *client {
	g.mu.RLock()
	c := g.clients[sid]
	g.mu.RUnlock()
	return c
}

func (g *Gate) clientBytes(sid []byte) *client {
	g.mu.RLock()
	c := g.clients[string(sid)]
	g.mu.RUnlock()
	return c
}

// errorFrame is the JSON body of msgID 65535.
type errorFrame struct {
	MsgID uint32 `json:"msg_id"`
	Error string `json:"error"`
}

func errorPayload(msgID uint32, text string) []byte {
	b, _ := json.Marshal(errorFrame{MsgID: msgID, Error: text})
	return b
}

func kickPayload(reason string) []byte {
	b, _ := json.Marshal(struct {
		Reason string `json:"reason"`
	}{reason})
	return b
}

func (g *Gate) sendError(c *client, msgID uint32, text string) {
	g.cfg.Observer.ErrorFrame(msgID)
	_ = c.conn.Send(MsgError, errorPayload(msgID, text))
}

// deliver writes a frame from the cluster to a client.
func (g *Gate) deliver(c *client, msgID uint32, payload []byte) {
	g.cfg.Observer.MessageOut(msgID)
	_ = c.conn.Send(msgID, payload)
}

func (g *Gate) sendErrorTo(sid string, msgID uint32, text string) {
	if c := g.client(sid); c != nil {
		g.sendError(c, msgID, text)
	}
}

// kickLocal tells a local client why, then closes it once that is written.
func (g *Gate) kickLocal(c *client, reason string) {
	if !c.closing.CompareAndSwap(false, true) {
		return
	}
	g.cfg.Observer.Kicked()
	g.log.Info("session kicked", "session", c.sid, "reason", reason)
	g.sayAndClose(c, reason)
}

// sayAndClose sends c the kick notice with reason and closes the
// connection once that is written (at most a second later), from a
// goroutine of the gate.
func (g *Gate) sayAndClose(c *client, reason string) {
	_ = c.conn.Send(MsgKick, kickPayload(reason))
	g.goLoop(func() {
		_ = c.conn.Flush(time.Second)
		c.conn.Close()
	})
}

// kickSession kicks sid wherever it lives.
func (g *Gate) kickSession(ctx context.Context, sid, reason string) {
	if c := g.client(sid); c != nil {
		g.kickLocal(c, reason)
		return
	}
	if err := g.node.Kick(ctx, sid, reason); err != nil && !errors.Is(err, clusternode.ErrOffline) {
		g.log.Warn("kick failed", "session", sid, "cause", err)
	}
}

// onLinkDown avoids a node whose link broke and answers every request
// forwarded to it with an error frame, unless its answer still arrives
// within linkGrace.
func (g *Gate) onLinkDown(nodeID string, _ error) {
	g.markSuspect(nodeID)
	g.pending.failNodeSoon(nodeID, time.Now().Add(linkGrace), fmt.Sprintf("node %s went away", nodeID))
}

// onEnvelope handles what other nodes send this gate.
func (g *Gate) onEnvelope(env *relay.Envelope) {
	switch env.Kind {
	case relay.KindReply:
		// Only the node a request was forwarded to may answer it, and only
		// to the session that sent it (Source is the authenticated peer).
		var ok bool
		if env.Flags&relay.FlagDone != 0 {
			_, ok = g.pending.doneFor(env.Seq, env.Source, env.Session)
		} else {
			ok = g.pending.answers(env.Seq, env.Source, env.Session)
		}
		if !ok {
			g.refusedReplies.Add(1)
			g.log.Debug("reply refused: not an open request of that node and session", "from", string(env.Source), "seq", env.Seq)
			return
		}
		if c := g.clientBytes(env.Session); c != nil {
			g.deliver(c, env.MsgID, env.Payload)
		}
	case relay.KindDone:
		r, ok := g.pending.done(env.Seq, env.Source)
		if ok && env.Flags&relay.FlagError != 0 {
			g.sendErrorTo(r.session, r.msgID, string(env.Payload))
		}
	case relay.KindPush:
		if env.MsgID == inbox.MsgMessage {
			g.onReliable(env)
			return
		}
		if c := g.clientBytes(env.Session); c != nil {
			g.deliver(c, env.MsgID, env.Payload)
		} else {
			// Its owner record pointed here but the session is gone.
			g.node.Sessions.Forget(string(env.Session))
		}
	case relay.KindKick:
		if c := g.clientBytes(env.Session); c != nil {
			g.kickLocal(c, string(env.Payload))
		}
	case relay.KindBroadcast:
		g.broadcastLocal(env.MsgID, env.Payload)
	default:
		if !g.onExtraEnvelope(env) {
			g.log.Debug("unexpected envelope", "kind", env.Kind, "from", string(env.Source))
		}
	}
}

func (g *Gate) broadcastLocal(msgID uint32, payload []byte) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	for _, c := range g.clients {
		if u, _ := c.identity(); u != "" {
			g.deliver(c, msgID, payload)
		}
	}
}

// openClient gives a new connection, of any transport, its session.
func (g *Gate) openClient(conn clientConn, tr transport) *client {
	sid := session.NewID()
	c := &client{conn: conn, transport: tr, sid: sid, sidB: []byte(sid), token: session.NewToken(), slots: make(chan struct{}, g.cfg.MaxInflight)}
	if g.stopping.Load() {
		c.closing.Store(true)
		_ = conn.Send(MsgKick, kickPayload("gate shutting down"))
		conn.Close()
		return c
	}
	g.mu.Lock()
	if len(g.clients) >= g.cfg.MaxConns {
		g.mu.Unlock()
		g.refuseFull(c)
		return c
	}
	g.clients[sid] = c
	g.mu.Unlock()
	g.conns[tr].Add(1)
	g.cfg.Observer.ConnOpened(tr.String())
	if g.cfg.ClientRate > 0 {
		c.limiter = rate.NewLimiter(rate.Limit(g.cfg.ClientRate), g.cfg.ClientBurst)
	}
	if g.cfg.LoginTimeout > 0 {
		c.mu.Lock()
		c.loginTimer = time.AfterFunc(g.cfg.LoginTimeout, func() {
			if u, _ := c.identity(); u == "" {
				g.kickLocal(c, "login timeout")
			}
		})
		c.mu.Unlock()
	}
	return c
}

// refuseFull tells a connection over Config.MaxConns why and closes it.
func (g *Gate) refuseFull(c *client) {
	c.closing.Store(true)
	if g.fullLogged.CompareAndSwap(false, true) {
		g.log.Warn("gate full: refusing new connections", "max_conns", g.cfg.MaxConns)
	}
	g.sayAndClose(c, "gate full")
}

// Full reports whether the gate holds Config.MaxConns connections, so that
// a new one would be refused ("gate full"); /readyz reports it not ready.
func (g *Gate) Full() bool { return g.Sessions() >= g.cfg.MaxConns }

// closeClient forgets a connection that ended and unbinds its session.
func (g *Gate) closeClient(c *client) {
	g.mu.Lock()
	if g.clients[c.sid] == c {
		delete(g.clients, c.sid)
		g.conns[c.transport].Add(-1)
		g.cfg.Observer.ConnClosed(c.transport.String())
	}
	full := len(g.clients) >= g.cfg.MaxConns
	g.mu.Unlock()
	if !full && g.fullLogged.Load() {
		g.fullLogged.Store(false)
	}
	c.mu.Lock()
	if c.loginTimer != nil {
		c.loginTimer.Stop()
	}
	c.mu.Unlock()
	g.sessionClosed(c)
	user, _ := c.identity()
	if user == "" {
		return
	}
	g.inbox.remove(user, c)
	// Compare-and-delete: a record that moved to another gate stays.
	g.goLoop(func() {
		// After any refresh that listed this session (see refreshOnce).
		g.refreshMu.RLock()
		defer g.refreshMu.RUnlock()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if _, err := g.node.Sessions.UnbindUser(ctx, user, c.sid); err != nil {
			g.log.Warn("unbind user failed; the record will expire", "user", user, "session", c.sid, "cause", err)
		}
		if _, err := g.node.Sessions.UnbindSession(ctx, c.sid, session.Owner{Gate: g.cfg.ID, Token: c.token}); err != nil {
			g.log.Warn("unbind session failed; the record will expire", "session", c.sid, "cause", err)
		}
	})
}

// onFrame routes one client frame, whatever the transport; it runs on the
// connection's reader goroutine.
func (g *Gate) onFrame(c *client, msgID uint32, payload []byte) {
	if c.closing.Load() {
		return
	}
	if c.limiter != nil && !c.limiter.Allow() {
		g.cfg.Observer.MessageIn(msgID, "")
		g.sendError(c, msgID, "rate limited")
		return
	}
	if msgID == MsgHeartbeat {
		_ = c.conn.Send(MsgHeartbeat, payload)
		return
	}
	user, userB := c.identity()
	if msgID == inbox.MsgResume {
		g.cfg.Observer.MessageIn(msgID, registry.GateGroup)
		g.onResume(c, payload)
		return
	}
	// The gate's own handlers need no lookup: registration refuses any
	// other group claiming their msgIDs, and they work before the gate's
	// watch has seen its own registration.
	if lh, ok := g.handlers[msgID]; ok {
		g.cfg.Observer.MessageIn(msgID, registry.GateGroup)
		if !lh.route.Anonymous && user == "" {
			g.sendError(c, msgID, "not logged in")
			return
		}
		// The handler owns its payload (zinx reuses the read buffer).
		ctx := &Context{g: g, c: c, msgID: msgID, payload: bytes.Clone(payload)}
		if err := safeCall(lh.fn, ctx); err != nil {
			g.sendError(c, msgID, err.Error())
		}
		return
	}
	route, ok := g.node.Topology.Route(msgID)
	if !ok {
		g.cfg.Observer.MessageIn(msgID, "")
		g.sendError(c, msgID, fmt.Sprintf("unknown msgID %d", msgID))
		return
	}
	g.cfg.Observer.MessageIn(msgID, route.Group)
	if !route.Anonymous && user == "" {
		g.sendError(c, msgID, "not logged in")
		return
	}
	if route.Group == registry.GateGroup {
		// Another gate serves it (a newer version of the app): not here.
		g.sendError(c, msgID, fmt.Sprintf("msgID %d is a gate route this gate does not serve", msgID))
		return
	}
	node, ok := g.node.Pick(route.Group, c.sid)
	if !ok {
		g.sendError(c, msgID, fmt.Sprintf("no live node for group %q", route.Group))
		return
	}
	seq := g.seq.Add(1)
	env := relay.Envelope{Kind: relay.KindForward, MsgID: msgID, Seq: seq, Session: c.sidB, User: userB, Payload: payload}
	for attempt := 0; ; attempt++ {
		if !g.acquireSlot(c) {
			return // the connection or the gate is closing
		}
		g.pending.add(seq, pendingRequest{session: c.sid, msgID: msgID, node: node.ID, deadline: time.Now().Add(g.cfg.RequestTimeout), slots: c.slots})
		sctx, cancel := g.ctx, context.CancelFunc(func() {})
		if attempt == 0 && !g.node.Relay.LinkUp(node.ID) && g.hasOther(route.Group, c.sid, node.ID) {
			// No link to it yet (new, or its link just broke): wait for
			// the dial only briefly while another node of the group can
			// serve, so a dial into a partition does not stall clients.
			sctx, cancel = context.WithTimeout(g.ctx, linkWait)
		}
		err := g.node.Relay.Send(sctx, node.ID, &env)
		if err != nil && sctx != g.ctx && sctx.Err() != nil && g.ctx.Err() == nil {
			// Still dialing after linkWait: the node's fault, try another.
			err = fmt.Errorf("%w: %s still dialing after %v: %w", relay.ErrDial, node.ID, linkWait, err)
		}
		cancel()
		if err == nil {
			c.noteHandler(node.ID)
			return
		}
		if !g.pending.remove(seq) {
			return // answered or timed out meanwhile: the client was told
		}
		if !linkError(err) {
			// The message itself cannot be sent (too large, ...) or the
			// gate is stopping: not the node's fault, nor worth a retry.
			g.sendError(c, msgID, sendFailure(err))
			return
		}
		// The node cannot be reached: avoid it and try the next one of
		// the group once, so its sessions move before its lease expires.
		g.markSuspect(node.ID)
		next, ok := g.node.PickOther(route.Group, c.sid)
		if attempt > 0 || !ok {
			g.sendError(c, msgID, fmt.Sprintf("node %s unreachable: %v", node.ID, err))
			return
		}
		node = next
	}
}

// linkError reports whether a relay Send failed because of the link to the
// peer (which makes the peer suspect), rather than because of the envelope
// or this gate stopping.
func linkError(err error) bool {
	for _, e := range [...]error{relay.ErrDial, relay.ErrHandshake, relay.ErrBackpressure, relay.ErrLinkDown, relay.ErrLinkDropped, relay.ErrUnknownPeer} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// sendFailure is the error frame text for a Send that failed without a
// link error.
func sendFailure(err error) string {
	switch {
	case errors.Is(err, relay.ErrTooLarge):
		return "message too large"
	case errors.Is(err, relay.ErrClosed), errors.Is(err, context.Canceled):
		return "gate shutting down"
	}
	return "cannot forward: " + err.Error()
}

// acquireSlot takes one of c's in-flight tokens. When all are taken, or
// when more than half of c's send queue waits to be written (the client
// reads its answers slower than it sends requests), it blocks the
// connection's reader, so the gate stops reading this client and TCP
// pushes back on it alone, until answers come back (or are written), the
// connection closes or the gate stops; it returns false in the last two
// cases.
func (g *Gate) acquireSlot(c *client) bool {
	if c.conn.Queued() > g.cfg.SendQueue/2 && !g.waitDrain(c) {
		return false
	}
	select {
	case c.slots <- struct{}{}:
		return true
	default:
	}
	select {
	case c.slots <- struct{}{}:
		return true
	case <-c.conn.Context().Done():
		return false
	case <-g.ctx.Done():
		return false
	}
}

// waitDrain waits until at most half of c's send queue is waiting, or the
// connection or the gate ends (false).
func (g *Gate) waitDrain(c *client) bool {
	for c.conn.Queued() > g.cfg.SendQueue/2 {
		if c.conn.Context().Err() != nil || g.ctx.Err() != nil {
			return false
		}
		_ = c.conn.Flush(50 * time.Millisecond)
	}
	return true
}

func safeCall(fn HandlerFunc, c *Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.g.log.Error("gate handler panicked", "msg_id", c.msgID, "panic", r)
			err = errors.New("internal error")
		}
	}()
	return fn(c)
}
