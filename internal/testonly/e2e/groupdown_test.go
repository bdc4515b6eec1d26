package e2e

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
	"github.com/zcluster/zcluster/internal/testonly/testkit/chatkit"
	"github.com/zcluster/zcluster/internal/tools/topview"
	"github.com/zcluster/zcluster/protocol"
)

// TestGroupDownNamesTheGroup: with every im node stopped, a send gets the
// error `no live node for group "im"` (not "unknown msgID 2"), on the gate
// that saw them go and on a gate started afterwards; `zcluster routes`
// lists msgID 2 as down; an unknown msgID still reads as unknown; and once
// another group claims msgID 2 it is served again.
func TestGroupDownNamesTheGroup(t *testing.T) {
	c := newCluster(t)
	g1 := c.startGate("gate-1")
	im1 := c.startBackend("im-1", chat.GroupIM)
	im2 := c.startBackend("im-2", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 2, 10*time.Second)

	zed := chatkit.Dial(t, g1.ListenAddr())
	chatkit.Login(t, zed, "zed")
	if r := sendChat(t, zed, "zed", "to myself"); !r.OK {
		t.Fatalf("send with im up: %+v", r)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, b := range []*backend.Backend{im1, im2} {
		if err := b.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	c.waitGroupSize(chat.GroupIM, 0, 10*time.Second)

	check := func(who string, msgID uint32, want string) {
		t.Helper()
		_ = zed.Send(msgID, chatkit.MustJSON(t, chat.SendRequest{To: "zed", Text: "anyone?"}))
		e := decodeError(t, chatkit.Expect(t, zed, protocol.MsgError))
		if e.MsgID != msgID || e.Error != want {
			t.Fatalf("%s: msgID %d got error frame %+v, want %q", who, msgID, e, want)
		}
	}
	check("gate-1", chat.MsgSend, `no live node for group "im"`)
	check("gate-1", 777, "unknown msgID 777")

	// A gate that never saw the im nodes knows the route all the same.
	g2 := c.startGate("gate-2")
	amy := chatkit.Dial(t, g2.ListenAddr())
	chatkit.Login(t, amy, "amy")
	_ = amy.Send(chat.MsgSend, chatkit.MustJSON(t, chat.SendRequest{To: "zed", Text: "anyone?"}))
	if e := decodeError(t, chatkit.Expect(t, amy, protocol.MsgError)); e.Error != `no live node for group "im"` {
		t.Fatalf("gate-2: error frame %+v, want no live node for group \"im\"", e)
	}

	// `zcluster routes` reads the same from etcd.
	cli, _ := c.clients()
	snap, err := topview.Read(ctx, topview.Source{Etcd: cli})
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	if err := snap.WriteRoutes(&table); err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, r := range snap.Routes {
		if r.MsgID == chat.MsgSend {
			found = true
			if !r.Down || len(r.Groups) != 1 || r.Groups[0].Group != chat.GroupIM || len(r.Groups[0].Nodes) != 0 {
				t.Errorf("routes: msgID 2 is %+v, want down, group im, no nodes", r)
			}
		}
	}
	if !found || !strings.Contains(table.String(), "(down: no live node)") {
		t.Errorf("routes does not list msgID 2 as down:\n%s", table.String())
	}

	// Another group claiming msgID 2 replaces the memory at once.
	c.startBackend("im2-1", "im2", func(b *backend.Backend) {
		b.Handle(chat.MsgSend, "send", func(bc *backend.Context) error { return bc.Reply(chat.MsgSend, []byte(`{"ok":true}`)) })
	})
	testkit.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if r, ok := g1.Topology().Route(chat.MsgSend); !ok || r.Group != "im2" || g1.Topology().RouteDown(chat.MsgSend) {
			return errors.New("gate-1 does not route msgID 2 to im2 yet")
		}
		return nil
	})
	if r := sendChat(t, zed, "zed", "again"); !r.OK {
		t.Fatalf("send once im2 claims msgID 2: %+v", r)
	}
}
