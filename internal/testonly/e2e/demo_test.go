package e2e

import (
	"bytes"
	"encoding/json"
	"github.com/zcluster/zcluster/internal/testonly/testkit/chatkit"
	"strings"
	"testing"
	"time"

	"github.com/aceld/zinx/ziface"
	"github.com/aceld/zinx/znet"

	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/internal/tools/zclient"
)

// TestDemoTable runs every row of the demo table across 2 gates, 2 im and
// 1 echo backends.
func TestDemoTable(t *testing.T) {
	c := newCluster(t)
	g1 := c.startGate("gate-1")
	g2 := c.startGate("gate-2")
	c.startBackend("im-1", chat.GroupIM)
	c.startBackend("im-2", chat.GroupIM)
	c.startBackend("echo-1", chat.GroupEcho)
	c.waitGroupSize(chat.GroupIM, 2, 5*time.Second)
	c.waitGroupSize(chat.GroupEcho, 1, 5*time.Second)

	alice := dial(t, g1)
	bob := dial(t, g2)
	la := chatkit.Login(t, alice, "alice")
	lb := chatkit.Login(t, bob, "bob")
	if la.Gate != "gate-1" || lb.Gate != "gate-2" || la.Session == "" || la.Session == lb.Session {
		t.Fatalf("login replies: %+v %+v", la, lb)
	}

	t.Run("echo", func(t *testing.T) {
		_ = alice.Send(chat.MsgEcho, []byte("ping"))
		if f := chatkit.Expect(t, alice, chat.MsgEcho); string(f.Payload) != "ping" {
			t.Fatalf("echo = %q", f.Payload)
		}
	})
	t.Run("cross-gate send", func(t *testing.T) {
		_ = alice.Send(chat.MsgSend, chatkit.MustJSON(t, chat.SendRequest{To: "bob", Text: "hi bob"}))
		var m chat.Message
		if err := json.Unmarshal(chatkit.Expect(t, bob, chat.MsgDelivered).Payload, &m); err != nil || m.From != "alice" || m.Text != "hi bob" {
			t.Fatalf("bob got %+v (%v)", m, err)
		}
		var r chat.SendReply
		if err := json.Unmarshal(chatkit.Expect(t, alice, chat.MsgSend).Payload, &r); err != nil || !r.OK {
			t.Fatalf("send reply %+v (%v)", r, err)
		}
		// And back, gate-2 to gate-1.
		_ = bob.Send(chat.MsgSend, chatkit.MustJSON(t, chat.SendRequest{To: "alice", Text: "hi alice"}))
		if err := json.Unmarshal(chatkit.Expect(t, alice, chat.MsgDelivered).Payload, &m); err != nil || m.From != "bob" {
			t.Fatalf("alice got %+v (%v)", m, err)
		}
		chatkit.Expect(t, bob, chat.MsgSend)
	})
	t.Run("offline", func(t *testing.T) {
		_ = alice.Send(chat.MsgSend, chatkit.MustJSON(t, chat.SendRequest{To: "carol", Text: "?"}))
		var r chat.SendReply
		if err := json.Unmarshal(chatkit.Expect(t, alice, chat.MsgSend).Payload, &r); err != nil || r.OK || r.Error != "carol is offline" {
			t.Fatalf("send to offline: %+v (%v)", r, err)
		}
	})
	t.Run("chain-echo", func(t *testing.T) {
		_ = bob.Send(chat.MsgChainEcho, []byte("chain"))
		if f := chatkit.Expect(t, bob, chat.MsgChainEcho); string(f.Payload) != "chain" {
			t.Fatalf("chain-echo = %q", f.Payload)
		}
	})
	t.Run("broadcast", func(t *testing.T) {
		_ = alice.Send(chat.MsgBroadcast, []byte("hello all"))
		for name, conn := range map[string]*zclient.Conn{"alice": alice, "bob": bob} {
			var m chat.Message
			if err := json.Unmarshal(chatkit.Expect(t, conn, chat.MsgBroadcasted).Payload, &m); err != nil || m.From != "alice" || m.Text != "hello all" {
				t.Fatalf("%s got broadcast %+v (%v)", name, m, err)
			}
		}
	})
	t.Run("errors keep the connection open", func(t *testing.T) {
		anon := dial(t, g1)
		_ = anon.Send(chat.MsgSend, chatkit.MustJSON(t, chat.SendRequest{To: "bob", Text: "x"}))
		if e := decodeError(t, chatkit.Expect(t, anon, gate.MsgError)); e.MsgID != chat.MsgSend || e.Error != "not logged in" {
			t.Fatalf("not logged in: %+v", e)
		}
		_ = anon.Send(777, []byte("x"))
		if e := decodeError(t, chatkit.Expect(t, anon, gate.MsgError)); e.MsgID != 777 || !strings.Contains(e.Error, "777") {
			t.Fatalf("unknown msgID: %+v", e)
		}
		_ = anon.Send(chat.MsgEcho, []byte("still here"))
		if f := chatkit.Expect(t, anon, chat.MsgEcho); string(f.Payload) != "still here" {
			t.Fatalf("echo after errors = %q", f.Payload)
		}
	})
	t.Run("older login kicked", func(t *testing.T) {
		alice2 := dial(t, g2)
		if r := chatkit.Login(t, alice2, "alice"); r.Gate != "gate-2" {
			t.Fatalf("second login %+v", r)
		}
		var k struct {
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal(chatkit.Expect(t, alice, chat.MsgKick).Payload, &k); err != nil || k.Reason == "" {
			t.Fatalf("kick notice %+v (%v)", k, err)
		}
		select {
		case <-alice.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("kicked connection not closed")
		}
		// Messages now reach the new session.
		_ = bob.Send(chat.MsgSend, chatkit.MustJSON(t, chat.SendRequest{To: "alice", Text: "new you"}))
		var m chat.Message
		if err := json.Unmarshal(chatkit.Expect(t, alice2, chat.MsgDelivered).Payload, &m); err != nil || m.Text != "new you" {
			t.Fatalf("alice2 got %+v (%v)", m, err)
		}
	})
}

// TestStockZinxClient logs in and chats through two gates with an
// unmodified zinx client (znet.NewClient, default pack).
func TestStockZinxClient(t *testing.T) {
	c := newCluster(t)
	g1 := c.startGate("gate-1")
	g2 := c.startGate("gate-2")
	c.startBackend("im-1", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)

	zed := newZinxClient(t, g1.ListenAddr())
	amy := newZinxClient(t, g2.ListenAddr())
	zed.send(t, chat.MsgLogin, []byte("zed"))
	zed.want(t, chat.MsgLogin, `"ok":true`)
	amy.send(t, chat.MsgLogin, []byte("amy"))
	amy.want(t, chat.MsgLogin, `"ok":true`)
	zed.send(t, chat.MsgSend, chatkit.MustJSON(t, chat.SendRequest{To: "amy", Text: "from a stock zinx client"}))
	amy.want(t, chat.MsgDelivered, "from a stock zinx client")
	zed.want(t, chat.MsgSend, `"ok":true`)
}

type zinxClient struct {
	cli    ziface.IClient
	frames chan [2][]byte
}

type frameRouter struct {
	znet.BaseRouter
	out chan [2][]byte
}

func (r *frameRouter) Handle(req ziface.IRequest) {
	id := []byte{byte(req.GetMsgID() >> 24), byte(req.GetMsgID() >> 16), byte(req.GetMsgID() >> 8), byte(req.GetMsgID())}
	r.out <- [2][]byte{id, append([]byte(nil), req.GetData()...)}
}

func newZinxClient(t *testing.T, addr string) *zinxClient {
	t.Helper()
	host, port := splitHostPort(t, addr)
	zc := &zinxClient{frames: make(chan [2][]byte, 64)}
	zc.cli = znet.NewClient(host, port)
	for _, id := range []uint32{chat.MsgLogin, chat.MsgSend, chat.MsgChainEcho, chat.MsgDelivered, gate.MsgError} {
		zc.cli.AddRouter(id, &frameRouter{out: zc.frames})
	}
	ready := make(chan struct{})
	zc.cli.SetOnConnStart(func(ziface.IConnection) { close(ready) })
	zc.cli.Start()
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("zinx client did not connect")
	}
	t.Cleanup(zc.cli.Stop)
	return zc
}

func (z *zinxClient) send(t *testing.T, msgID uint32, data []byte) {
	t.Helper()
	if err := z.cli.Conn().SendMsg(msgID, data); err != nil {
		t.Fatal(err)
	}
}

// within reports whether a frame with msgID whose payload contains substr
// arrives within d.
func (z *zinxClient) within(msgID uint32, substr string, d time.Duration) bool {
	deadline := time.After(d)
	for {
		select {
		case f := <-z.frames:
			id := uint32(f[0][0])<<24 | uint32(f[0][1])<<16 | uint32(f[0][2])<<8 | uint32(f[0][3])
			if id == msgID && bytes.Contains(f[1], []byte(substr)) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// want waits for a frame with msgID whose payload contains substr. The
// stock client handles each message on its own goroutine, so frames of
// other msgIDs may arrive in any order and are skipped.
func (z *zinxClient) want(t *testing.T, msgID uint32, substr string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case f := <-z.frames:
			id := uint32(f[0][0])<<24 | uint32(f[0][1])<<16 | uint32(f[0][2])<<8 | uint32(f[0][3])
			if id == msgID && bytes.Contains(f[1], []byte(substr)) {
				return
			}
		case <-deadline:
			t.Fatalf("no msgID %d containing %q", msgID, substr)
		}
	}
}
