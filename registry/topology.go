package registry

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// sanityEvery is how often a watching Topology checks that etcd's revision
// has not gone backwards (etcd wiped or restored from an older backup), which
// a resumed watch stream would never report.
const sanityEvery = 10 * time.Second

// EventType says what happened to a node.
type EventType int

// Event types.
const (
	NodeAdded EventType = iota + 1
	NodeRemoved
	NodeUpdated
)

// String returns "added", "removed" or "updated".
func (e EventType) String() string {
	switch e {
	case NodeAdded:
		return "added"
	case NodeRemoved:
		return "removed"
	case NodeUpdated:
		return "updated"
	}
	return fmt.Sprintf("EventType(%d)", int(e))
}

// Event is a change of the topology. For NodeRemoved, Node is the last known
// value.
type Event struct {
	Type EventType
	Node Node
}

// Topology is a live view of the nodes and routes under the prefix. Reads
// (Node, Route, Pick, ...) are lock-free: each sees one immutable snapshot,
// swapped atomically by the watch goroutine. Its methods are safe for
// concurrent use.
type Topology struct {
	cfg  Config
	cli  *clientv3.Client
	log  *slog.Logger
	view atomic.Pointer[snapshot]

	subMu sync.Mutex
	subs  []*subscriber

	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once

	// st is owned by the watch goroutine (and Watch before it starts).
	st state

	// Test hook: pause/resume the watch stream without closing the view.
	pauseMu     sync.Mutex
	resumeCh    chan struct{} // non-nil while paused
	pauseAck    chan struct{} // closed once the loop has stopped watching
	watchCancel context.CancelFunc
}

type subscriber struct {
	fn  func(Event)
	off atomic.Bool
}

// snapshot is an immutable view of the topology.
type snapshot struct {
	rev       int64
	byID      map[string]*nodeEntry
	groups    map[string]*groupView
	all       []Node // sorted by group, then ID
	routes    map[uint32]Route
	routeList []Route // sorted by msgID
	down      map[uint32]bool
}

type nodeEntry struct {
	node Node
	raw  []byte // the stored JSON, to tell updates from re-puts
}

// groupView holds a group's nodes sorted by ID and their precomputed hashes.
type groupView struct {
	nodes  []Node
	hashes []uint64
}

// Watch reads everything under the prefix, returns a Topology showing it,
// and keeps it current from then on by watching from the next revision until
// Close. ctx bounds the first read only. On any watch failure the view is
// rebuilt from a fresh read (retried with backoff while etcd is unreachable,
// the last view staying in use meanwhile) and watching resumes.
func Watch(ctx context.Context, cfg Config) (*Topology, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t := &Topology{
		cfg:  cfg,
		cli:  cfg.Client,
		log:  cfg.Logger,
		done: make(chan struct{}),
		st:   newState(),
	}
	if err := t.resync(ctx); err != nil {
		return nil, fmt.Errorf("registry: watch %s: %w", cfg.Prefix, err)
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	go t.run()
	return t, nil
}

// Close stops the watch goroutine; the last view stays readable. It is safe
// to call twice.
func (t *Topology) Close() {
	t.closeOnce.Do(func() {
		t.cancel()
		<-t.done
	})
}

// Node returns the node with id. Its Routes are shared with the view and
// must not be modified.
func (t *Topology) Node(id string) (Node, bool) {
	e := t.view.Load().byID[id]
	if e == nil {
		return Node{}, false
	}
	return e.node, true
}

// Nodes returns the nodes of group sorted by ID (a fresh slice; the Nodes in
// it share their Routes with the view and must not be modified).
func (t *Topology) Nodes(group string) []Node {
	g := t.view.Load().groups[group]
	if g == nil {
		return nil
	}
	return slices.Clone(g.nodes)
}

// All returns every node sorted by group, then ID (a fresh slice; the Nodes
// in it share their Routes with the view and must not be modified).
func (t *Topology) All() []Node { return slices.Clone(t.view.Load().all) }

// Route returns who serves msgID. If two groups claim it (a registration
// race), the claim whose key was created first wins. A route whose group
// has no live node any more is still returned for Config.RouteMemory after
// its last node left (unless another group claims the msgID): the caller
// then finds no node to Pick and can say so (see RouteDown).
func (t *Topology) Route(msgID uint32) (Route, bool) {
	r, ok := t.view.Load().routes[msgID]
	return r, ok
}

// RouteDown reports whether msgID is a remembered route whose group has no
// live node (see Route).
func (t *Topology) RouteDown(msgID uint32) bool { return t.view.Load().down[msgID] }

// Routes returns every route sorted by msgID (a fresh slice), remembered
// down routes included (see RouteDown).
func (t *Topology) Routes() []Route { return slices.Clone(t.view.Load().routeList) }

// Pick returns the node of group that owns key by rendezvous
// (highest-random-weight) hashing: the same key maps to the same node in every
// process, and when a node leaves or joins only the keys it owned or wins
// move. It does not allocate.
func (t *Topology) Pick(group, key string) (Node, bool) {
	return t.PickExcept(group, key, nil)
}

// PickExcept is Pick over the nodes of group for which skip returns false:
// the node a key moves to when its own node is known to be unreachable
// (rendezvous hashing keeps every other key where it was). skip may be nil.
func (t *Topology) PickExcept(group, key string, skip func(nodeID string) bool) (Node, bool) {
	g := t.view.Load().groups[group]
	if g == nil || len(g.nodes) == 0 {
		return Node{}, false
	}
	kh := fnv1a64(key)
	best, bw := -1, uint64(0)
	for i := range g.hashes {
		if skip != nil && skip(g.nodes[i].ID) {
			continue
		}
		if w := weight(kh, g.hashes[i]); best < 0 || w > bw {
			best, bw = i, w
		}
	}
	if best < 0 {
		return Node{}, false
	}
	return g.nodes[best], true
}

// Revision returns the etcd revision the view reflects.
func (t *Topology) Revision() int64 { return t.view.Load().rev }

// Subscribe calls fn for every change, from the watch goroutine, after the
// view has been updated (so fn sees the new view). fn must not block. cancel
// stops further calls (one already running may finish) and is safe to call
// twice.
func (t *Topology) Subscribe(fn func(Event)) (cancel func()) {
	s := &subscriber{fn: fn}
	t.subMu.Lock()
	t.subs = append(t.subs, s)
	t.subMu.Unlock()
	return func() {
		s.off.Store(true)
		t.subMu.Lock()
		if i := slices.Index(t.subs, s); i >= 0 {
			t.subs = slices.Delete(t.subs, i, i+1)
		}
		t.subMu.Unlock()
	}
}

// run watches until Close, re-reading the prefix after every failure.
func (t *Topology) run() {
	defer close(t.done)
	for {
		if !t.waitUnpaused() {
			return
		}
		err := t.watch()
		if t.ctx.Err() != nil {
			return
		}
		if errors.Is(err, errPaused) {
			continue
		}
		t.log.Warn("registry: watch reset; re-reading the topology", "prefix", t.cfg.Prefix, "revision", t.st.rev, "cause", err)
		bo := newBackoff()
		limit := rateLimit{every: retryLogEvery}
		for {
			err := t.resync(t.ctx)
			if err == nil {
				break
			}
			if t.ctx.Err() != nil {
				return
			}
			if limit.allow() {
				t.log.Warn("registry: topology re-read failed; keeping the last view", "prefix", t.cfg.Prefix, "cause", err)
			}
			if !sleep(t.ctx, bo.next()) {
				return
			}
		}
	}
}

var errPaused = errors.New("paused")

// watch follows changes from the view's revision + 1 and returns why it
// stopped.
func (t *Topology) watch() error {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(t.ctx))
	defer cancel()
	t.pauseMu.Lock()
	if t.resumeCh != nil {
		t.pauseMu.Unlock()
		return errPaused
	}
	t.watchCancel = cancel
	t.pauseMu.Unlock()
	defer func() {
		t.pauseMu.Lock()
		t.watchCancel = nil
		t.pauseMu.Unlock()
	}()

	wch := t.cli.Watch(ctx, t.cfg.Prefix+"/", clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(t.st.rev+1))
	tick := time.NewTicker(sanityEvery)
	defer tick.Stop()
	for {
		select {
		case wr, ok := <-wch:
			if !ok {
				if ctx.Err() != nil && t.ctx.Err() == nil && t.isPaused() {
					return errPaused
				}
				return errors.New("watch channel closed")
			}
			if err := wr.Err(); err != nil {
				if t.isPaused() {
					return errPaused
				}
				return err
			}
			if len(wr.Events) == 0 {
				continue
			}
			for _, ev := range wr.Events {
				t.st.apply(t.cfg, t.log, ev.Kv, ev.Type == clientv3.EventTypeDelete)
			}
			t.publish(wr.Events[len(wr.Events)-1].Kv.ModRevision)
		case <-tick.C:
			gctx, gcancel := context.WithTimeout(ctx, t.cfg.callTimeout())
			resp, err := t.cli.Get(gctx, t.cfg.nodesPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
			gcancel()
			if err == nil && resp.Header.Revision < t.st.rev {
				return fmt.Errorf("etcd is at revision %d, behind the view's %d (etcd lost its data?)", resp.Header.Revision, t.st.rev)
			}
		}
	}
}

// resync replaces the state with a fresh read of the prefix and publishes it.
func (t *Topology) resync(ctx context.Context) error {
	gctx, cancel := t.cfg.callCtx(ctx)
	defer cancel()
	resp, err := t.cli.Get(gctx, t.cfg.Prefix+"/", clientv3.WithPrefix())
	if err != nil {
		return err
	}
	st := newState()
	st.warned = t.st.warned
	for _, kv := range resp.Kvs {
		st.apply(t.cfg, t.log, kv, false)
	}
	first := t.view.Load() == nil
	t.st = st
	t.publish(resp.Header.Revision)
	if !first {
		v := t.view.Load()
		t.log.Info("registry: topology re-read", "prefix", t.cfg.Prefix, "revision", v.rev, "nodes", len(v.all), "routes", len(v.routeList))
	}
	return nil
}

// publish builds a snapshot of the state at rev, swaps it in and tells the
// subscribers what changed.
func (t *Topology) publish(rev int64) {
	t.st.rev = rev
	old := t.view.Load()
	nw := t.st.build(t.log)
	t.view.Store(nw)
	if old == nil {
		return
	}
	events := diff(old, nw)
	if len(events) == 0 {
		return
	}
	t.subMu.Lock()
	subs := slices.Clone(t.subs)
	t.subMu.Unlock()
	for _, ev := range events {
		for _, s := range subs {
			if !s.off.Load() {
				s.fn(ev)
			}
		}
	}
}

// diff lists the node changes from a to b, in (group, ID) order, removals
// first.
func diff(a, b *snapshot) []Event {
	var evs []Event
	for _, n := range a.all {
		if b.byID[n.ID] == nil {
			evs = append(evs, Event{Type: NodeRemoved, Node: n})
		}
	}
	for _, n := range b.all {
		e := b.byID[n.ID]
		if e.node.Group != n.Group {
			continue // shadowed duplicate ID
		}
		switch o := a.byID[n.ID]; {
		case o == nil:
			evs = append(evs, Event{Type: NodeAdded, Node: n})
		case !bytes.Equal(o.raw, e.raw):
			evs = append(evs, Event{Type: NodeUpdated, Node: n})
		}
	}
	return evs
}

// state is the watch goroutine's mutable mirror of the keys.
type state struct {
	rev    int64
	nodes  map[string]nodeRec  // by etcd key
	routes map[string]routeRec // by etcd key
	known  map[string]routeRec // remembered routes, by etcd key
	warned map[uint32]string   // msgID -> conflict already warned about
}

type nodeRec struct {
	node      Node
	raw       []byte
	createRev int64
}

type routeRec struct {
	route     Route
	nodeID    string
	createRev int64
}

func newState() state {
	return state{
		nodes:  make(map[string]nodeRec),
		routes: make(map[string]routeRec),
		known:  make(map[string]routeRec),
		warned: make(map[uint32]string),
	}
}

// apply records a put or a delete of kv. Keys under the prefix that are
// neither node nor route keys are ignored; undecodable values are dropped
// with a warning.
func (st *state) apply(cfg Config, log *slog.Logger, kv *mvccpb.KeyValue, del bool) {
	key := string(kv.Key)
	switch {
	case strings.HasPrefix(key, cfg.nodesPrefix()):
		group, id, ok := parseNodeKey(key[len(cfg.nodesPrefix()):])
		if !ok {
			return
		}
		if del {
			delete(st.nodes, key)
			return
		}
		n, err := decodeNode(group, id, kv.Value)
		if err != nil {
			delete(st.nodes, key)
			log.Warn("registry: ignoring bad node key", "key", key, "cause", err)
			return
		}
		st.nodes[key] = nodeRec{node: n, raw: kv.Value, createRev: kv.CreateRevision}
	case strings.HasPrefix(key, cfg.routesPrefix()):
		msgID, nodeID, ok := parseRouteKey(key[len(cfg.routesPrefix()):])
		if !ok {
			return
		}
		if del {
			delete(st.routes, key)
			return
		}
		r, err := decodeRoute(msgID, kv.Value)
		if err != nil {
			delete(st.routes, key)
			log.Warn("registry: ignoring bad route key", "key", key, "cause", err)
			return
		}
		st.routes[key] = routeRec{route: r, nodeID: nodeID, createRev: kv.CreateRevision}
	case strings.HasPrefix(key, cfg.knownPrefix()):
		msgID, nodeID, ok := parseRouteKey(key[len(cfg.knownPrefix()):])
		if !ok {
			return
		}
		if del {
			delete(st.known, key)
			return
		}
		r, err := decodeRoute(msgID, kv.Value)
		if err != nil {
			delete(st.known, key)
			return
		}
		// createRev holds the last write here: the latest memory wins.
		st.known[key] = routeRec{route: r, nodeID: nodeID, createRev: kv.ModRevision}
	}
}

// build makes an immutable snapshot of the state.
func (st *state) build(log *slog.Logger) *snapshot {
	s := &snapshot{
		rev:    st.rev,
		byID:   make(map[string]*nodeEntry, len(st.nodes)),
		groups: make(map[string]*groupView),
		routes: make(map[uint32]Route),
	}
	recs := make([]nodeRec, 0, len(st.nodes))
	for _, r := range st.nodes {
		recs = append(recs, r)
	}
	slices.SortFunc(recs, func(a, b nodeRec) int {
		return cmp.Or(cmp.Compare(a.node.Group, b.node.Group), cmp.Compare(a.node.ID, b.node.ID))
	})
	s.all = make([]Node, 0, len(recs))
	byIDRev := make(map[string]int64, len(recs))
	for _, r := range recs {
		s.all = append(s.all, r.node)
		g := s.groups[r.node.Group]
		if g == nil {
			g = &groupView{}
			s.groups[r.node.Group] = g
		}
		g.nodes = append(g.nodes, r.node)
		g.hashes = append(g.hashes, hash64(r.node.ID))
		// The same ID in two groups: the older key wins Node(id).
		if prev, ok := byIDRev[r.node.ID]; !ok || r.createRev < prev {
			byIDRev[r.node.ID] = r.createRev
			s.byID[r.node.ID] = &nodeEntry{node: r.node, raw: r.raw}
		}
	}

	type claim struct {
		routeRec
		key string
	}
	claims := make(map[uint32][]claim)
	for k, r := range st.routes {
		claims[r.route.MsgID] = append(claims[r.route.MsgID], claim{r, k})
	}
	for msgID, cs := range claims {
		slices.SortFunc(cs, func(a, b claim) int {
			return cmp.Or(cmp.Compare(a.createRev, b.createRev), cmp.Compare(a.key, b.key))
		})
		win := cs[0]
		s.routes[msgID] = win.route
		var others []string
		for _, c := range cs[1:] {
			if c.route.Group != win.route.Group && !slices.Contains(others, c.route.Group) {
				others = append(others, c.route.Group)
			}
		}
		if len(others) == 0 {
			delete(st.warned, msgID)
			continue
		}
		slices.Sort(others)
		sig := win.route.Group + " vs " + strings.Join(others, ",")
		if st.warned[msgID] != sig {
			st.warned[msgID] = sig
			log.Warn("registry: msgID claimed by several groups; the first claim wins",
				"msg_id", msgID, "winner", win.route.Group, "node", win.nodeID, "others", others)
		}
	}
	for msgID := range st.warned {
		if _, ok := claims[msgID]; !ok {
			delete(st.warned, msgID)
		}
	}
	// Remembered routes fill in msgIDs no live node claims: the latest
	// memory of each wins. They are down unless their group has come back
	// with a node that does not serve the msgID any more (then the msgID is
	// just not served: forget it).
	latest := make(map[uint32]int64)
	for _, r := range st.known {
		msgID := r.route.MsgID
		if _, live := claims[msgID]; live {
			continue
		}
		if g := s.groups[r.route.Group]; g != nil && len(g.nodes) > 0 {
			continue
		}
		if rev, seen := latest[msgID]; seen && r.createRev <= rev {
			continue
		}
		latest[msgID] = r.createRev
		s.routes[msgID] = r.route
		if s.down == nil {
			s.down = make(map[uint32]bool)
		}
		s.down[msgID] = true
	}
	s.routeList = make([]Route, 0, len(s.routes))
	for _, r := range s.routes {
		s.routeList = append(s.routeList, r)
	}
	slices.SortFunc(s.routeList, func(a, b Route) int { return cmp.Compare(a.MsgID, b.MsgID) })
	return s
}

// pause stops the watch stream without closing the view and waits until the
// watch goroutine has stopped watching. Test hook.
func (t *Topology) pause() {
	t.pauseMu.Lock()
	if t.resumeCh != nil {
		t.pauseMu.Unlock()
		return
	}
	t.resumeCh = make(chan struct{})
	ack := make(chan struct{})
	t.pauseAck = ack
	cancel := t.watchCancel
	t.pauseMu.Unlock()
	if cancel != nil {
		cancel()
	}
	select {
	case <-ack:
	case <-t.done:
	}
}

// resume lets a paused watch goroutine watch again from the view's revision
// + 1. Test hook.
func (t *Topology) resume() {
	t.pauseMu.Lock()
	defer t.pauseMu.Unlock()
	if t.resumeCh != nil {
		close(t.resumeCh)
		t.resumeCh, t.pauseAck = nil, nil
	}
}

func (t *Topology) isPaused() bool {
	t.pauseMu.Lock()
	defer t.pauseMu.Unlock()
	return t.resumeCh != nil
}

// waitUnpaused blocks while paused; it reports false on Close.
func (t *Topology) waitUnpaused() bool {
	t.pauseMu.Lock()
	resume, ack := t.resumeCh, t.pauseAck
	t.pauseAck = nil
	t.pauseMu.Unlock()
	if resume == nil {
		return true
	}
	if ack != nil {
		close(ack)
	}
	select {
	case <-resume:
		return true
	case <-t.ctx.Done():
		return false
	}
}
