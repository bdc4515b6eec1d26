package zctest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/zctest"
)

func echoApp(b *backend.Backend) error {
	b.Handle(7, "echo", func(c *backend.Context) error { return c.Reply(7, c.Payload()) })
	b.Handle(8, "fail", func(c *backend.Context) error { return errors.New("no such thing") })
	return nil
}

// The kit's default gates log in with the test login, clients reach the
// backends through either gate, error frames are reported, and frames of
// other msgIDs are kept for later.
func TestKit(t *testing.T) {
	c := zctest.Start(t, zctest.Config{Backend: echoApp, Groups: []string{"svc"}})
	if len(c.Gates()) != 2 || len(c.Backends()) != 1 {
		t.Fatalf("%d gates, %d backends; want 2 and 1", len(c.Gates()), len(c.Backends()))
	}
	a := c.Client(t, 0).Login("a")
	b := c.Client(t, 1).Login("b")
	if a.Session == "" || a.Session == b.Session {
		t.Fatalf("sessions %q and %q", a.Session, b.Session)
	}
	b.Send(7, []byte("one"))
	b.Send(8, nil)
	b.Send(7, []byte("two"))
	if e := b.ExpectError(8); !strings.Contains(e, "no such thing") {
		t.Fatalf("error frame: %q", e)
	}
	if p := b.Expect(7); string(p) != "one" {
		t.Fatalf("first echo %q", p)
	}
	if p := b.Expect(7); string(p) != "two" {
		t.Fatalf("second echo %q", p)
	}
	b.ExpectNone(7, 100*time.Millisecond)

	// Anonymous clients are refused by the routes that need a login.
	anon := c.Client(t, 0)
	anon.Send(7, []byte("x"))
	if e := anon.ExpectError(7); !strings.Contains(e, "not logged in") {
		t.Fatalf("anonymous: %q", e)
	}

	// A gate stopped cleanly tells its clients and leaves the cluster.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.StopGate(ctx, c.Gates()[0]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Closed():
	case <-time.After(10 * time.Second):
		t.Fatal("client of a stopped gate still connected")
	}
	if err := c.WaitReady(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// New without a testing.T: a setup error is returned, and nothing is left
// running.
func TestNewReportsSetupErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := zctest.New(ctx, zctest.Config{
		Gates: 1, Groups: []string{"svc"},
		Backend: func(*backend.Backend) error { return errors.New("bad setup") },
	})
	if err == nil || !strings.Contains(err.Error(), "bad setup") || !strings.Contains(err.Error(), "svc-1") {
		t.Fatalf("err = %v, want the setup error naming the node", err)
	}
}
