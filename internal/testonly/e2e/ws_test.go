package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/internal/runtime/frame"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
	"github.com/zcluster/zcluster/internal/testonly/testkit/chatkit"
	"github.com/zcluster/zcluster/internal/tools/zclient"
)

// WebSocket and KCP clients are sessions like TCP ones: they chat with TCP
// users across gates, are kicked, get broadcasts and error frames.

func dialWS(t *testing.T, url string, o zclient.WSOptions) *zclient.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := zclient.DialWS(ctx, url, o)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func dialKCP(t *testing.T, addr string) *zclient.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := zclient.DialKCP(ctx, addr)
	if err != nil {
		t.Fatalf("dial kcp %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// wsCloseError waits for conn to end and returns the close frame the gate sent.
func wsCloseError(t *testing.T, conn *zclient.Conn) *websocket.CloseError {
	t.Helper()
	select {
	case <-conn.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the gate did not close the connection")
	}
	var ce *websocket.CloseError
	if !errors.As(conn.Err(), &ce) {
		t.Fatalf("connection ended with %v, want a close frame", conn.Err())
	}
	return ce
}

func TestWebSocketAndKCPSessionsChatWithTCP(t *testing.T) {
	c := newCluster(t)
	g1 := c.startGateWith("gate-1", func(cfg *gate.Config) {
		cfg.WSListen = "127.0.0.1:0"
		cfg.KCPListen = "127.0.0.1:0"
	})
	g2 := c.startGateWith("gate-2", func(cfg *gate.Config) { cfg.WSListen = "127.0.0.1:0" })
	c.startBackend("im-1", chat.GroupIM)
	c.startBackend("echo-1", chat.GroupEcho)
	c.waitGroupSize(chat.GroupIM, 1, 10*time.Second)
	c.waitGroupSize(chat.GroupEcho, 1, 10*time.Second)
	if !strings.HasPrefix(g1.WSURL(), "ws://127.0.0.1:") || !strings.HasSuffix(g1.WSURL(), "/ws") {
		t.Fatalf("WSURL = %q", g1.WSURL())
	}

	alice := dialWS(t, g1.WSURL(), zclient.WSOptions{}) // websocket on gate-1
	bob := chatkit.Dial(t, g2.ListenAddr())             // tcp on gate-2
	carol := dialKCP(t, g1.KCPAddr())                   // kcp on gate-1
	if r := chatkit.Login(t, alice, "alice"); r.Gate != "gate-1" {
		t.Fatalf("alice on %s", r.Gate)
	}
	chatkit.Login(t, bob, "bob")
	chatkit.Login(t, carol, "carol")

	// Every transport is counted.
	testkit.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		got := g1.Conns()
		if got[gate.TransportWS] != 1 || got[gate.TransportKCP] != 1 || got[gate.TransportTCP] != 0 {
			return errors.New("gate-1 conns: " + mustString(got))
		}
		return nil
	})

	// ws -> tcp across gates, tcp -> ws, kcp -> ws.
	send := func(from *zclient.Conn, to, text string) {
		t.Helper()
		if err := from.Send(chat.MsgSend, chatkit.MustJSON(t, chat.SendRequest{To: to, Text: text})); err != nil {
			t.Fatal(err)
		}
		var r chat.SendReply
		if err := json.Unmarshal(chatkit.Expect(t, from, chat.MsgSend).Payload, &r); err != nil || !r.OK {
			t.Fatalf("send to %s: %+v %v", to, r, err)
		}
	}
	expectMsg := func(conn *zclient.Conn, msgID uint32, from, text string) {
		t.Helper()
		var m chat.Message
		if err := json.Unmarshal(chatkit.Expect(t, conn, msgID).Payload, &m); err != nil || m.From != from || m.Text != text {
			t.Fatalf("got %+v (%v), want %s: %s", m, err, from, text)
		}
	}
	send(alice, "bob", "hi from a browser")
	expectMsg(bob, chat.MsgDelivered, "alice", "hi from a browser")
	send(bob, "alice", "hi from tcp")
	expectMsg(alice, chat.MsgDelivered, "bob", "hi from tcp")
	send(carol, "alice", "hi over kcp")
	expectMsg(alice, chat.MsgDelivered, "carol", "hi over kcp")

	// A broadcast reaches every transport.
	if err := bob.Send(chat.MsgBroadcast, []byte("all hands")); err != nil {
		t.Fatal(err)
	}
	for _, conn := range []*zclient.Conn{alice, bob, carol} {
		expectMsg(conn, chat.MsgBroadcasted, "bob", "all hands")
	}

	// Chain-echo through im and echo, over ws and kcp.
	for _, conn := range []*zclient.Conn{alice, carol} {
		if err := conn.Send(chat.MsgChainEcho, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		if f := chatkit.Expect(t, conn, chat.MsgChainEcho); string(f.Payload) != "ping" {
			t.Fatalf("chain-echo: %q", f.Payload)
		}
	}

	// Several frames in one binary message: each is answered (echoes in
	// order; the error frame for the unknown msgID comes from the gate
	// itself, so it may overtake them).
	three := frame.Append(frame.Append(nil, chat.MsgEcho, []byte("one")), 777, nil)
	three = frame.Append(three, chat.MsgEcho, []byte("two"))
	if err := alice.SendRaw(three); err != nil {
		t.Fatal(err)
	}
	var echoes []string
	var errs []errorFrame
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	for len(echoes) < 2 || len(errs) < 1 {
		f, err := alice.Recv(rctx)
		if err != nil {
			t.Fatalf("after packed frames: %v (echoes %v, errors %v)", err, echoes, errs)
		}
		switch f.MsgID {
		case chat.MsgEcho:
			echoes = append(echoes, string(f.Payload))
		case chat.MsgError:
			errs = append(errs, decodeError(t, f))
		}
	}
	if strings.Join(echoes, ",") != "one,two" || errs[0].MsgID != 777 || !strings.Contains(errs[0].Error, "unknown msgID") {
		t.Fatalf("packed frames answered %v %+v", echoes, errs)
	}

	// A login of alice elsewhere (tcp on gate-2) kicks the websocket
	// session: it reads the reason, then the connection closes.
	alice2 := chatkit.Dial(t, g2.ListenAddr())
	chatkit.Login(t, alice2, "alice")
	var k struct{ Reason string }
	if err := json.Unmarshal(chatkit.Expect(t, alice, chat.MsgKick).Payload, &k); err != nil || k.Reason != "logged in elsewhere" {
		t.Fatalf("kick %+v %v", k, err)
	}
	if ce := wsCloseError(t, alice); ce.Code != websocket.CloseNormalClosure {
		t.Fatalf("close after kick: %v", ce)
	}
	testkit.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if n := g1.Conns()[gate.TransportWS]; n != 0 {
			return errors.New("gate-1 still counts the kicked websocket")
		}
		return nil
	})
	send(bob, "alice", "still there?")
	expectMsg(alice2, chat.MsgDelivered, "bob", "still there?")
}

func mustString(v any) string { b, _ := json.Marshal(v); return string(b) }

// A text message, a frame split across messages or a frame over the limit
// closes the websocket with a close code and a reason.
func TestWebSocketRefusesBadMessages(t *testing.T) {
	c := newCluster(t)
	g := c.startGateWith("gate-1", func(cfg *gate.Config) {
		cfg.WSListen = "127.0.0.1:0"
		cfg.MaxFrame = 1024
	})
	good := frame.Append(nil, chat.MsgLogin, []byte("dave"))
	for _, tc := range []struct {
		name   string
		send   func(*zclient.Conn) error
		code   int
		reason string
	}{
		{"text", func(c *zclient.Conn) error { return c.SendText("hello") }, websocket.CloseUnsupportedData, "text message"},
		{"split", func(c *zclient.Conn) error { return c.SendRaw(good[:5]) }, websocket.CloseInvalidFramePayloadData, "split across messages"},
		{"split-tail", func(c *zclient.Conn) error { return c.SendRaw(append(append([]byte{}, good...), good[:10]...)) }, websocket.CloseInvalidFramePayloadData, "split across messages"},
		{"too-large", func(c *zclient.Conn) error { return c.SendRaw(frame.Append(nil, chat.MsgEcho, make([]byte, 2000))) }, websocket.CloseMessageTooBig, "over"},
		{"declared-too-large", func(c *zclient.Conn) error { return c.SendRaw([]byte{0, 0, 0, 4, 0x7f, 0, 0, 0}) }, websocket.CloseMessageTooBig, "over the limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := dialWS(t, g.WSURL(), zclient.WSOptions{})
			if err := tc.send(conn); err != nil {
				t.Fatal(err)
			}
			ce := wsCloseError(t, conn)
			if ce.Code != tc.code || !strings.Contains(ce.Text, tc.reason) {
				t.Fatalf("closed with %d %q, want %d containing %q", ce.Code, ce.Text, tc.code, tc.reason)
			}
		})
	}
	// The gate still serves others.
	chatkit.Login(t, dialWS(t, g.WSURL(), zclient.WSOptions{}), "erin")
}

// Origins: by default only pages from the host name the client dialled;
// "*" allows any; a list allows exactly its entries. Refused: 403.
func TestWebSocketOrigins(t *testing.T) {
	c := newCluster(t)
	def := c.startGateWith("gate-1", func(cfg *gate.Config) { cfg.WSListen = "127.0.0.1:0" })
	any := c.startGateWith("gate-2", func(cfg *gate.Config) {
		cfg.WSListen = "127.0.0.1:0"
		cfg.WSOrigins = []string{"*"}
	})
	list := c.startGateWith("gate-3", func(cfg *gate.Config) {
		cfg.WSListen = "127.0.0.1:0"
		cfg.WSOrigins = []string{"https://game.example.com", "play.example.org"}
	})
	try := func(g *gate.Gate, origin string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		conn, err := zclient.DialWS(ctx, g.WSURL(), zclient.WSOptions{Header: h})
		if err == nil {
			_ = conn.Close()
		}
		return err
	}
	for _, tc := range []struct {
		g      *gate.Gate
		origin string
		ok     bool
	}{
		{def, "", true},
		{def, "http://127.0.0.1:8080", true}, // same host name, other port (the --http page)
		{def, "http://evil.example.com", false},
		{def, "http://localhost:8080", false},
		{any, "http://evil.example.com", true},
		{list, "https://game.example.com", true},
		{list, "http://game.example.com", false},
		{list, "https://play.example.org:8443", true},
		{list, "http://127.0.0.1:8080", false},
	} {
		err := try(tc.g, tc.origin)
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s origin %q refused: %v", tc.g.ID(), tc.origin, err)
		case !tc.ok && (err == nil || !strings.Contains(err.Error(), "403")):
			t.Errorf("%s origin %q: %v, want 403", tc.g.ID(), tc.origin, err)
		}
	}
}

// The gate's --tls-cert/--tls-key serve wss://.
func TestWebSocketTLS(t *testing.T) {
	ca, cert, key := testCA(t)
	c := newCluster(t)
	g := c.startGateWith("gate-1", func(cfg *gate.Config) {
		cfg.WSListen = "127.0.0.1:0"
		cfg.TLSCertFile, cfg.TLSKeyFile = cert, key
	})
	if !strings.HasPrefix(g.WSURL(), "wss://") {
		t.Fatalf("WSURL = %q", g.WSURL())
	}
	conn := dialWS(t, g.WSURL(), zclient.WSOptions{TLS: &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}})
	chatkit.Login(t, conn, "frank")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := zclient.DialWS(ctx, "ws"+strings.TrimPrefix(g.WSURL(), "wss"), zclient.WSOptions{}); err == nil {
		t.Fatal("plain ws:// accepted by a wss listener")
	}
}

// A gate shutting down tells websocket clients why (msgID 9), then closes
// with 1001.
func TestWebSocketGateShutdown(t *testing.T) {
	c := newCluster(t)
	g := c.startGateWith("gate-1", func(cfg *gate.Config) { cfg.WSListen = "127.0.0.1:0" })
	conn := dialWS(t, g.WSURL(), zclient.WSOptions{})
	chatkit.Login(t, conn, "gina")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { _ = g.Shutdown(ctx) }()
	var k struct{ Reason string }
	if err := json.Unmarshal(chatkit.Expect(t, conn, chat.MsgKick).Payload, &k); err != nil || !strings.Contains(k.Reason, "shutting down") {
		t.Fatalf("notice %+v %v", k, err)
	}
	wsCloseError(t, conn)
	select {
	case <-g.Done():
	case <-ctx.Done():
		t.Fatal("shutdown did not finish")
	}
}

// The front door's in-flight limit holds on websocket too: a websocket
// client with --max-inflight requests unanswered is not read any further
// (the rest wait, none is forwarded) while another websocket client is
// served; a kick closes the blocked connection at once, and a shutdown
// with a blocked reader returns promptly.
func TestWebSocketInflightLimit(t *testing.T) {
	const limit = 4
	c := newCluster(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	g := c.startGateWith("gate-1", func(cfg *gate.Config) {
		cfg.WSListen = "127.0.0.1:0"
		cfg.MaxInflight = limit
		cfg.RequestTimeout = time.Minute
	})
	c.startBackend("im-1", chat.GroupIM, setupHold(release))
	c.waitGroupSize(chat.GroupIM, 1, 10*time.Second)

	greedy := dialWS(t, g.WSURL(), zclient.WSOptions{})
	chatkit.Login(t, greedy, "greedy")
	var packed []byte // all in one message: the limit is per frame
	for i := range 3 * limit {
		packed = frame.Append(packed, msgHold, []byte{byte(i)})
	}
	if err := greedy.SendRaw(packed); err != nil {
		t.Fatal(err)
	}
	testkit.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if p := g.Pending(); p != limit {
			return fmt.Errorf("%d requests forwarded, want %d", p, limit)
		}
		return nil
	})
	other := dialWS(t, g.WSURL(), zclient.WSOptions{})
	chatkit.Login(t, other, "other")
	v := startVictim(other)
	time.Sleep(300 * time.Millisecond)
	// The victim's own echo may be in flight too (at most one).
	if p := g.Pending(); p > limit+1 {
		t.Fatalf("%d requests forwarded, past the limit of %d", p, limit)
	}
	v.stop(t, 3*time.Second)

	takeover := chatkit.Dial(t, g.ListenAddr())
	chatkit.Login(t, takeover, "greedy")
	select {
	case <-greedy.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the blocked websocket was not closed by the kick")
	}

	blocked := dialWS(t, g.WSURL(), zclient.WSOptions{})
	chatkit.Login(t, blocked, "blocked")
	if err := blocked.SendRaw(packed); err != nil {
		t.Fatal(err)
	}
	testkit.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if p := g.Pending(); p != 2*limit {
			return fmt.Errorf("%d requests forwarded, want %d", p, 2*limit)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := g.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("shutdown with a blocked websocket reader took %v", d)
	}
}

// KCP carries the TCP byte stream: a frame larger than a UDP packet is
// reassembled, answers come back whole, and a frame over the limit ends
// the session (KCP has no close handshake: the gate forgets it).
func TestKCPStreamAndLimits(t *testing.T) {
	c := newCluster(t)
	g := c.startGateWith("gate-1", func(cfg *gate.Config) { cfg.KCPListen = "127.0.0.1:0" })
	c.startBackend("im-1", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 1, 10*time.Second)

	conn := dialKCP(t, g.KCPAddr())
	chatkit.Login(t, conn, "kim")
	big := make([]byte, 40000)
	for i := range big {
		big[i] = byte(i * 7)
	}
	for range 3 {
		if err := conn.Send(chat.MsgEcho, big); err != nil {
			t.Fatal(err)
		}
		if f := chatkit.Expect(t, conn, chat.MsgEcho); string(f.Payload) != string(big) {
			t.Fatalf("echo of %d bytes came back as %d bytes, or changed", len(big), len(f.Payload))
		}
	}
	if n := g.Conns()[gate.TransportKCP]; n != 1 {
		t.Fatalf("kcp connections = %d, want 1", n)
	}
	if err := conn.SendRaw([]byte{0, 0, 0, 4, 0x7f, 0, 0, 0}); err != nil { // declares 2 GiB
		t.Fatal(err)
	}
	testkit.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := g.Conns()[gate.TransportKCP]; n != 0 {
			return fmt.Errorf("kcp connections = %d after a frame over the limit, want 0", n)
		}
		return nil
	})
	// Another session is served.
	chatkit.Login(t, dialKCP(t, g.KCPAddr()), "lee")
}

// The front door's other limits hold on websocket connections too: login
// timeout, idle timeout (heartbeats keep a connection), max connections
// (counted over every transport) and the per-connection rate.
func TestWebSocketFrontDoorLimits(t *testing.T) {
	const d = 700 * time.Millisecond
	c := newCluster(t)
	c.startBackend("im-1", chat.GroupIM)

	t.Run("login timeout and max conns", func(t *testing.T) {
		g := c.startGateWith("gate-login", func(cfg *gate.Config) {
			cfg.WSListen = "127.0.0.1:0"
			cfg.LoginTimeout = d
			cfg.MaxConns = 3
		})
		c.waitGroupSize(chat.GroupIM, 1, 10*time.Second)
		anon := dialWS(t, g.WSURL(), zclient.WSOptions{})
		user := dialWS(t, g.WSURL(), zclient.WSOptions{})
		chatkit.Login(t, user, "wsa")
		tcp := chatkit.Dial(t, g.ListenAddr()) // the third connection, over TCP
		chatkit.Login(t, tcp, "tcpa")
		full := dialWS(t, g.WSURL(), zclient.WSOptions{})
		expectKick(t, full, "gate full", 5*time.Second)
		expectKick(t, anon, "login timeout", 10*time.Second)
		time.Sleep(d)
		stillOpen(t, user, "logged-in websocket client")
		echoOK(t, user, "after the login timeout")
	})

	t.Run("idle timeout and heartbeat", func(t *testing.T) {
		g := c.startGateWith("gate-idle", func(cfg *gate.Config) {
			cfg.WSListen = "127.0.0.1:0"
			cfg.IdleTimeout = d
			cfg.LoginTimeout = -1
		})
		c.waitGroupSize(chat.GroupIM, 1, 10*time.Second)
		silent := dialWS(t, g.WSURL(), zclient.WSOptions{})
		beating := dialWS(t, g.WSURL(), zclient.WSOptions{})
		stop := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- func() error {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return nil
					case <-time.After(d / 4):
					}
					if err := beating.Send(gate.MsgHeartbeat, []byte(fmt.Sprint(i))); err != nil {
						return err
					}
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					_, _, err := beating.Expect(ctx, gate.MsgHeartbeat)
					cancel()
					if err != nil {
						return fmt.Errorf("heartbeat %d: %w", i, err)
					}
				}
			}()
		}()
		expectKick(t, silent, "idle", 10*time.Second)
		time.Sleep(2 * d)
		close(stop)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		stillOpen(t, beating, "heartbeating websocket client")
	})

	t.Run("client rate", func(t *testing.T) {
		g := c.startGateWith("gate-rate", func(cfg *gate.Config) {
			cfg.WSListen = "127.0.0.1:0"
			cfg.ClientRate, cfg.ClientBurst = 10, 5
		})
		c.waitGroupSize(chat.GroupIM, 1, 10*time.Second)
		fast := dialWS(t, g.WSURL(), zclient.WSOptions{})
		const n = 40
		var packed []byte // one message: the rate counts frames
		for i := range n {
			packed = frame.Append(packed, chat.MsgEcho, []byte(fmt.Sprint(i)))
		}
		if err := fast.SendRaw(packed); err != nil {
			t.Fatal(err)
		}
		echoes, limited := 0, 0
		for echoes+limited < n {
			f, err := fast.Recv(ctxTimeout(t, 5*time.Second))
			if err != nil {
				t.Fatalf("after %d echoes and %d limited: %v", echoes, limited, err)
			}
			switch f.MsgID {
			case chat.MsgEcho:
				echoes++
			case chat.MsgError:
				if e := decodeError(t, f); e.Error != "rate limited" {
					t.Fatalf("error frame %s", f.Payload)
				}
				limited++
			}
		}
		if echoes < 5 || echoes > n/2 || limited < n/2 {
			t.Fatalf("%d echoes, %d rate limited; want about 5 echoes", echoes, limited)
		}
		stillOpen(t, fast, "rate-limited websocket client")
	})
}

// TestGateProcessWebSocketFlags: `zcluster gate --ws-listen --ws-path
// --kcp-listen --http` (a real process) accepts WebSocket and KCP clients,
// serves the chat page and its endpoint list on --http, and counts
// connections by transport in /metrics.
func TestGateProcessWebSocketFlags(t *testing.T) {
	c := newCluster(t)
	wsAddr, kcpAddr, httpAddr := testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t)
	startProc(t, c.nodeArgs("gate", "gate-ws", "--listen", testkit.FreeAddr(t), "--relay", testkit.FreeAddr(t),
		"--ws-listen", wsAddr, "--ws-path", "/game", "--kcp-listen", kcpAddr, "--http", httpAddr)...)
	get := func(path string) (int, string, error) {
		resp, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	wsURL := "ws://" + wsAddr + "/game"
	testkit.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		code, body, err := get("/chat/endpoints.json")
		if err != nil || code != http.StatusOK || !strings.Contains(body, `"url":"`+wsURL+`"`) {
			return fmt.Errorf("endpoints.json: %d %q %v", code, body, err)
		}
		return nil
	})
	if code, body, err := get("/chat/"); err != nil || code != http.StatusOK || !strings.Contains(body, "zcluster.js") {
		t.Fatalf("/chat/: %d %v", code, err)
	}
	ws := dialWS(t, wsURL, zclient.WSOptions{Header: http.Header{"Origin": {"http://" + httpAddr}}})
	if r := chatkit.Login(t, ws, "wendy"); r.Gate != "gate-ws" {
		t.Fatalf("logged in on %s", r.Gate)
	}
	chatkit.Login(t, dialKCP(t, kcpAddr), "kai")
	testkit.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		_, body, err := get("/metrics")
		if err != nil {
			return err
		}
		for _, want := range []string{`transport="ws"} 1`, `transport="kcp"} 1`, `transport="tcp"} 0`} {
			found := false
			for _, line := range strings.Split(body, "\n") {
				found = found || (strings.HasPrefix(line, "zcluster_client_connections{") && strings.HasSuffix(line, want))
			}
			if !found {
				return fmt.Errorf("/metrics has no zcluster_client_connections{...%s", want)
			}
		}
		return nil
	})
}
