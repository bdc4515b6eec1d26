package zctest_test

import (
	"testing"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/inbox"
	"github.com/zcluster/zcluster/zctest"
)

// A handler that delivers reliably, tested with the kit: messages sent
// while the user is offline arrive on login and resume, in order, then
// live ones; a later client resumes where the first one stopped.
func TestKitReliable(t *testing.T) {
	app := func(b *backend.Backend) error {
		b.Handle(30, "notify", func(c *backend.Context) error {
			d, err := c.Deliver(string(c.Payload()), 130, []byte("note for "+string(c.Payload())))
			if err != nil {
				return err
			}
			status := "online"
			if !d.Online {
				status = "queued"
			}
			return c.Reply(30, []byte(status))
		})
		return nil
	}
	c := zctest.Start(t, zctest.Config{Backend: app, Groups: []string{"svc"}})
	sender := c.Client(t, 0).Login("sender")
	for range 2 {
		sender.Send(30, []byte("bob"))
		if p := sender.Expect(30); string(p) != "queued" {
			t.Fatalf("bob offline: %q", p)
		}
	}
	bob := c.Client(t, 1).Login("bob")
	if a := bob.Resume(); a.Status != inbox.StatusOK || a.Next != 1 || a.Last != 2 {
		t.Fatalf("resume answer %+v", a)
	}
	for want := uint64(1); want <= 2; want++ {
		if m := bob.ExpectReliable(); m.Offset != want || m.MsgID != 130 || string(m.Payload) != "note for bob" {
			t.Fatalf("message %+v, want offset %d", m, want)
		}
	}
	sender.Send(30, []byte("bob"))
	if p := sender.Expect(30); string(p) != "online" {
		t.Fatalf("bob online: %q", p)
	}
	if m := bob.ExpectReliable(); m.Offset != 3 {
		t.Fatalf("live message %+v", m)
	}
	bob.Close()
	sender.Send(30, []byte("bob"))
	sender.Expect(30)
	again := c.Client(t, 0).Login("bob")
	again.Cursor = bob.Cursor
	if a := again.Resume(); a.Status != inbox.StatusOK || a.Next != 4 {
		t.Fatalf("second resume answer %+v", a)
	}
	if m := again.ExpectReliable(); m.Offset != 4 {
		t.Fatalf("message after the reconnect %+v", m)
	}
}
