package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zcluster/zcluster/backend"
	zccluster "github.com/zcluster/zcluster/cluster"
	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/internal/testonly/testkit/chatkit"
	"github.com/zcluster/zcluster/internal/tools/zclient"
)

// Client msgIDs of the dispatch tests' handlers (anonymous routes).
const (
	msgBlock      uint32 = 700 // blocks until the test releases it, then echoes
	msgSelfCall   uint32 = 701 // Calls its own group's msgCallEcho
	msgCallEcho   uint32 = 702 // Call only: echoes
	msgCycle      uint32 = 703 // im: Calls group "cyc" msgCycleMid
	msgCycleMid   uint32 = 704 // cyc, Call only: Calls group im msgCallEcho for the same session
	msgReplyTwice uint32 = 705 // im: Calls msgTwice and answers what it got
	msgTwice      uint32 = 706 // Call only: Replies "first", then "second"
)

// blocker is a handler that holds its session until released.
type blocker struct {
	entered chan string // payload of each message as its handler starts
	release chan struct{}
	once    sync.Once
}

func newBlocker() *blocker {
	return &blocker{entered: make(chan string, 1024), release: make(chan struct{})}
}

func (bl *blocker) open() { bl.once.Do(func() { close(bl.release) }) }

func (bl *blocker) handle(c *backend.Context) error {
	bl.entered <- string(c.Payload())
	<-bl.release
	return c.Reply(c.MsgID(), c.Payload())
}

// expectFrame waits for the next frame with msgID on conn.
func expectFrame(t *testing.T, conn *zclient.Conn, msgID uint32, within time.Duration) zclient.Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	f, skipped, err := conn.Expect(ctx, msgID)
	if err != nil {
		t.Fatalf("%v (other frames: %s)", err, chatkit.Describe(skipped))
	}
	return f
}

// TestDispatchSessionQueueFull: while one session's handler is stuck, its
// queue takes QueueLen messages and answers the rest with a "busy" error
// frame at once; another session on the same gate and node is served
// meanwhile; once released, every accepted message is answered in order.
func TestDispatchSessionQueueFull(t *testing.T) {
	c := newCluster(t)
	g := c.startGate("gate-1")
	bl := newBlocker()
	t.Cleanup(bl.open)
	b := c.startBackendTuned("im-1", chat.GroupIM, func(cfg *backend.Config) { cfg.QueueLen = 4 }, func(b *backend.Backend) {
		_ = chat.SetupBackend(b)
		b.Handle(msgBlock, "block", bl.handle, backend.Anonymous())
	})
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)
	hog, other := dial(t, g), dial(t, g)

	for i := range 10 {
		if err := hog.Send(msgBlock, fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// QueueLen counts the running message too: 4 are accepted, the other
	// 6 are busy at once.
	for range 6 {
		e := decodeError(t, expectFrame(t, hog, gate.MsgError, 2*time.Second))
		if e.MsgID != msgBlock || !strings.Contains(e.Error, "busy") {
			t.Fatalf("want a busy error frame for msgID %d, got %+v", msgBlock, e)
		}
	}
	if n := b.Refused(); n != 6 {
		t.Errorf("Refused() = %d, want 6 (the zcluster_backend_busy_total metric)", n)
	}
	// Another session is not held up by the stuck one.
	for i := range 5 {
		p := fmt.Appendf(nil, "other-%d", i)
		_ = other.Send(chat.MsgEcho, p)
		if f := expectFrame(t, other, chat.MsgEcho, 2*time.Second); string(f.Payload) != string(p) {
			t.Fatalf("other session got %q, want %q", f.Payload, p)
		}
	}
	bl.open()
	for i := range 4 {
		want := fmt.Sprintf("m%d", i)
		if f := expectFrame(t, hog, msgBlock, 5*time.Second); string(f.Payload) != want {
			t.Fatalf("answer %d is %q, want %q (in order)", i, f.Payload, want)
		}
	}
}

// TestDispatchQueueBytes: the byte bounds, per session and per node, answer
// busy too, and one message always fits an empty queue.
func TestDispatchQueueBytes(t *testing.T) {
	c := newCluster(t)
	g := c.startGate("gate-1")
	bl := newBlocker()
	t.Cleanup(bl.open)
	c.startBackendTuned("im-1", chat.GroupIM, func(cfg *backend.Config) {
		cfg.SessionQueueBytes = 10 << 10
		cfg.QueueBytes = 24 << 10
	}, func(b *backend.Backend) {
		b.Handle(msgBlock, "block", bl.handle, backend.Anonymous())
	})
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)
	a, b2, b3 := dial(t, g), dial(t, g), dial(t, g)
	big := func(tag string) []byte { return append([]byte(tag), make([]byte, 4<<10)...) }

	// Session a: 4 KiB + 4 KiB fit its 10 KiB, the third is busy.
	for i := range 3 {
		_ = a.Send(msgBlock, big(fmt.Sprint("a", i)))
	}
	if e := decodeError(t, expectFrame(t, a, gate.MsgError, 2*time.Second)); !strings.Contains(e.Error, "busy") {
		t.Fatalf("session over its byte bound: %+v", e)
	}
	// One message larger than the session bound still fits an empty queue.
	_ = b2.Send(msgBlock, append([]byte("b0"), make([]byte, 12<<10)...))
	<-bl.entered
	<-bl.entered
	// The node now holds 8 KiB + 12 KiB (+ 128 bytes a message): another
	// 4 KiB is over its 24 KiB.
	_ = b3.Send(msgBlock, big("c0"))
	if e := decodeError(t, expectFrame(t, b3, gate.MsgError, 2*time.Second)); !strings.Contains(e.Error, "busy") {
		t.Fatalf("node over its byte bound: %+v", e)
	}
	bl.open()
	expectFrame(t, a, msgBlock, 5*time.Second)
	expectFrame(t, a, msgBlock, 5*time.Second)
	expectFrame(t, b2, msgBlock, 5*time.Second)
	// Freed: the third session is served now.
	_ = b3.Send(msgBlock, big("c1"))
	expectFrame(t, b3, msgBlock, 5*time.Second)
}

// setupCalls registers the Call test handlers on an im node.
func setupCalls(twiceErr chan<- error) func(*backend.Backend) {
	return func(b *backend.Backend) {
		echo := func(c *backend.Context) error { return c.Reply(c.MsgID(), c.Payload()) }
		relayTo := func(group string, msgID uint32) backend.HandlerFunc {
			return func(c *backend.Context) error {
				out, err := c.Call(c.Context(), group, msgID, c.Payload())
				if err != nil {
					return err
				}
				return c.Reply(c.MsgID(), out)
			}
		}
		b.Handle(msgSelfCall, "self-call", relayTo(chat.GroupIM, msgCallEcho), backend.Anonymous())
		b.HandleCall(msgCallEcho, "call-echo", echo)
		b.Handle(msgCycle, "cycle", relayTo("cyc", msgCycleMid), backend.Anonymous())
		b.Handle(msgReplyTwice, "reply-twice", relayTo(chat.GroupIM, msgTwice), backend.Anonymous())
		b.HandleCall(msgTwice, "twice", func(c *backend.Context) error {
			if err := c.Reply(0, []byte("first")); err != nil {
				return err
			}
			twiceErr <- c.Reply(0, []byte("second"))
			return nil
		})
	}
}

// TestCallIntoOwnGroup: a handler that Calls its own group (so the same
// node, for the same session) is answered, not deadlocked until
// CallTimeout; so is a cycle im -> cyc -> im for one session.
func TestCallIntoOwnGroup(t *testing.T) {
	c := newCluster(t)
	g := c.startGate("gate-1")
	c.startBackendTuned("im-1", chat.GroupIM, func(cfg *backend.Config) { cfg.Workers = 1 }, setupCalls(make(chan error, 10)))
	c.startBackendTuned("cyc-1", "cyc", func(cfg *backend.Config) { cfg.Workers = 1 }, func(b *backend.Backend) {
		b.HandleCall(msgCycleMid, "cycle-mid", func(c *backend.Context) error {
			out, err := c.Call(c.Context(), chat.GroupIM, msgCallEcho, c.Payload())
			if err != nil {
				return err
			}
			return c.Reply(0, out)
		})
	})
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)
	c.waitGroupSize("cyc", 1, 5*time.Second)
	conn := dial(t, g)
	for _, id := range []uint32{msgSelfCall, msgCycle} {
		for i := range 3 {
			p := fmt.Appendf(nil, "%d-%d", id, i)
			start := time.Now()
			_ = conn.Send(id, p)
			f := expectFrame(t, conn, id, 10*time.Second)
			if string(f.Payload) != string(p) {
				t.Fatalf("msgID %d: got %q, want %q", id, f.Payload, p)
			}
			// A deadlock would end with CallTimeout's error (3 s here).
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("msgID %d answered after %v", id, d)
			}
		}
	}
}

// TestCallReplyTwice: the first Reply of a Call handler is the call's
// result; a second Reply is refused with ErrAlreadyReplied.
func TestCallReplyTwice(t *testing.T) {
	c := newCluster(t)
	g := c.startGate("gate-1")
	twiceErr := make(chan error, 10)
	c.startBackendTuned("im-1", chat.GroupIM, nil, setupCalls(twiceErr))
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)
	conn := dial(t, g)
	_ = conn.Send(msgReplyTwice, []byte("x"))
	if f := expectFrame(t, conn, msgReplyTwice, 5*time.Second); string(f.Payload) != "first" {
		t.Fatalf("the call's result is %q, want the first Reply", f.Payload)
	}
	if err := <-twiceErr; !errors.Is(err, backend.ErrAlreadyReplied) {
		t.Fatalf("second Reply of a Call returned %v, want ErrAlreadyReplied", err)
	}
}

// TestShutdownStuckHandler: Shutdown gives up when its ctx ends, however
// long a handler runs, and says so.
func TestShutdownStuckHandler(t *testing.T) {
	c := newCluster(t)
	g := c.startGate("gate-1")
	bl := newBlocker()
	t.Cleanup(bl.open)
	b := c.startBackendTuned("im-1", chat.GroupIM, func(cfg *backend.Config) {
		cfg.DrainTimeout = 200 * time.Millisecond
		cfg.DrainQuiet = 50 * time.Millisecond
	}, func(b *backend.Backend) {
		b.Handle(msgBlock, "block", bl.handle, backend.Anonymous())
	})
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)
	conn := dial(t, g)
	_ = conn.Send(msgBlock, []byte("stuck"))
	select {
	case <-bl.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler did not start")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- b.Shutdown(ctx) }()
	select {
	case err := <-done:
		d := time.Since(start)
		t.Logf("Shutdown returned after %v: %v", d, err)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v, want ctx's error", err)
		}
		if d > 3*time.Second {
			t.Errorf("Shutdown took %v with a 1s ctx", d)
		}
	case <-time.After(8 * time.Second):
		bl.open()
		t.Fatal("Shutdown with a 1s ctx still running after 8s (stuck handler)")
	}
}

// TestHandleRefusesBadMsgIDs: the framework's reserved msgIDs and a msgID
// registered twice are refused; Start names every bad registration.
func TestHandleRefusesBadMsgIDs(t *testing.T) {
	c := newCluster(t)
	cli, rdb := c.clients()
	b, err := backend.New(backend.Config{
		Node: zccluster.Node{
			ID:          "im-1",
			RelayListen: "127.0.0.1:0",
			Etcd:        cli,
			Redis:       rdb,
			Secret:      c.secret,
			Logger:      c.log,
		},
		Group: chat.GroupIM,
	})
	if err != nil {
		t.Fatal(err)
	}
	fn := func(c *backend.Context) error { return nil }
	b.Handle(9, "kick", fn)
	b.Handle(65535, "error", fn)
	b.HandleCall(65534, "heartbeat", fn)
	b.Handle(40, "first", fn)
	b.Handle(40, "again", fn)
	b.HandleCall(40, "call-again", fn)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err = b.Start(ctx)
	if err == nil {
		_ = b.Shutdown(ctx)
		t.Fatal("Start accepted reserved and duplicate msgIDs")
	}
	t.Log(err)
	for _, want := range []string{"msgID 9", "msgID 65535", "msgID 65534", `msgID 40 ("again")`, `msgID 40 ("call-again")`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start error does not name %s: %v", want, err)
		}
	}
	if !errors.Is(err, backend.ErrConfig) {
		t.Errorf("Start error %v does not wrap ErrConfig", err)
	}
}

// TestCallBusyPastMaxCalls: past MaxCalls running Call handlers, a Call
// fails at once with "busy" (the client's error frame says so) instead of
// waiting for CallTimeout; the running one still completes.
func TestCallBusyPastMaxCalls(t *testing.T) {
	const msgSlowCall, msgSlow uint32 = 707, 708
	c := newCluster(t)
	g := c.startGate("gate-1")
	bl := newBlocker()
	t.Cleanup(bl.open)
	c.startBackendTuned("im-1", chat.GroupIM, nil, func(b *backend.Backend) {
		b.Handle(msgSlowCall, "slow-call", func(c *backend.Context) error {
			out, err := c.Call(c.Context(), "slow", msgSlow, c.Payload())
			if err != nil {
				return err
			}
			return c.Reply(c.MsgID(), out)
		}, backend.Anonymous())
	})
	c.startBackendTuned("slow-1", "slow", func(cfg *backend.Config) { cfg.MaxCalls = 1 }, func(b *backend.Backend) {
		b.HandleCall(msgSlow, "slow", bl.handle)
	})
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)
	c.waitGroupSize("slow", 1, 5*time.Second)
	a, b := dial(t, g), dial(t, g)
	_ = a.Send(msgSlowCall, []byte("a"))
	select {
	case <-bl.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the first Call did not start")
	}
	start := time.Now()
	_ = b.Send(msgSlowCall, []byte("b"))
	e := decodeError(t, expectFrame(t, b, gate.MsgError, 5*time.Second))
	if !strings.Contains(e.Error, "busy") || time.Since(start) > 2*time.Second {
		t.Fatalf("second Call: %+v after %v, want busy at once", e, time.Since(start))
	}
	bl.open()
	if f := expectFrame(t, a, msgSlowCall, 5*time.Second); string(f.Payload) != "a" {
		t.Fatalf("first Call answered %q", f.Payload)
	}
}
