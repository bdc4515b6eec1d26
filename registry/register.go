package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ownLeases is how many of its own recent leases a Registration remembers, so
// that keys still hanging on an older lease of its own (etcd came back with
// its data) are not mistaken for another process's.
const ownLeases = 8

// retryLogEvery rate-limits the log line of a failing re-registration.
const retryLogEvery = 10 * time.Second

// Registration is a node published in etcd under a lease that it keeps
// alive. When the lease is lost (etcd restarted, a long pause, a revoke or a
// delete behind its back) it registers again by itself, with backoff, until
// Close. Its methods are safe for concurrent use.
type Registration struct {
	cfg     Config
	cli     *clientv3.Client
	log     *slog.Logger
	node    Node
	nodeKey string
	keys    []string // nodeKey, then one key per route

	lease      atomic.Int64 // current lease
	pending    atomic.Int64 // lease granted by put but not yet settled
	registered atomic.Bool
	reregs     atomic.Int64

	// own is touched only by put, which runs in Register before the loop
	// starts and afterwards only in the loop goroutine.
	own []clientv3.LeaseID

	ctx       context.Context // canceled by Close; bounds the loop's calls
	cancel    context.CancelFunc
	loopDone  chan struct{}
	memDone   chan struct{} // closed when the route-memory loop has ended
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// Register validates node (ID and Group non-empty and without '/', Kind gate
// or backend, RelayAddr and any ClientAddr a host:port others can dial),
// refuses a msgID that another group already serves (ErrRouteConflict) and an
// ID that another live process holds (ErrNodeExists), grants a lease, puts
// the node key and every route key on it in one transaction, and starts
// keeping it alive. Routes with an empty Group get the node's group; a route
// of another group is refused. ctx bounds the registration itself, not the
// life of the Registration: that ends with Close.
func Register(ctx context.Context, cfg Config, node Node) (*Registration, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n, err := normalize(node)
	if err != nil {
		return nil, err
	}
	if n.StartedAt.IsZero() {
		n.StartedAt = time.Now()
	}
	n.StartedAt = n.StartedAt.UTC()
	r := &Registration{
		cfg:      cfg,
		cli:      cfg.Client,
		log:      cfg.Logger,
		node:     n,
		nodeKey:  cfg.nodeKey(n.Group, n.ID),
		loopDone: make(chan struct{}),
		memDone:  make(chan struct{}),
		done:     make(chan struct{}),
	}
	r.keys = append(r.keys, r.nodeKey)
	for _, rt := range n.Routes {
		r.keys = append(r.keys, cfg.routeKey(rt.MsgID, n.ID))
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	lease, rev, err := r.put(ctx)
	if err != nil {
		r.cancel()
		return nil, err
	}
	r.lease.Store(int64(lease))
	r.registered.Store(true)
	r.log.Info("registry: registered", "node", n.ID, "group", n.Group, "kind", n.Kind,
		"relay", n.RelayAddr, "routes", len(n.Routes), "lease", fmt.Sprintf("%x", int64(lease)), "ttl", cfg.TTL)
	go r.run(lease, rev)
	go r.keepMemory()
	return r, nil
}

// LeaseID returns the lease the node's keys hang on right now; it changes
// when the node registers again.
func (r *Registration) LeaseID() clientv3.LeaseID { return clientv3.LeaseID(r.lease.Load()) }

// Node returns the node as published (routes sorted by msgID, groups filled
// in).
func (r *Registration) Node() Node {
	n := r.node
	n.Routes = slices.Clone(n.Routes)
	return n
}

// Registered reports whether the node's keys are believed present in etcd
// right now (for a readiness probe). It is false from the moment a loss is
// noticed until the node is registered again, and after Close.
func (r *Registration) Registered() bool { return r.registered.Load() }

// Reregistrations returns how many times the node had to register again.
func (r *Registration) Reregistrations() int64 { return r.reregs.Load() }

// Done is closed when Close has finished.
func (r *Registration) Done() <-chan struct{} { return r.done }

// Close stops the keepalive and revokes the lease, so the node's keys vanish
// at once. ctx (and a timeout of at most 5s) bounds the revoke; if it fails
// the keys expire with the lease TTL. Close is safe to call twice: later
// calls wait for the first and return its result.
func (r *Registration) Close(ctx context.Context) error {
	r.closeOnce.Do(func() {
		r.cancel()
		<-r.loopDone // every call of the loop runs under r.ctx: this is quick
		<-r.memDone  // likewise; the known keys stay, on their own lease
		r.registered.Store(false)
		cctx, cancel := context.WithTimeout(ctx, r.cfg.callTimeout())
		defer cancel()
		lease := clientv3.LeaseID(r.lease.Load())
		if err := r.revoke(cctx, lease); err != nil {
			r.closeErr = fmt.Errorf("registry: deregister %s: revoke lease %x: %w", r.node.ID, int64(lease), err)
		}
		if p := clientv3.LeaseID(r.pending.Load()); p != 0 && p != lease {
			_ = r.revoke(cctx, p)
		}
		if r.closeErr != nil {
			r.log.Warn("registry: deregistered; lease left to expire", "node", r.node.ID, "cause", r.closeErr)
		} else {
			r.log.Info("registry: deregistered", "node", r.node.ID, "group", r.node.Group)
		}
		close(r.done)
	})
	<-r.done
	return r.closeErr
}

// revoke revokes lease; a lease that is already gone is not an error.
func (r *Registration) revoke(ctx context.Context, lease clientv3.LeaseID) error {
	if lease == 0 {
		return nil
	}
	_, err := r.cli.Revoke(ctx, lease)
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return err
	}
	return nil
}

// run keeps the lease alive and registers again whenever it is lost, until
// Close.
func (r *Registration) run(lease clientv3.LeaseID, rev int64) {
	defer close(r.loopDone)
	for {
		cause := r.keep(lease, rev)
		if cause == nil {
			return
		}
		r.registered.Store(false)
		r.log.Warn("registry: lease lost", "node", r.node.ID, "lease", fmt.Sprintf("%x", int64(lease)), "cause", cause)
		var ok bool
		lease, rev, ok = r.reregister(lease)
		if !ok {
			return
		}
	}
}

// keep holds lease alive until it is lost (it returns the cause) or Close
// (it returns nil). Besides the keepalive stream it watches the node key
// from rev+1, so a delete or a revoke behind its back is noticed at once, and
// every TTL/2 checks that all keys are still present on the lease.
func (r *Registration) keep(lease clientv3.LeaseID, rev int64) error {
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	ka, err := r.cli.KeepAlive(ctx, lease)
	if err != nil {
		if r.ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("keepalive: %w", err)
	}
	wch := r.cli.Watch(ctx, r.nodeKey, clientv3.WithRev(rev+1))
	tick := time.NewTicker(max(r.cfg.TTL/2, 500*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return nil
		case _, ok := <-ka:
			if !ok {
				if r.ctx.Err() != nil {
					return nil
				}
				return errors.New("keepalive stopped (lease expired, revoked or unreachable for longer than the TTL)")
			}
		case wr, ok := <-wch:
			if !ok {
				// Closed by etcd (e.g. compacted): the periodic check still
				// guards the keys.
				wch = nil
				continue
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					return errors.New("node key deleted")
				}
				if ev.Kv.Lease != int64(lease) {
					return fmt.Errorf("node key rewritten under lease %x", ev.Kv.Lease)
				}
			}
		case <-tick.C:
			if cause := r.verify(ctx, lease); cause != nil {
				return cause
			}
		}
	}
}

// verify reports a cause if any key of the node is missing or hangs on
// another lease. An unreachable etcd is not a loss: the keepalive decides.
func (r *Registration) verify(ctx context.Context, lease clientv3.LeaseID) error {
	cause, _ := r.checkKeys(ctx, lease)
	return cause
}

// checkKeys reads every key of the node: cause says which is missing or on
// another lease; err is set (and cause nil) when etcd did not answer.
func (r *Registration) checkKeys(ctx context.Context, lease clientv3.LeaseID) (cause, err error) {
	ops := make([]clientv3.Op, len(r.keys))
	for i, k := range r.keys {
		ops[i] = clientv3.OpGet(k, clientv3.WithKeysOnly())
	}
	cctx, cancel := context.WithTimeout(ctx, r.cfg.callTimeout())
	defer cancel()
	resp, err := r.cli.Txn(cctx).Then(ops...).Commit()
	if err != nil {
		return nil, err
	}
	for i, rr := range resp.Responses {
		kvs := rr.GetResponseRange().GetKvs()
		if len(kvs) == 0 {
			return fmt.Errorf("key %s missing", r.keys[i]), nil
		}
		if kvs[0].Lease != int64(lease) {
			return fmt.Errorf("key %s on lease %x", r.keys[i], kvs[0].Lease), nil
		}
	}
	return nil, nil
}

// leaseState is what etcd says of a lease the Registration held.
type leaseState int

const (
	leaseUnreachable leaseState = iota // etcd did not answer
	leaseAlive                         // alive, every key of the node on it
	leaseGone                          // expired, revoked, or keys missing
)

// probeTimeout bounds one probe of the old lease, so that a probe started
// while etcd was down does not hold the loop once etcd is back.
const probeTimeout = 500 * time.Millisecond

// probe asks etcd, within probeTimeout, about lease, refreshing it once if
// it is alive; rev is the revision it was seen at.
func (r *Registration) probe(lease clientv3.LeaseID) (rev int64, state leaseState) {
	if lease == 0 {
		return 0, leaseGone
	}
	ctx, cancel := context.WithTimeout(r.ctx, probeTimeout)
	defer cancel()
	ka, err := r.cli.KeepAliveOnce(ctx, lease)
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		return 0, leaseGone
	case err != nil:
		return 0, leaseUnreachable
	case ka.TTL <= 0:
		return 0, leaseGone
	}
	cause, err := r.checkKeys(ctx, lease)
	switch {
	case err != nil:
		return 0, leaseUnreachable
	case cause != nil:
		return 0, leaseGone
	}
	return ka.Revision, leaseAlive
}

// reregister registers the node under a new lease, retrying with backoff
// until it succeeds (ok) or Close (not ok). It then revokes old.
func (r *Registration) reregister(old clientv3.LeaseID) (lease clientv3.LeaseID, rev int64, ok bool) {
	bo := newBackoff()
	limit := rateLimit{every: retryLogEvery}
	for attempt := 1; ; attempt++ {
		// While etcd is unreachable, keep probing the old lease quickly:
		// etcd that comes back with its data (a restart, a healed
		// partition) renews its leases for one TTL, and catching the old
		// lease within it keeps the node's keys instead of letting them
		// expire and writing them again.
		rev, state := r.probe(old)
		switch state {
		case leaseAlive:
			r.registered.Store(true)
			r.log.Info("registry: lease regained", "node", r.node.ID, "lease", fmt.Sprintf("%x", int64(old)), "attempts", attempt)
			return old, rev, true
		case leaseUnreachable:
			if limit.allow() {
				r.log.Warn("registry: etcd unreachable; retrying", "node", r.node.ID, "attempt", attempt)
			}
			if !sleep(r.ctx, min(bo.next(), probeTimeout)) {
				return 0, 0, false
			}
			continue
		}
		old = 0 // gone: register anew
		lease, rev, err := r.put(r.ctx)
		if err == nil {
			r.lease.Store(int64(lease))
			r.registered.Store(true)
			total := r.reregs.Add(1)
			if old != 0 && lease != old {
				cctx, cancel := context.WithTimeout(r.ctx, r.cfg.callTimeout())
				if r.revoke(cctx, old) == nil {
					r.forget(old)
				}
				cancel()
			}
			r.log.Info("registry: re-registered", "node", r.node.ID, "lease", fmt.Sprintf("%x", int64(lease)),
				"attempts", attempt, "reregistrations", total)
			return lease, rev, true
		}
		if r.ctx.Err() != nil {
			return 0, 0, false
		}
		if limit.allow() {
			level := slog.LevelWarn
			if errors.Is(err, ErrRouteConflict) || errors.Is(err, ErrNodeExists) {
				level = slog.LevelError
			}
			r.log.Log(r.ctx, level, "registry: re-register failed; retrying", "node", r.node.ID, "attempt", attempt, "cause", err)
		}
		if !sleep(r.ctx, bo.next()) {
			return 0, 0, false
		}
	}
}

// keepMemory writes the node's known-route keys (see Config.RouteMemory) on
// a lease of their own and keeps that lease alive until Close, writing them
// again (with backoff) whenever the lease is lost. Close does not revoke it:
// the keys outlive the node by RouteMemory.
func (r *Registration) keepMemory() {
	defer close(r.memDone)
	var ops []clientv3.Op
	for _, rt := range r.node.Routes {
		if rt.Group != GateGroup {
			ops = append(ops, clientv3.OpPut(r.cfg.knownKey(rt.MsgID, r.node.ID), encodeRoute(rt)))
		}
	}
	if r.cfg.RouteMemory < 0 || len(ops) == 0 {
		return
	}
	ttl := int64(r.cfg.RouteMemory / time.Second)
	bo := newBackoff()
	limit := rateLimit{every: retryLogEvery}
	for r.ctx.Err() == nil {
		err := r.holdMemory(ttl, ops)
		if r.ctx.Err() != nil {
			return
		}
		if err != nil && limit.allow() {
			r.log.Debug("registry: route memory not written; retrying", "node", r.node.ID, "cause", err)
		}
		if !sleep(r.ctx, bo.next()) {
			return
		}
	}
}

// holdMemory grants a lease of ttl seconds, puts ops on it and keeps it
// alive until the lease is lost or Close.
func (r *Registration) holdMemory(ttl int64, ops []clientv3.Op) error {
	gctx, cancel := r.cfg.callCtx(r.ctx)
	g, err := r.cli.Grant(gctx, ttl)
	cancel()
	if err != nil {
		return fmt.Errorf("grant: %w", err)
	}
	withLease := make([]clientv3.Op, len(ops))
	for i, op := range ops {
		withLease[i] = clientv3.OpPut(string(op.KeyBytes()), string(op.ValueBytes()), clientv3.WithLease(g.ID))
	}
	tctx, cancel := r.cfg.callCtx(r.ctx)
	_, err = r.cli.Txn(tctx).Then(withLease...).Commit()
	cancel()
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	ka, err := r.cli.KeepAlive(r.ctx, g.ID)
	if err != nil {
		return fmt.Errorf("keepalive: %w", err)
	}
	for range ka {
	}
	return errors.New("route memory lease lost")
}

// put checks for conflicts, grants a lease and writes every key on it in one
// transaction that succeeds only if none of the keys it read changed since.
// It returns the lease and the revision of the write.
func (r *Registration) put(ctx context.Context) (clientv3.LeaseID, int64, error) {
	// Nodes of one group starting together write under the same route
	// prefixes, so the guarded transaction may lose a few rounds: each round
	// lets at least one of them through, and a jittered pause spreads them.
	const attempts = 20
	var lease clientv3.LeaseID
	for attempt := range attempts {
		rev, err := r.check(ctx)
		if err != nil {
			if lease != 0 {
				r.dropPending(lease)
			}
			return 0, 0, err
		}
		if lease == 0 {
			gctx, cancel := r.cfg.callCtx(ctx)
			g, err := r.cli.Grant(gctx, r.cfg.ttlSeconds())
			cancel()
			if err != nil {
				return 0, 0, fmt.Errorf("registry: register %s: grant lease: %w", r.node.ID, err)
			}
			lease = g.ID
			r.pending.Store(int64(lease))
			r.remember(lease)
		}

		cmps := make([]clientv3.Cmp, 0, len(r.keys))
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(r.nodeKey), "<", rev+1))
		ops := make([]clientv3.Op, 0, len(r.keys))
		val, err := jsonString(r.node)
		if err != nil {
			r.dropPending(lease)
			return 0, 0, fmt.Errorf("registry: register %s: %w", r.node.ID, err)
		}
		ops = append(ops, clientv3.OpPut(r.nodeKey, val, clientv3.WithLease(lease)))
		for i, rt := range r.node.Routes {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(r.cfg.routePrefix(rt.MsgID)), "<", rev+1).WithPrefix())
			ops = append(ops, clientv3.OpPut(r.keys[i+1], encodeRoute(rt), clientv3.WithLease(lease)))
		}
		tctx, cancel := r.cfg.callCtx(ctx)
		resp, err := r.cli.Txn(tctx).If(cmps...).Then(ops...).Commit()
		cancel()
		if err == nil && resp.Succeeded {
			r.pending.Store(0)
			return lease, resp.Header.Revision, nil
		}
		if err != nil {
			r.dropPending(lease)
			return 0, 0, fmt.Errorf("registry: register %s: put keys: %w", r.node.ID, err)
		}
		// Someone wrote one of our keys or route prefixes since check: look
		// again after a short random pause.
		if attempt < attempts-1 && !sleep(ctx, time.Duration(5+mathrand.IntN(46))*time.Millisecond) {
			r.dropPending(lease)
			return 0, 0, ctx.Err()
		}
	}
	r.dropPending(lease)
	return 0, 0, fmt.Errorf("%w: node %s: its keys kept changing during %d attempts", ErrConcurrentChange, r.node.ID, attempts)
}

// dropPending revokes a lease put could not use. If Close has begun, Close
// revokes it instead.
func (r *Registration) dropPending(lease clientv3.LeaseID) {
	if r.ctx.Err() != nil {
		return
	}
	cctx, cancel := context.WithTimeout(r.ctx, r.cfg.callTimeout())
	defer cancel()
	if r.revoke(cctx, lease) == nil {
		r.pending.CompareAndSwap(int64(lease), 0)
		r.forget(lease)
	}
}

// check reads the node key and every route prefix in one consistent read
// and refuses the registration if another live process holds the node ID or
// another group serves one of the msgIDs. It returns the read's revision.
func (r *Registration) check(ctx context.Context) (int64, error) {
	ops := make([]clientv3.Op, 0, len(r.keys))
	ops = append(ops, clientv3.OpGet(r.nodeKey))
	for _, rt := range r.node.Routes {
		ops = append(ops, clientv3.OpGet(r.cfg.routePrefix(rt.MsgID), clientv3.WithPrefix()))
	}
	cctx, cancel := r.cfg.callCtx(ctx)
	defer cancel()
	resp, err := r.cli.Txn(cctx).Then(ops...).Commit()
	if err != nil {
		return 0, fmt.Errorf("registry: register %s: read: %w", r.node.ID, err)
	}
	if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
		if l := clientv3.LeaseID(kvs[0].Lease); l != 0 && !r.isOwn(l) {
			return 0, fmt.Errorf("%w: node %s of group %q is held by lease %x of another process", ErrNodeExists, r.node.ID, r.node.Group, int64(l))
		}
	}
	for i, rt := range r.node.Routes {
		for _, kv := range resp.Responses[i+1].GetResponseRange().GetKvs() {
			if r.isOwn(clientv3.LeaseID(kv.Lease)) && kv.Lease != 0 {
				continue
			}
			_, other, ok := parseRouteKey(string(kv.Key[len(r.cfg.routesPrefix()):]))
			if !ok {
				continue
			}
			theirs, err := decodeRoute(rt.MsgID, kv.Value)
			if err != nil || theirs.Group == rt.Group {
				continue
			}
			return 0, fmt.Errorf("%w: msgID %d is served by group %q (node %s); %q cannot claim it",
				ErrRouteConflict, rt.MsgID, theirs.Group, other, rt.Group)
		}
	}
	return resp.Header.Revision, nil
}

func (r *Registration) isOwn(l clientv3.LeaseID) bool { return slices.Contains(r.own, l) }

func (r *Registration) remember(l clientv3.LeaseID) {
	if len(r.own) == ownLeases {
		r.own = slices.Delete(r.own, 0, 1)
	}
	r.own = append(r.own, l)
}

func (r *Registration) forget(l clientv3.LeaseID) {
	if i := slices.Index(r.own, l); i >= 0 {
		r.own = slices.Delete(r.own, i, i+1)
	}
}
