package backend

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zcluster/zcluster/internal/runtime/waitgroup"
	"github.com/zcluster/zcluster/relay"
)

// SessionClosedFunc is called when a session this backend has handled
// closes: its client disconnected, was kicked, or its gate died.
type SessionClosedFunc func(session, user string)

// OnSessionClosed registers fn, called once for every session whose
// messages (or Calls made for it) this backend has handled, when that
// session closes: the client disconnected or was kicked (the gate tells
// every node that handled it), or its gate died (noticed once the gate's
// etcd lease has expired and it has not come back for SessionTTL/3, so
// within SessionTTL of the death). fn runs in its own goroutine, not
// ordered with the session's messages still in flight; it should not
// block for long (Shutdown waits for it). Call before Start.
func (s *Backend) OnSessionClosed(fn SessionClosedFunc) {
	s.mustNotBeStarted()
	s.closedHooks = append(s.closedHooks, fn)
}

// tracked is what the backend remembers of a session it handled.
type tracked struct {
	// active is set by every message of the session and cleared by each
	// sweep: a session seen since the last sweep is not looked up.
	active atomic.Bool
	// named is set once user is known (under mu).
	named atomic.Bool

	// gate is the session's gate (nil when only seen through Calls); read
	// on every message, so not under mu.
	gate atomic.Pointer[string]

	mu      sync.Mutex
	user    string
	callees []string // backends this one called for the session
}

// setGate records source as the session's gate, allocating only when it
// changes.
func (t *tracked) setGate(source string) {
	if g := t.gate.Load(); g == nil || *g != source {
		src := source // allocated here only, not on every message
		t.gate.Store(&src)
	}
}

// gateID returns the session's gate, or "".
func (t *tracked) gateID() string {
	if g := t.gate.Load(); g != nil {
		return *g
	}
	return ""
}

// sessionTable holds the sessions the backend handled, while they live.
type sessionTable struct {
	m sync.Map // session id -> *tracked

	hookMu     sync.Mutex
	hookClosed bool
	hookWG     sync.WaitGroup
}

// trackOn reports whether the backend must remember the sessions it
// handles: only when it has session-closed hooks.
func (s *Backend) trackOn() bool { return len(s.closedHooks) > 0 }

// track remembers a session whose message or Call arrived from source.
func (s *Backend) track(kind relay.Kind, sid, user, source string) *tracked {
	if v, ok := s.sessions.m.Load(sid); ok {
		t := v.(*tracked)
		if !t.active.Load() {
			t.active.Store(true)
		}
		if kind == relay.KindForward {
			t.setGate(source)
		}
		if user != "" && !t.named.Load() {
			t.mu.Lock()
			if t.user == "" {
				t.user = user
				t.named.Store(true)
			}
			t.mu.Unlock()
		}
		return t
	}
	t := &tracked{user: user}
	t.active.Store(true)
	t.named.Store(user != "")
	if kind == relay.KindForward {
		t.setGate(source)
	}
	v, _ := s.sessions.m.LoadOrStore(sid, t)
	return v.(*tracked)
}

// noteCallee remembers that this backend called node for session sid, so
// that node hears when the session closes.
func (s *Backend) noteCallee(sid, user, node string) {
	if sid == "" {
		return
	}
	v, ok := s.sessions.m.Load(sid)
	if !ok {
		nt := &tracked{user: user}
		nt.active.Store(true)
		nt.named.Store(user != "")
		v, _ = s.sessions.m.LoadOrStore(sid, nt)
	}
	t := v.(*tracked)
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, n := range t.callees {
		if n == node {
			return
		}
	}
	t.callees = append(t.callees, node)
}

// sessionClosed runs the hooks for sid and passes the notice on to the
// backends this one called for it.
func (s *Backend) sessionClosed(sid, user string) {
	var callees []string
	if v, ok := s.sessions.m.LoadAndDelete(sid); ok {
		t := v.(*tracked)
		t.mu.Lock()
		callees = t.callees
		if user == "" {
			user = t.user
		}
		t.mu.Unlock()
	}
	if len(callees) == 0 && len(s.closedHooks) == 0 {
		return
	}
	s.goHook(func() {
		for _, n := range callees {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CallTimeout)
			env := relay.Envelope{Kind: relay.KindSessionClosed, Session: []byte(sid), User: []byte(user)}
			if err := s.node.Relay.Send(ctx, n, &env); err != nil {
				s.log.Debug("session-closed notice not passed on", "session", sid, "to", n, "cause", err)
			}
			cancel()
		}
		for _, fn := range s.closedHooks {
			s.runHook(fn, sid, user)
		}
	})
}

func (s *Backend) runHook(fn SessionClosedFunc, sid, user string) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("session-closed hook panicked", "session", sid, "panic", r)
		}
	}()
	fn(sid, user)
}

// gateGone closes every session the backend handled through gate, which
// died, and removes the gate's room memberships.
func (s *Backend) gateGone(gate string) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CallTimeout)
	if n, err := s.node.Rooms.PurgeGate(ctx, gate); err != nil {
		s.log.Warn("room members of a gone gate not purged", "gate", gate, "cause", err)
	} else if n > 0 {
		s.log.Info("room members of a gone gate purged", "gate", gate, "members", n)
	}
	cancel()
	s.sessions.m.Range(func(k, v any) bool {
		t := v.(*tracked)
		t.mu.Lock()
		user := t.user
		t.mu.Unlock()
		if t.gateID() == gate {
			s.sessionClosed(k.(string), user)
		}
		return true
	})
}

// sweepSessions looks up, every SessionTTL, the remembered logged-in
// sessions not seen since the previous sweep: one whose record is gone from
// Redis closed without a notice reaching this node (a relay link was down),
// so its hooks run now. The lookups go in pipelines (session.Store.Exist).
// A session that never logged in has no record to look for: it is closed
// by its gate's notice, or when its gate is gone. The table stays bounded by
// the live sessions.
func (s *Backend) sweepSessions() {
	tick := time.NewTicker(s.cfg.SessionTTL)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
		var sids, users []string
		s.sessions.m.Range(func(k, v any) bool {
			t := v.(*tracked)
			if t.active.Swap(false) || !t.named.Load() {
				return true
			}
			t.mu.Lock()
			user := t.user
			t.mu.Unlock()
			sids, users = append(sids, k.(string)), append(users, user)
			return true
		})
		if len(sids) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CallTimeout)
		exist, err := s.node.Sessions.Exist(ctx, sids)
		cancel()
		if err != nil {
			s.log.Warn("session sweep failed; retrying next period", "sessions", len(sids), "cause", err)
			continue
		}
		for i, ok := range exist {
			if !ok {
				s.sessionClosed(sids[i], users[i])
			}
		}
	}
}

// goHook runs fn in a goroutine Shutdown waits for; after Shutdown
// started waiting, fn is dropped.
func (s *Backend) goHook(fn func()) {
	s.sessions.hookMu.Lock()
	defer s.sessions.hookMu.Unlock()
	if s.sessions.hookClosed {
		return
	}
	s.sessions.hookWG.Add(1)
	go func() {
		defer s.sessions.hookWG.Done()
		fn()
	}()
}

// stopHooks waits (bounded by ctx) for running hooks; none start after.
func (s *Backend) stopHooks(ctx context.Context) {
	s.sessions.hookMu.Lock()
	s.sessions.hookClosed = true
	s.sessions.hookMu.Unlock()
	if err := waitgroup.Wait(ctx, &s.sessions.hookWG); err != nil {
		s.log.Warn("session-closed hooks still running at shutdown", "cause", err)
	}
}
