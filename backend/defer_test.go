package backend_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/zctest"
)

const (
	msgSlow      uint32 = 41 // deferred; answered once msgFast "release" has run
	msgFast      uint32 = 42 // answered at once
	msgDeferFail uint32 = 43 // deferred, finished with an error
	msgDeferBail uint32 = 44 // deferred, then the handler returns an error
)

// TestDeferredKeepsSessionAnswerOrder: a deferred message does not hold up
// the session's next messages (the first slow message can only finish after
// a later fast one has run), yet the client gets the answers in the order
// of its messages.
func TestDeferredKeepsSessionAnswerOrder(t *testing.T) {
	released := make(chan struct{})
	c := zctest.Start(t, zctest.Config{Backend: func(b *backend.Backend) error {
		b.Handle(msgSlow, "slow", func(c *backend.Context) error {
			d := c.Defer()
			text := string(c.Payload())
			go func() {
				if text == "wait" {
					select {
					case <-released:
					case <-time.After(10 * time.Second):
						d.Finish(errors.New("the session's next message never ran while this one was deferred"))
						return
					}
				}
				d.Finish(d.Reply(msgSlow, []byte(text)))
			}()
			return nil
		})
		b.Handle(msgFast, "fast", func(c *backend.Context) error {
			if string(c.Payload()) == "release" {
				close(released)
			}
			return c.Reply(msgFast, c.Payload())
		})
		return nil
	}, Groups: []string{"svc"}})
	cl := c.Client(t, 0).Login("ann")
	want := []struct {
		id   uint32
		text string
	}{{msgSlow, "wait"}, {msgFast, "f1"}, {msgSlow, "s2"}, {msgFast, "release"}, {msgFast, "f3"}, {msgSlow, "s3"}}
	for _, m := range want {
		cl.Send(m.id, []byte(m.text))
	}
	for i, m := range want {
		f := cl.Recv()
		if f.MsgID != m.id || string(f.Payload) != m.text {
			t.Fatalf("answer %d is msgID %d %q; want msgID %d %q (answers out of order)", i, f.MsgID, f.Payload, m.id, m.text)
		}
	}
	// Once the deferred messages finished, answers flow directly again.
	cl.Send(msgFast, []byte("after"))
	if got := cl.Expect(msgFast); string(got) != "after" {
		t.Fatalf("got %q", got)
	}
}

// TestDeferredErrors: Finish with an error and a handler that fails after
// Defer both give the client an error frame with the text; the later
// Finish and Reply do nothing.
func TestDeferredErrors(t *testing.T) {
	lateReply := make(chan error, 1)
	c := zctest.Start(t, zctest.Config{Backend: func(b *backend.Backend) error {
		b.Handle(msgDeferFail, "fail", func(c *backend.Context) error {
			d := c.Defer()
			go d.Finish(errors.New("store unavailable"))
			return nil
		})
		b.Handle(msgDeferBail, "bail", func(c *backend.Context) error {
			d := c.Defer()
			go func() {
				time.Sleep(50 * time.Millisecond)
				lateReply <- d.Reply(msgDeferBail, []byte("late"))
				d.Finish(nil)
			}()
			return errors.New("bad request")
		})
		return nil
	}, Groups: []string{"svc"}})
	cl := c.Client(t, 0).Login("bob")
	cl.Send(msgDeferFail, nil)
	if e := cl.ExpectError(msgDeferFail); !strings.Contains(e, "store unavailable") {
		t.Fatalf("error frame %q", e)
	}
	cl.Send(msgDeferBail, nil)
	if e := cl.ExpectError(msgDeferBail); !strings.Contains(e, "bad request") {
		t.Fatalf("error frame %q", e)
	}
	if err := <-lateReply; !errors.Is(err, backend.ErrAlreadyReplied) {
		t.Fatalf("Reply after the message ended: %v, want ErrAlreadyReplied", err)
	}
	cl.ExpectNone(msgDeferBail, 200*time.Millisecond)
}

// TestShutdownWaitsForDeferred: a backend shutting down answers a deferred
// message that finishes within the grace period, rather than dropping it.
func TestShutdownWaitsForDeferred(t *testing.T) {
	started := make(chan struct{})
	c := zctest.Start(t, zctest.Config{Backend: func(b *backend.Backend) error {
		b.Handle(msgSlow, "slow", func(c *backend.Context) error {
			d := c.Defer()
			close(started)
			go func() {
				time.Sleep(500 * time.Millisecond)
				d.Finish(d.Reply(msgSlow, []byte("done")))
			}()
			return nil
		})
		return nil
	}, Groups: []string{"svc"}})
	cl := c.Client(t, 0).Login("cid")
	cl.Send(msgSlow, nil)
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- c.StopBackend(t.Context(), c.Backends()[0]) }()
	if got := cl.Expect(msgSlow); string(got) != "done" {
		t.Fatalf("got %q", got)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

const (
	msgCallSlow  uint32 = 46 // client -> caller group: Call the callee, answer its result
	msgCalleeRun uint32 = 47 // Call-only, deferred until released
)

// TestDeferredCallCountsAgainstMaxCalls: a Call whose handler deferred its
// answer still holds its MaxCalls slot until it finishes, so a second Call
// past the limit gets "busy" instead of piling up unbounded.
func TestDeferredCallCountsAgainstMaxCalls(t *testing.T) {
	release, deferred := make(chan struct{}), make(chan struct{}, 2)
	c := zctest.Start(t, zctest.Config{Groups: []string{"caller", "callee"},
		BackendConfig: func(cfg *backend.Config) { cfg.MaxCalls = 1 },
		Backend: func(b *backend.Backend) error {
			switch b.Group() {
			case "caller":
				b.Handle(msgCallSlow, "call-slow", func(c *backend.Context) error {
					out, err := c.Call(c.Context(), "callee", msgCalleeRun, nil)
					if err != nil {
						return err
					}
					return c.Reply(msgCallSlow, out)
				})
			case "callee":
				b.HandleCall(msgCalleeRun, "run", func(c *backend.Context) error {
					d := c.Defer()
					deferred <- struct{}{}
					go func() {
						<-release
						d.Finish(d.Reply(0, []byte("done")))
					}()
					return nil
				})
			}
			return nil
		}})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before the cluster stops: it waits for deferred messages
	first := c.Client(t, 0).Login("ann")
	first.Send(msgCallSlow, nil)
	second := c.Client(t, 1).Login("bob")
	select {
	case <-deferred: // the first Call is deferred at the callee
	case <-time.After(10 * time.Second):
		t.Fatal("the first Call never reached the callee")
	}
	second.Send(msgCallSlow, nil)
	if e := second.ExpectError(msgCallSlow); !strings.Contains(e, "busy") {
		t.Fatalf("second Call past MaxCalls 1: error %q, want busy", e)
	}
	unblock()
	if got := first.Expect(msgCallSlow); string(got) != "done" {
		t.Fatalf("first Call answered %q", got)
	}
}
