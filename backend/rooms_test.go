package backend_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
	"github.com/zcluster/zcluster/zctest"
)

const (
	msgJoin  uint32 = 30
	msgLeave uint32 = 31
	msgSay   uint32 = 32
	msgCount uint32 = 33
	msgSaid  uint32 = 132
)

type roomReq struct {
	Room string `json:"room"`
	Text string `json:"text,omitempty"`
}

type roomResp struct {
	OK     bool `json:"ok"`
	Count  int  `json:"count"`
	Online int  `json:"online"`
}

type said struct {
	From string `json:"from"`
	Text string `json:"text"`
}

// closedLog records OnSessionClosed calls.
type closedLog struct {
	mu  sync.Mutex
	got map[string]string // session -> user
}

func (l *closedLog) add(sid, user string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.got == nil {
		l.got = map[string]string{}
	}
	l.got[sid] = user
}

func (l *closedLog) has(sid string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	u, ok := l.got[sid]
	return u, ok
}

func lobby(closed *closedLog) func(*backend.Backend) error {
	return func(b *backend.Backend) error {
		b.Handle(msgJoin, "join", backend.Typed(func(c *backend.Context, r *roomReq) (*roomResp, error) {
			if err := c.Join(r.Room); err != nil {
				return nil, err
			}
			n, err := c.RoomCount(r.Room)
			return &roomResp{OK: true, Count: n}, err
		}))
		b.Handle(msgLeave, "leave", backend.Typed(func(c *backend.Context, r *roomReq) (*roomResp, error) {
			return &roomResp{OK: true}, c.Leave(r.Room)
		}))
		b.Handle(msgSay, "say", backend.Typed(func(c *backend.Context, r *roomReq) (*roomResp, error) {
			p, err := c.Encode(said{From: c.User(), Text: r.Text})
			if err != nil {
				return nil, err
			}
			return nil, c.PushRoom(r.Room, msgSaid, p)
		}))
		b.Handle(msgCount, "count", backend.Typed(func(c *backend.Context, r *roomReq) (*roomResp, error) {
			n, err := c.RoomCount(r.Room)
			if err != nil {
				return nil, err
			}
			on, err := c.OnlineCount()
			return &roomResp{OK: true, Count: n, Online: on}, err
		}))
		if closed != nil {
			b.OnSessionClosed(closed.add)
		}
		return nil
	}
}

func join(t *testing.T, cl *zctest.Client, room string) int {
	t.Helper()
	cl.SendJSON(msgJoin, roomReq{Room: room})
	var r roomResp
	cl.ExpectJSON(msgJoin, &r)
	return r.Count
}

func count(t *testing.T, cl *zctest.Client, room string) roomResp {
	t.Helper()
	cl.SendJSON(msgCount, roomReq{Room: room})
	var r roomResp
	cl.ExpectJSON(msgCount, &r)
	return r
}

// relaySent is the envelopes the backend has sent so far.
func relaySent(b *backend.Backend) uint64 { return b.RelayStats().EnvelopesSent }

func TestRoomsFanOutPerGate(t *testing.T) {
	c := zctest.Start(t, zctest.Config{Gates: 2, Backend: lobby(nil), Groups: []string{"lobby"}})
	g1, g2 := c.Gates()[0], c.Gates()[1]
	b := c.Backends()[0]
	ann := c.Client(t, 0).Login("ann")
	bob := c.Client(t, 0).Login("bob")
	cat := c.Client(t, 1).Login("cat")
	dan := c.Client(t, 1).Login("dan") // never joins

	join(t, ann, "r1")
	join(t, bob, "r1")
	if n := join(t, cat, "r1"); n != 3 {
		t.Fatalf("count after 3 joins = %d", n)
	}
	if n := join(t, cat, "r1"); n != 3 {
		t.Fatalf("joining twice counted twice: %d", n)
	}
	ann.SendJSON(msgSay, roomReq{Room: "r1", Text: "hi"})
	for _, cl := range []*zctest.Client{ann, bob, cat} {
		var m said
		cl.ExpectJSON(msgSaid, &m)
		if m.From != "ann" || m.Text != "hi" {
			t.Fatalf("said = %+v", m)
		}
	}
	dan.ExpectNone(msgSaid, 300*time.Millisecond)
	if g1.RoomMembers("r1") != 2 || g2.RoomMembers("r1") != 1 {
		t.Fatalf("local members: gate-1 %d, gate-2 %d; want 2 and 1", g1.RoomMembers("r1"), g2.RoomMembers("r1"))
	}

	// One relay envelope per gate with members, not one per member.
	ctx := context.Background()
	before := relaySent(b)
	if err := b.PushRoom(ctx, "r1", msgSaid, []byte(`{"from":"server","text":"tick"}`)); err != nil {
		t.Fatal(err)
	}
	if d := relaySent(b) - before; d != 2 {
		t.Fatalf("a push to a room on 2 gates sent %d relay envelopes, want 2", d)
	}
	for _, cl := range []*zctest.Client{ann, bob, cat} {
		cl.Expect(msgSaid)
	}

	// Leave, and automatic leave on disconnect.
	bob.SendJSON(msgLeave, roomReq{Room: "r1"})
	bob.Expect(msgLeave)
	cat.Close()
	testkit.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if r := count(t, ann, "r1"); r.Count != 1 {
			return fmt.Errorf("count = %d, want 1 (ann)", r.Count)
		}
		return nil
	})
	before = relaySent(b)
	if err := b.PushRoom(ctx, "r1", msgSaid, []byte(`{"text":"only ann"}`)); err != nil {
		t.Fatal(err)
	}
	if d := relaySent(b) - before; d != 1 {
		t.Fatalf("push to a room on 1 gate sent %d envelopes, want 1", d)
	}
	ann.Expect(msgSaid)
	bob.ExpectNone(msgSaid, 300*time.Millisecond)

	// Online count: ann, bob, dan logged in (cat left), as the gates
	// publish it.
	testkit.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		if r := count(t, ann, "r1"); r.Online != 3 {
			return fmt.Errorf("online = %d, want 3", r.Online)
		}
		return nil
	})
}

// Membership lives in Redis: a restart of another gate leaves it, and a
// backend started later sees it.
func TestRoomsSurviveOtherGateRestart(t *testing.T) {
	c := zctest.Start(t, zctest.Config{Gates: 2, Backend: lobby(nil), Groups: []string{"lobby"}})
	ann := c.Client(t, 0).Login("ann")
	bob := c.Client(t, 1).Login("bob")
	join(t, ann, "r2")
	join(t, bob, "r2")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.StopGate(ctx, c.Gates()[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StartGate(ctx, "gate-3"); err != nil {
		t.Fatal(err)
	}
	b2, err := c.StartBackend(ctx, "lobby-2", "lobby")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	testkit.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		n, err := b2.RoomCount(ctx, "r2")
		if err != nil || n != 1 {
			return fmt.Errorf("count on a new backend = %d, %v; want 1 (ann)", n, err)
		}
		return nil
	})
	if err := b2.PushRoom(ctx, "r2", msgSaid, []byte(`{"text":"still here"}`)); err != nil {
		t.Fatal(err)
	}
	ann.Expect(msgSaid)
	cat := c.Client(t, 1).Login("cat") // on gate-3
	join(t, cat, "r2")
	ann.SendJSON(msgSay, roomReq{Room: "r2", Text: "welcome"})
	cat.Expect(msgSaid)
}

// OnSessionClosed runs on every backend that handled the session, for a
// disconnect and for a kick; a session only seen through a Call hears of
// it through the caller.
func TestSessionClosedHook(t *testing.T) {
	var onA, onB, onCallee closedLog
	const msgHello, msgKickMe, msgRelay, msgInner, msgHelloB uint32 = 40, 41, 42, 43, 44
	setup := func(log *closedLog) func(*backend.Backend) error {
		return func(b *backend.Backend) error {
			b.OnSessionClosed(log.add)
			b.Handle(msgHello, "hello", func(c *backend.Context) error { return c.Reply(msgHello, []byte(c.NodeID())) })
			b.Handle(msgKickMe, "kick-me", func(c *backend.Context) error { return c.Kick(c.Session(), "asked for it") })
			b.Handle(msgRelay, "relay", func(c *backend.Context) error {
				out, err := c.Call(c.Context(), "inner", msgInner, c.Payload())
				if err != nil {
					return err
				}
				return c.Reply(msgRelay, out)
			})
			return nil
		}
	}
	c := zctest.Start(t, zctest.Config{Gates: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Two groups so that the session is handled by two backends.
	if _, err := c.StartBackend(ctx, "a-1", "a", zctest.BackendSetup(setup(&onA))); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StartBackend(ctx, "b-1", "b", zctest.BackendSetup(func(b *backend.Backend) error {
		b.OnSessionClosed(onB.add)
		b.Handle(msgHelloB, "hello-b", func(c *backend.Context) error { return c.Reply(msgHelloB, nil) })
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StartBackend(ctx, "inner-1", "inner", zctest.BackendSetup(func(b *backend.Backend) error {
		b.OnSessionClosed(onCallee.add)
		b.HandleCall(msgInner, "inner", func(c *backend.Context) error { return c.Reply(0, c.Payload()) })
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, 15*time.Second); err != nil {
		t.Fatal(err)
	}

	// Disconnect: both backends that handled it, and the callee.
	ann := c.Client(t, 0).Login("ann")
	ann.Send(msgHello, nil)
	ann.Expect(msgHello)
	ann.Send(msgHelloB, nil)
	ann.Expect(msgHelloB)
	ann.Send(msgRelay, []byte("x"))
	ann.Expect(msgRelay)
	ann.Close()
	testkit.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for name, l := range map[string]*closedLog{"a": &onA, "b": &onB, "callee": &onCallee} {
			if u, ok := l.has(ann.Session); !ok || u != "ann" {
				return fmt.Errorf("hook on %s not called for ann's session (got %q, %v)", name, u, ok)
			}
		}
		return nil
	})

	// Kick: only the backend that handled it.
	bob := c.Client(t, 0).Login("bob")
	bob.Send(msgKickMe, nil)
	select {
	case <-bob.Closed():
	case <-time.After(10 * time.Second):
		t.Fatal("kicked client not disconnected")
	}
	testkit.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if u, ok := onA.has(bob.Session); !ok || u != "bob" {
			return fmt.Errorf("hook on a not called for bob's kicked session")
		}
		return nil
	})
	if _, ok := onB.has(bob.Session); ok {
		t.Fatal("hook ran on a backend that never handled the session")
	}
}

// TestIdleAnonymousSessionKeepsItsHook: a connected session that never
// logged in has no Redis record; the backend's sweep (which looks for the
// records of idle sessions every SessionTTL) must not take it for closed.
// Its hook runs once, when it really closes.
func TestIdleAnonymousSessionKeepsItsHook(t *testing.T) {
	const msgAnon uint32 = 45
	var (
		mu    sync.Mutex
		calls []string
	)
	c := zctest.Start(t, zctest.Config{Gates: 1, SessionTTL: time.Second, Groups: []string{"svc"}, Backend: func(b *backend.Backend) error {
		b.OnSessionClosed(func(sid, _ string) {
			mu.Lock()
			calls = append(calls, sid)
			mu.Unlock()
		})
		b.Handle(msgAnon, "anon", func(c *backend.Context) error { return c.Reply(msgAnon, nil) }, backend.Anonymous())
		return nil
	}})
	cl := c.Client(t, 0) // never logs in
	cl.Send(msgAnon, nil)
	cl.Expect(msgAnon)
	time.Sleep(3500 * time.Millisecond) // three sweeps
	mu.Lock()
	early := append([]string(nil), calls...)
	mu.Unlock()
	if len(early) != 0 {
		t.Fatalf("OnSessionClosed ran for a session that is still connected (idle, never logged in): %v", early)
	}
	cl.Close()
	testkit.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(calls) != 1 {
			return fmt.Errorf("hook ran %d times after the close, want once", len(calls))
		}
		return nil
	})
}
