package e2e

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	zccluster "github.com/zcluster/zcluster/cluster"
	"github.com/zcluster/zcluster/internal/testonly/testkit/chatkit"
	"io"
	"net"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/internal/runtime/frame"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
	"github.com/zcluster/zcluster/internal/tools/zclient"
	"github.com/zcluster/zcluster/relay"
)

// Hostile input (issue 3): what a client or a stranger can write to a
// gate's client port or to any node's relay port. Each test keeps honest
// clients chatting throughout and checks they never notice.

// msgWhoAmI and msgWhoAmIAnon are answered by a backend with the identity
// the cluster attributes the message to (whoAmI).
const (
	msgWhoAmI     uint32 = 600
	msgWhoAmIAnon uint32 = 601
)

// whoAmI is what a backend handler sees of a client message.
type whoAmI struct {
	Session string `json:"session"`
	User    string `json:"user"`
	From    string `json:"from"`
	Node    string `json:"node"`
	Payload []byte `json:"payload"`
}

// setupWhoAmI runs the chat app plus the two identity handlers; calls
// counts every message they handle.
func setupWhoAmI(calls *atomic.Int64) func(*backend.Backend) {
	return func(b *backend.Backend) {
		_ = chat.SetupBackend(b)
		fn := func(c *backend.Context) error {
			calls.Add(1)
			out, _ := json.Marshal(whoAmI{Session: c.Session(), User: c.User(), From: c.From(), Node: c.NodeID(), Payload: c.Payload()})
			return c.Reply(c.MsgID(), out)
		}
		b.Handle(msgWhoAmI, "whoami", fn)
		b.Handle(msgWhoAmIAnon, "whoami-anon", fn, backend.Anonymous())
	}
}

func askWhoAmI(t *testing.T, conn *zclient.Conn, msgID uint32, payload []byte) whoAmI {
	t.Helper()
	if err := conn.Send(msgID, payload); err != nil {
		t.Fatal(err)
	}
	var w whoAmI
	if err := json.Unmarshal(chatkit.Expect(t, conn, msgID).Payload, &w); err != nil {
		t.Fatal(err)
	}
	return w
}

// chatter keeps two logged-in clients sending each other messages (msgID
// 2, one at a time) until stop, and records what went wrong.
type chatter struct {
	sent   atomic.Int64
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func startChatter(a, b *zclient.Conn, aName, bName string) *chatter {
	ctx, cancel := context.WithCancel(context.Background())
	ch := &chatter{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(ch.done)
		for n := 0; ctx.Err() == nil; n++ {
			from, to, toName := a, b, bName
			if n%2 == 1 {
				from, to, toName = b, a, aName
			}
			text := fmt.Sprintf("chat-%d", n)
			req, _ := json.Marshal(chat.SendRequest{To: toName, Text: text})
			if err := from.Send(chat.MsgSend, req); err != nil {
				ch.err = fmt.Errorf("message %d: send: %w", n, err)
				return
			}
			wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
			f, skipped, err := from.Expect(wctx, chat.MsgSend)
			if err == nil && !strings.Contains(string(f.Payload), `"ok":true`) {
				err = fmt.Errorf("reply %s", f.Payload)
			}
			if err == nil {
				var got zclient.Frame
				got, skipped, err = to.Expect(wctx, chat.MsgDelivered)
				if err == nil && !strings.Contains(string(got.Payload), `"`+text+`"`) {
					err = fmt.Errorf("delivered %s, want %s", got.Payload, text)
				}
			}
			wcancel()
			if err != nil {
				ch.err = fmt.Errorf("message %d: %w (skipped %s)", n, err, chatkit.Describe(skipped))
				return
			}
			ch.sent.Add(1)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return ch
}

// progress waits until at least n more messages went through.
func (ch *chatter) progress(t *testing.T, n int64) {
	t.Helper()
	target := ch.sent.Load() + n
	testkit.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		select {
		case <-ch.done:
			return fmt.Errorf("chatter stopped: %v", ch.err)
		default:
		}
		if got := ch.sent.Load(); got < target {
			return fmt.Errorf("chatter at %d messages, want %d", got, target)
		}
		return nil
	})
}

// stop ends the chatter and fails the test if any message was lost.
func (ch *chatter) stop(t *testing.T) int64 {
	t.Helper()
	ch.cancel()
	<-ch.done
	if ch.err != nil {
		t.Fatalf("honest clients were affected: %v", ch.err)
	}
	return ch.sent.Load()
}

// rawConn is a plain TCP connection for writing what no client library
// would.
func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	return nc
}

// waitClosed reads (and discards) from nc until the peer closes it and
// returns how long that took and how many bytes came; it fails the test
// if the connection is still open after timeout.
func waitClosed(t *testing.T, nc net.Conn, timeout time.Duration) (time.Duration, int64) {
	t.Helper()
	start := time.Now()
	_ = nc.SetReadDeadline(start.Add(timeout))
	n, err := io.Copy(io.Discard, nc)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v (%d bytes read)", timeout, n)
	}
	return time.Since(start), n
}

// memSample is the process heap after a collection.
func memSample() runtime.MemStats {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

// TestHostileClientFrames: garbage, a 2 GiB length header and an oversized
// frame each close only their own connection, without a large allocation;
// an unknown msgID gets an error frame; honest clients on the same gate
// keep chatting throughout.
func TestHostileClientFrames(t *testing.T) {
	c := newCluster(t)
	g1, g2 := c.startGate("gate-1"), c.startGate("gate-2")
	var calls atomic.Int64
	c.startBackend("im-1", chat.GroupIM, setupWhoAmI(&calls))
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)
	alice, bob := dial(t, g1), dial(t, g2)
	chatkit.Login(t, alice, "alice")
	chatkit.Login(t, bob, "bob")
	ch := startChatter(alice, bob, "alice", "bob")
	ch.progress(t, 3)

	t.Run("garbage", func(t *testing.T) {
		nc := rawConn(t, g1.ListenAddr())
		junk := make([]byte, 4096)
		_, _ = rand.Read(junk)
		_, _ = nc.Write(append([]byte("GET / HTTP/1.1\r\nHost: gate\r\n\r\n"), junk...))
		d, n := waitClosed(t, nc, 5*time.Second)
		t.Logf("garbage: closed after %v, %d bytes answered", d.Round(time.Millisecond), n)
		ch.progress(t, 2)
	})

	for _, declared := range []uint32{1 << 31, 1<<32 - 1} {
		t.Run(fmt.Sprintf("length-%d", declared), func(t *testing.T) {
			before := memSample()
			nc := rawConn(t, g1.ListenAddr())
			hdr := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, chat.MsgEcho), declared)
			if _, err := nc.Write(hdr); err != nil {
				t.Fatal(err)
			}
			// Keep writing a body, as a real attacker would: the gate must
			// close without buffering it.
			go func() {
				body := make([]byte, 64<<10)
				for i := 0; i < 256; i++ {
					if _, err := nc.Write(body); err != nil {
						return
					}
				}
			}()
			d, _ := waitClosed(t, nc, 5*time.Second)
			after := memSample()
			total := after.TotalAlloc - before.TotalAlloc
			heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			t.Logf("declared %d bytes: closed after %v; process allocated %d KiB in between, live heap %+d KiB", declared, d.Round(time.Millisecond), total>>10, heap>>10)
			// The whole in-process cluster (etcd included) allocates in
			// between; a decoder that trusted the header would need the
			// declared size.
			if limit := uint64(declared) / 16; total > limit {
				t.Fatalf("allocated %d bytes while refusing a %d-byte frame (limit %d)", total, declared, limit)
			}
			if heap > 64<<20 {
				t.Fatalf("live heap grew by %d bytes", heap)
			}
			ch.progress(t, 2)
		})
	}

	t.Run("over-max-frame", func(t *testing.T) {
		// Exactly the limit is served...
		conn := dial(t, g1)
		big := make([]byte, frame.DefaultMaxFrame)
		_, _ = rand.Read(big)
		if err := conn.Send(chat.MsgEcho, big); err != nil {
			t.Fatal(err)
		}
		if f := chatkit.Expect(t, conn, chat.MsgEcho); string(f.Payload) != string(big) {
			t.Fatalf("64 KiB echo came back with %d bytes", len(f.Payload))
		}
		// ...one byte more closes the connection.
		nc := rawConn(t, g1.ListenAddr())
		_, _ = nc.Write(frame.Append(nil, chat.MsgEcho, make([]byte, frame.DefaultMaxFrame+1)))
		d, n := waitClosed(t, nc, 5*time.Second)
		t.Logf("frame of %d bytes: closed after %v, %d bytes answered", frame.DefaultMaxFrame+1, d.Round(time.Millisecond), n)
		if n != 0 {
			t.Fatalf("the gate answered %d bytes to an oversized frame", n)
		}
		ch.progress(t, 2)
	})

	t.Run("unknown-msgid", func(t *testing.T) {
		conn := dial(t, g1)
		for _, id := range []uint32{777, 16, gate.MsgKick, gate.MsgError, 99999} {
			if err := conn.Send(id, []byte("x")); err != nil {
				t.Fatal(err)
			}
			e := decodeError(t, chatkit.Expect(t, conn, gate.MsgError))
			if e.MsgID != id || !strings.Contains(e.Error, "unknown msgID") {
				t.Fatalf("msgID %d: error frame %+v", id, e)
			}
		}
		// The connection is still usable.
		_ = conn.Send(chat.MsgEcho, []byte("still here"))
		if f := chatkit.Expect(t, conn, chat.MsgEcho); string(f.Payload) != "still here" {
			t.Fatalf("echo %q", f.Payload)
		}
	})

	if n := ch.stop(t); n == 0 {
		t.Fatal("no honest message went through")
	}
	// Only alice is left on gate-1: every hostile connection is gone.
	testkit.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if got := g1.Sessions(); got != 1 {
			return fmt.Errorf("gate-1 has %d sessions, want 1", got)
		}
		return nil
	})
}

// TestHostileAttribution: whatever a client writes, the session, user and
// node a message is attributed to are the ones the gate stamped.
func TestHostileAttribution(t *testing.T) {
	c := newCluster(t)
	g1, g2 := c.startGate("gate-1"), c.startGate("gate-2")
	var calls atomic.Int64
	c.startBackend("im-1", chat.GroupIM, setupWhoAmI(&calls))
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)
	victim := dial(t, g2)
	vr := chatkit.Login(t, victim, "victim")
	mallory := dial(t, g1)

	// Before login: no user-bound message at all.
	for _, id := range []uint32{chat.MsgSend, chat.MsgBroadcast, chat.MsgChainEcho, msgWhoAmI} {
		_ = mallory.Send(id, chatkit.MustJSON(t, chat.SendRequest{To: "victim", Text: "forged"}))
		if e := decodeError(t, chatkit.Expect(t, mallory, gate.MsgError)); e.MsgID != id || !strings.Contains(e.Error, "not logged in") {
			t.Fatalf("msgID %d before login: %+v", id, e)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("backend handled %d messages of a client that is not logged in", n)
	}

	// An anonymous route sees the gate's session and no user.
	forged, err := (&relay.Envelope{Kind: relay.KindForward, MsgID: msgWhoAmI, Seq: 1,
		Session: []byte(vr.Session), User: []byte("victim"), Source: []byte("gate-2"), Payload: []byte("hi")}).Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	anon := askWhoAmI(t, mallory, msgWhoAmIAnon, forged)
	if anon.User != "" || anon.Session == "" || anon.Session == vr.Session || anon.From != "gate-1" {
		t.Fatalf("anonymous message attributed to %+v", anon)
	}

	mr := chatkit.Login(t, mallory, "mallory")
	if mr.Session != anon.Session {
		t.Fatalf("login session %s differs from the connection's %s", mr.Session, anon.Session)
	}
	// A payload shaped like a relay envelope (or like JSON naming another
	// user) is only a payload.
	for _, p := range [][]byte{forged, frame.Append(nil, relay.FrameEnvelope, forged), []byte(`{"user":"victim","session":"` + vr.Session + `"}`)} {
		w := askWhoAmI(t, mallory, msgWhoAmI, p)
		if w.User != "mallory" || w.Session != mr.Session || w.From != "gate-1" || string(w.Payload) != string(p) {
			t.Fatalf("message attributed to %+v (session %s)", w, mr.Session)
		}
	}
	// A second login on the same connection is refused; the first stays.
	_ = mallory.Send(chat.MsgLogin, []byte("victim"))
	var lr chat.LoginReply
	if err := json.Unmarshal(chatkit.Expect(t, mallory, chat.MsgLogin).Payload, &lr); err != nil || lr.OK || !strings.Contains(lr.Error, "already logged in") {
		t.Fatalf("second login: %+v (%v)", lr, err)
	}
	if w := askWhoAmI(t, mallory, msgWhoAmI, nil); w.User != "mallory" {
		t.Fatalf("after a second login the user is %q", w.User)
	}
	// Raw relay frames on the client port are unknown msgIDs, nothing more.
	push, _ := (&relay.Envelope{Kind: relay.KindPush, MsgID: chat.MsgDelivered, Session: []byte(vr.Session), Payload: []byte(`{"from":"admin","text":"forged"}`)}).Append(nil)
	_ = mallory.SendRaw(frame.Append(nil, relay.FrameEnvelope, push))
	if e := decodeError(t, chatkit.Expect(t, mallory, gate.MsgError)); e.MsgID != relay.FrameEnvelope {
		t.Fatalf("relay frame on the client port: %+v", e)
	}
	// A message mallory sends the victim says it is from mallory.
	_ = mallory.Send(chat.MsgSend, chatkit.MustJSON(t, map[string]string{"to": "victim", "text": "hello", "from": "admin"}))
	chatkit.Expect(t, mallory, chat.MsgSend)
	var m chat.Message
	f := chatkit.Expect(t, victim, chat.MsgDelivered)
	if err := json.Unmarshal(f.Payload, &m); err != nil || m.From != "mallory" || m.Text != "hello" {
		t.Fatalf("victim got %s", f.Payload)
	}
	// The victim was neither kicked nor sent anything else.
	_ = victim.Send(chat.MsgEcho, []byte("ping"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if f, skipped, err := victim.Expect(ctx, chat.MsgEcho); err != nil || len(skipped) != 0 || string(f.Payload) != "ping" {
		t.Fatalf("victim: %v, extra frames %s", err, chatkit.Describe(skipped))
	}
}

// TestHostileSlowConsumer: a client that stops reading while pushes pile
// up is disconnected when its send queue (gate.Config.SendQueue, 1 MiB)
// fills; the gate's heap stays bounded; other clients are not affected.
func TestHostileSlowConsumer(t *testing.T) {
	c := newCluster(t)
	g := c.startGate("gate-1")
	c.startBackend("im-1", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)
	alice, bob, flood := dial(t, g), dial(t, g), dial(t, g)
	chatkit.Login(t, alice, "alice")
	chatkit.Login(t, bob, "bob")
	chatkit.Login(t, flood, "flood")

	// The slow client logs in, then never reads again. Its socket keeps
	// the kernel's default receive buffer: a tiny one (SO_RCVBUF 16 KiB
	// smaller than loopback's 32 KiB segments) leaves the gate's kernel
	// unable to send it anything but zero-window probes, backed off to
	// 6-13s by the end of a long flood, so the closed connection's last
	// bytes and FIN took longer than waitClosed's bound to arrive.
	slow := rawConn(t, g.ListenAddr())
	_, _ = slow.Write(frame.Append(nil, chat.MsgLogin, []byte("slow")))
	var hdr [frame.HeaderLen]byte
	_ = slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(slow)
	if _, err := io.ReadFull(br, hdr[:]); err != nil || binary.BigEndian.Uint32(hdr[:]) != chat.MsgLogin {
		t.Fatalf("slow login: %v %x", err, hdr)
	}
	if _, err := io.CopyN(io.Discard, br, int64(binary.BigEndian.Uint32(hdr[4:]))); err != nil {
		t.Fatal(err)
	}

	ch := startChatter(alice, bob, "alice", "bob")
	ch.progress(t, 3)
	base := memSample()

	// Flood: 2000 messages of 60 KiB (120 MB) to the slow client, one
	// request at a time so the flooder itself keeps reading its replies.
	const msgs, size = 2000, 60 << 10
	text := strings.Repeat("x", size)
	req := chatkit.MustJSON(t, chat.SendRequest{To: "slow", Text: text})

	// The live heap is sampled between two messages, every 20: by the
	// time the flooder has its answer, the gate has queued the push for
	// the slow client (it comes over the same relay link, before the
	// answer), so a sample holds all the gate keeps for it, and no
	// message is half-way. (A collection running beside the flood counts
	// what the flood allocates meanwhile as live, the more the longer it
	// takes on a loaded machine.) Without the send queue limit the gate
	// would keep the whole flood (120 MB) and the samples would grow
	// with it.
	offline := -1
	var peak int64
	start := time.Now()
	for i := 0; i < msgs; i++ {
		if err := flood.Send(chat.MsgSend, req); err != nil {
			t.Fatal(err)
		}
		f := chatkit.Expect(t, flood, chat.MsgSend)
		if offline < 0 && strings.Contains(string(f.Payload), "offline") {
			offline = i
		}
		if i%20 == 19 {
			peak = max(peak, int64(memSample().HeapAlloc))
		}
	}
	elapsed := time.Since(start)

	_, read := waitClosed(t, slow, 10*time.Second)
	grew := peak - int64(base.HeapAlloc)
	t.Logf("flood of %d x %d B in %v: slow client offline from message %d on, it could read %d KiB before the close; live heap peak %+d KiB over %d KiB",
		msgs, size, elapsed.Round(time.Millisecond), offline, read>>10, grew>>10, base.HeapAlloc>>10)
	if grew > 48<<20 {
		t.Fatalf("live heap grew by %d MiB during a %d MiB flood", grew>>20, msgs*size>>20)
	}
	ch.progress(t, 3)
	ch.stop(t)
	testkit.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if got := g.LoggedIn(); got != 3 {
			return fmt.Errorf("gate has %d logged-in sessions, want 3 (alice, bob, flood)", got)
		}
		return nil
	})
}

// relayProbe speaks the relay handshake by hand (relay/doc.go).
type relayProbe struct {
	t  *testing.T
	nc net.Conn
}

func dialRelay(t *testing.T, addr string) *relayProbe {
	return &relayProbe{t: t, nc: rawConn(t, addr)}
}

func (p *relayProbe) read() (uint32, []byte, error) {
	_ = p.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [frame.HeaderLen]byte
	if _, err := io.ReadFull(p.nc, hdr[:]); err != nil {
		return 0, nil, err
	}
	b := make([]byte, binary.BigEndian.Uint32(hdr[4:]))
	_, err := io.ReadFull(p.nc, b)
	return binary.BigEndian.Uint32(hdr[:]), b, err
}

// challenge reads the listener's nonce.
func (p *relayProbe) challenge() []byte {
	p.t.Helper()
	id, b, err := p.read()
	if err != nil || id != relay.FrameChallenge || len(b) != 33 {
		p.t.Fatalf("challenge: %d %x %v", id, b, err)
	}
	return b[1:]
}

// auth builds an Auth payload for nonceS, keyed by secret.
func relayAuth(secret, nonceS []byte, nodeID string) []byte {
	nonceC := make([]byte, 32)
	_, _ = rand.Read(nonceC)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("zc-relay-client"))
	m.Write(nonceS)
	m.Write(nonceC)
	m.Write([]byte(nodeID))
	p := append([]byte{relay.Version}, nonceC...)
	p = append(p, byte(len(nodeID)))
	p = append(p, nodeID...)
	return append(p, m.Sum(nil)...)
}

func (p *relayProbe) send(msgID uint32, payload []byte) {
	_ = p.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = p.nc.Write(frame.Append(nil, msgID, payload))
}

func envelope(t *testing.T, e relay.Envelope) []byte {
	t.Helper()
	b, err := e.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHostileRelayPort: unauthenticated, wrong-secret, replayed-handshake
// and stalled connections to a running gate's and backend's relay port are
// closed within a few seconds, and nothing they sent reaches a client or a
// handler. A connection with the right secret shows the same envelopes
// would have been delivered.
func TestHostileRelayPort(t *testing.T) {
	c := newCluster(t)
	g := c.startGate("gate-1")
	var calls atomic.Int64
	b := c.startBackend("im-1", chat.GroupIM, setupWhoAmI(&calls))
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)
	victim := dial(t, g)
	vr := chatkit.Login(t, victim, "victim")
	alice, bob := dial(t, g), dial(t, g)
	chatkit.Login(t, alice, "alice")
	chatkit.Login(t, bob, "bob")
	ch := startChatter(alice, bob, "alice", "bob")

	// What an attacker would like a relay port to act on.
	forgedPush := envelope(t, relay.Envelope{Kind: relay.KindPush, MsgID: chat.MsgDelivered, Session: []byte(vr.Session), Payload: []byte(`{"from":"admin","text":"forged"}`)})
	forgedKick := envelope(t, relay.Envelope{Kind: relay.KindKick, Session: []byte(vr.Session), Payload: []byte("forged")})
	forgedBcast := envelope(t, relay.Envelope{Kind: relay.KindBroadcast, MsgID: chat.MsgBroadcasted, Payload: []byte(`{"from":"admin","text":"forged"}`)})
	forgedFwd := envelope(t, relay.Envelope{Kind: relay.KindForward, MsgID: msgWhoAmI, Seq: 1, Session: []byte(vr.Session), User: []byte("victim"), Payload: []byte("forged")})
	attack := func(p *relayProbe) {
		for _, e := range [][]byte{forgedPush, forgedKick, forgedBcast, forgedFwd} {
			p.send(relay.FrameEnvelope, e)
		}
	}
	failures := func() uint64 { return g.RelayStats().HandshakeFailures + b.RelayStats().HandshakeFailures }
	before := failures()

	targets := []struct{ name, addr string }{{"gate", g.RelayAddr()}, {"backend", b.RelayAddr()}}
	attempts := 0
	for _, tg := range targets {
		t.Run(tg.name+"/no-handshake", func(t *testing.T) {
			p := dialRelay(t, tg.addr)
			p.challenge()
			attack(p)
			d, _ := waitClosed(t, p.nc, 5*time.Second)
			t.Logf("envelopes before auth: closed after %v", d.Round(time.Millisecond))
		})
		t.Run(tg.name+"/wrong-secret", func(t *testing.T) {
			p := dialRelay(t, tg.addr)
			p.send(relay.FrameAuth, relayAuth([]byte("not-the-secret"), p.challenge(), "gate-1"))
			attack(p)
			d, n := waitClosed(t, p.nc, 5*time.Second)
			t.Logf("wrong secret: closed after %v, %d bytes answered (no accept)", d.Round(time.Millisecond), n)
			if n != 0 {
				t.Fatalf("the relay answered a wrong secret with %d bytes", n)
			}
		})
		t.Run(tg.name+"/replayed-handshake", func(t *testing.T) {
			// An Auth captured from one connection (made with the real
			// secret) is replayed on another, which has a fresh challenge.
			first := dialRelay(t, tg.addr)
			captured := relayAuth(c.secret, first.challenge(), "gate-1")
			_ = first.nc.Close()
			p := dialRelay(t, tg.addr)
			p.challenge()
			p.send(relay.FrameAuth, captured)
			attack(p)
			d, n := waitClosed(t, p.nc, 5*time.Second)
			t.Logf("replayed auth: closed after %v, %d bytes answered", d.Round(time.Millisecond), n)
			if n != 0 {
				t.Fatalf("the relay accepted a replayed auth (%d bytes)", n)
			}
		})
		t.Run(tg.name+"/stalled", func(t *testing.T) {
			start := time.Now()
			silent := dialRelay(t, tg.addr)
			half := dialRelay(t, tg.addr)
			half.challenge()
			_, _ = half.nc.Write([]byte{0, 0, 0, 2, 0, 0}) // half a header, then nothing
			waitClosed(t, silent.nc, 3*relay.DefaultHandshakeTimeout)
			t.Logf("silent connection: closed after %v", time.Since(start).Round(time.Millisecond))
			waitClosed(t, half.nc, 3*relay.DefaultHandshakeTimeout)
			t.Logf("stalled mid-frame: closed after %v", time.Since(start).Round(time.Millisecond))
		})
		attempts += 5
	}
	ch.progress(t, 3)

	// Nothing reached the victim, the backend handlers or anyone else.
	_ = victim.Send(chat.MsgEcho, []byte("ping"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if f, skipped, err := victim.Expect(ctx, chat.MsgEcho); err != nil || len(skipped) != 0 || string(f.Payload) != "ping" {
		t.Fatalf("victim: %v, frames it should not have got: %s", err, chatkit.Describe(skipped))
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("backend handled %d forged messages", n)
	}
	if got := failures() - before; got < uint64(attempts) {
		t.Fatalf("relays counted %d refused handshakes, want at least %d", got, attempts)
	}

	// Control: the same push over a properly authenticated connection is
	// delivered, so the silence above is the relay refusing, not a test
	// that could not have seen anything.
	p := dialRelay(t, g.RelayAddr())
	p.send(relay.FrameAuth, relayAuth(c.secret, p.challenge(), "probe"))
	if id, _, err := p.read(); err != nil || id != relay.FrameAccept {
		t.Fatalf("right secret: %d %v", id, err)
	}
	p.send(relay.FrameEnvelope, forgedPush)
	if f := chatkit.Expect(t, victim, chat.MsgDelivered); !strings.Contains(string(f.Payload), "forged") {
		t.Fatalf("control push: %s", f.Payload)
	}
	ch.stop(t)
}

// TestRelayNeedsSecret: no node starts its relay without a secret unless
// it is explicitly run insecure.
func TestRelayNeedsSecret(t *testing.T) {
	c := newCluster(t)
	cli, rdb := c.clients()
	if _, err := gate.New(gate.Config{Node: zccluster.Node{ID: "g", Etcd: cli, Redis: rdb}}); !errors.Is(err, gate.ErrConfig) {
		t.Fatalf("gate without a secret: %v", err)
	}
	if _, err := backend.New(backend.Config{Node: zccluster.Node{ID: "b", Etcd: cli, Redis: rdb}, Group: "im"}); !errors.Is(err, backend.ErrConfig) {
		t.Fatalf("backend without a secret: %v", err)
	}
	if _, err := relay.New(relay.Config{NodeID: "n", Resolve: func(context.Context, string) (string, bool) { return "", false }}, nil); !errors.Is(err, relay.ErrNoSecret) {
		t.Fatalf("relay without a secret: %v", err)
	}

	bin := zclusterBinary(t)
	args := []string{"gate", "--id", "gate-nosecret", "--listen", "127.0.0.1:0", "--relay", "127.0.0.1:0",
		"--etcd", strings.Join(c.etcd.Endpoints(), ","), "--redis", c.redisAddr}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(cmd.Environ(), "ZC_SECRET=")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--secret") {
		t.Fatalf("zcluster gate without a secret: err %v, output:\n%s", err, out)
	}

	// --insecure is the explicit way out, for development.
	g := c.startGate("gate-1")
	startProc(t, "gate", "--id", "gate-insecure", "--insecure", "--listen", "127.0.0.1:0", "--relay", "127.0.0.1:0",
		"--etcd", strings.Join(c.etcd.Endpoints(), ","), "--redis", c.redisAddr, "--log-level", "warn")
	testkit.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if _, ok := g.Topology().Node("gate-insecure"); !ok {
			return errors.New("the insecure gate has not registered")
		}
		return nil
	})
}
