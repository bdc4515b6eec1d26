package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/internal/runtime/frame"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
	"github.com/zcluster/zcluster/internal/testonly/testkit/chatkit"
	"github.com/zcluster/zcluster/internal/tools/zclient"
	"github.com/zcluster/zcluster/relay"
)

// The gate's front door (issue 9): per-connection backpressure and the
// client port limits. Each test keeps an honest client busy meanwhile and
// checks it never notices.

// readFrames reads stock zinx TLV frames from r until it fails, calling fn
// for each.
func readFrames(r io.Reader, fn func(msgID uint32, payload []byte)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var h [frame.HeaderLen]byte
	for {
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return err
		}
		p := make([]byte, binary.BigEndian.Uint32(h[4:8]))
		if _, err := io.ReadFull(br, p); err != nil {
			return err
		}
		fn(binary.BigEndian.Uint32(h[0:4]), p)
	}
}

// victim sends one echo at a time until stop and records the slowest answer
// and anything that went wrong.
type victim struct {
	sent    atomic.Int64
	slowest atomic.Int64 // nanoseconds
	cancel  context.CancelFunc
	done    chan struct{}
	err     error
}

func startVictim(conn *zclient.Conn) *victim {
	ctx, cancel := context.WithCancel(context.Background())
	v := &victim{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(v.done)
		for n := 0; ctx.Err() == nil; n++ {
			want := fmt.Sprintf("victim-%d", n)
			start := time.Now()
			if err := conn.Send(chat.MsgEcho, []byte(want)); err != nil {
				v.err = err
				return
			}
			wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
			f, skipped, err := conn.Expect(wctx, chat.MsgEcho)
			wcancel()
			if err == nil && string(f.Payload) != want {
				err = fmt.Errorf("echo %q, want %q", f.Payload, want)
			}
			if err != nil {
				v.err = fmt.Errorf("echo %d: %w (skipped %s)", n, err, chatkit.Describe(skipped))
				return
			}
			if d := int64(time.Since(start)); d > v.slowest.Load() {
				v.slowest.Store(d)
			}
			v.sent.Add(1)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return v
}

// stop ends the victim and fails the test if it was hurt: an error, a lost
// answer, or one answer slower than bound (generous: "stuck", not "slow").
func (v *victim) stop(t *testing.T, bound time.Duration) {
	t.Helper()
	v.cancel()
	<-v.done
	if v.err != nil {
		t.Fatalf("the other client was affected: %v", v.err)
	}
	if s := time.Duration(v.slowest.Load()); s > bound {
		t.Fatalf("the other client waited %v for an echo (bound %v)", s, bound)
	}
	t.Logf("other client: %d echoes, slowest %v", v.sent.Load(), time.Duration(v.slowest.Load()))
}

// TestPipelinedRequestsAllAnswered: one client that writes 10,000 echo
// requests of 4 KiB (40 MiB) without waiting for answers (a stock zinx
// client, raw TLV frames) gets 10,000 answers, no error frame; the gate
// pushes back on it through TCP (--max-inflight) instead of overrunning its
// links or its send queue; another client on the same gate is served
// throughout. The second run reads its answers slowly (about 5 MiB/s):
// the gate then also waits for its send queue to drain before reading on.
func TestPipelinedRequestsAllAnswered(t *testing.T) {
	c := newCluster(t)
	// The pipelining connections stay anonymous, however slow the machine.
	g := c.startGateWith("gate-1", func(cfg *gate.Config) { cfg.LoginTimeout = -1 })
	c.startBackend("im-1", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 1, 10*time.Second)

	other := dial(t, g)
	chatkit.Login(t, other, "victim")
	v := startVictim(other)
	t.Run("fast reader", func(t *testing.T) { pipeline(t, g.ListenAddr(), 10000, 4096, 0) })
	t.Run("slow reader", func(t *testing.T) { pipeline(t, g.ListenAddr(), 2000, 4096, 50*time.Millisecond) })
	v.stop(t, 3*time.Second)
}

// pipeline writes n echo requests of size bytes in one write on a fresh
// connection and checks that exactly n answers come back; with pause > 0
// the reader sleeps that long after every 64 answers.
func pipeline(t *testing.T, addr string, n, size int, pause time.Duration) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var echoes, errs atomic.Int64
	seen := make([]bool, n)
	var dup atomic.Int64
	readDone := make(chan error, 1)
	go func() {
		readDone <- readFrames(nc, func(msgID uint32, p []byte) {
			switch {
			case msgID == chat.MsgEcho && len(p) == size:
				i := binary.BigEndian.Uint64(p)
				if i < uint64(n) && seen[i] {
					dup.Add(1)
				} else if i < uint64(n) {
					seen[i] = true
				}
				got := echoes.Add(1)
				if got == int64(n) {
					_ = nc.SetReadDeadline(time.Now()) // all in: stop reading
				}
				if pause > 0 && got%64 == 0 {
					time.Sleep(pause)
				}
			case msgID == chat.MsgError:
				if errs.Add(1) <= 3 {
					t.Logf("error frame: %s", p)
				}
			}
		})
	}()
	writeDone := make(chan error, 1)
	go func() {
		buf := make([]byte, 0, n*(frame.HeaderLen+size))
		p := make([]byte, size)
		for i := range n {
			binary.BigEndian.PutUint64(p, uint64(i))
			buf = frame.Append(buf, chat.MsgEcho, p)
		}
		_ = nc.SetWriteDeadline(time.Now().Add(90 * time.Second))
		_, err := nc.Write(buf) // one write: the gate sees them all at once
		writeDone <- err
	}()
	if err := <-writeDone; err != nil {
		t.Fatalf("writing %d requests: %v (answers so far %d, error frames %d)", n, err, echoes.Load(), errs.Load())
	}
	select {
	case <-readDone:
	case <-time.After(90 * time.Second):
		_ = nc.Close()
		<-readDone
	}
	if echoes.Load() != int64(n) || errs.Load() != 0 || dup.Load() != 0 {
		t.Fatalf("%d requests: %d echoes (%d duplicates), %d error frames", n, echoes.Load(), dup.Load(), errs.Load())
	}
}

// msgHold is answered by a backend only once the test lets it go.
const msgHold uint32 = 610

// setupHold runs the chat app plus msgHold, whose handler waits for
// release (or the backend's stop) before it answers.
func setupHold(release <-chan struct{}) func(*backend.Backend) {
	return func(b *backend.Backend) {
		_ = chat.SetupBackend(b)
		b.Handle(msgHold, "hold", func(c *backend.Context) error {
			select {
			case <-release:
			case <-c.Context().Done():
			}
			return c.Reply(msgHold, c.Payload())
		}, backend.Anonymous())
	}
}

// TestInflightLimitBlocksOnlyItsConnection: a client with --max-inflight
// requests unanswered is not read any further (its next requests wait
// in TCP, none is forwarded), while another client is served; a kick of
// the blocked connection closes it at once, and so does Shutdown, without
// waiting for the answers (no reader left blocked).
func TestInflightLimitBlocksOnlyItsConnection(t *testing.T) {
	const limit = 4
	c := newCluster(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs before the cluster stops
	g := c.startGateWith("gate-1", func(cfg *gate.Config) {
		cfg.MaxInflight = limit
		cfg.RequestTimeout = time.Minute // only the limit may unblock it
	})
	c.startBackend("im-1", chat.GroupIM, setupHold(release))
	c.waitGroupSize(chat.GroupIM, 1, 10*time.Second)

	greedy := dial(t, g)
	chatkit.Login(t, greedy, "greedy")
	for i := range 3 * limit {
		if err := greedy.Send(msgHold, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if p := g.Pending(); p != limit {
			return fmt.Errorf("%d requests forwarded, want %d", p, limit)
		}
		return nil
	})
	other := dial(t, g)
	chatkit.Login(t, other, "other")
	v := startVictim(other)
	// The other client is served while greedy stays blocked: let it get
	// several echoes through, then stop it. Pending counts the victim's
	// own echo while one is in flight, so the limit is checked once the
	// victim has stopped (it waits for each answer, so none is left): any
	// of greedy's held requests forwarded meanwhile would still be
	// pending then, as nothing answers them.
	testkit.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := v.sent.Load(); n < 10 {
			return fmt.Errorf("the other client got %d echoes, want 10", n)
		}
		return nil
	})
	v.stop(t, 3*time.Second)
	if p := g.Pending(); p != limit {
		t.Fatalf("%d requests forwarded, past the limit of %d", p, limit)
	}

	// A kick (the same user logs in elsewhere) closes the blocked
	// connection now, not when its answers come.
	takeover := dial(t, g)
	chatkit.Login(t, takeover, "greedy")
	select {
	case <-greedy.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the blocked connection was not closed by the kick")
	}
	testkit.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := g.Sessions(); n != 2 {
			return fmt.Errorf("gate holds %d sessions, want 2 (the kicked one gone)", n)
		}
		return nil
	})

	// Shutdown with a blocked reader returns promptly.
	for i := range 2 * limit {
		if err := takeover.Send(msgHold, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if p := g.Pending(); p != 2*limit {
			return fmt.Errorf("%d requests forwarded, want %d (the kicked one's and the new one's)", p, 2*limit)
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
		t.Fatalf("shutdown with a blocked reader took %v", d)
	}
}

// expectKick waits for msgID 9 with reason, then for the connection to
// close.
func expectKick(t *testing.T, conn *zclient.Conn, reason string, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	f, skipped, err := conn.Expect(ctx, chat.MsgKick)
	if err != nil {
		t.Fatalf("no kick %q within %v: %v (skipped %s)", reason, within, err, chatkit.Describe(skipped))
	}
	if want := `{"reason":"` + reason + `"}`; string(f.Payload) != want {
		t.Fatalf("kick %s, want %s", f.Payload, want)
	}
	select {
	case <-conn.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("connection still open 5s after the kick %q", reason)
	}
}

// echoOK fails the test unless conn's echo is answered.
func echoOK(t *testing.T, conn *zclient.Conn, text string) {
	t.Helper()
	if err := conn.Send(chat.MsgEcho, []byte(text)); err != nil {
		t.Fatal(err)
	}
	if f := chatkit.Expect(t, conn, chat.MsgEcho); string(f.Payload) != text {
		t.Fatalf("echo %q, want %q", f.Payload, text)
	}
}

// stillOpen fails the test if conn was closed.
func stillOpen(t *testing.T, conn *zclient.Conn, what string) {
	t.Helper()
	select {
	case <-conn.Done():
		t.Fatalf("%s: connection closed", what)
	default:
	}
}

// TestLoginTimeout: a connection that has not logged in within
// --login-timeout gets msgID 9 "login timeout" and is closed; anonymous
// routes work until then; a logged-in connection stays.
func TestLoginTimeout(t *testing.T) {
	const timeout = 700 * time.Millisecond
	c := newCluster(t)
	g := c.startGateWith("gate-1", func(cfg *gate.Config) { cfg.LoginTimeout = timeout })
	c.startBackend("im-1", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 1, 10*time.Second)

	anon := dial(t, g)
	user := dial(t, g)
	start := time.Now()
	chatkit.Login(t, user, "alice")
	echoOK(t, anon, "before the timeout") // anonymous route
	expectKick(t, anon, "login timeout", 10*time.Second)
	if d := time.Since(start); d < timeout/2 {
		t.Fatalf("kicked after %v, before the %v timeout", d, timeout)
	}
	time.Sleep(timeout)
	stillOpen(t, user, "logged-in client")
	echoOK(t, user, "after the timeout")

	// Disabled: nothing happens.
	g2 := c.startGateWith("gate-2", func(cfg *gate.Config) { cfg.LoginTimeout = -1 })
	quiet := dial(t, g2)
	time.Sleep(2 * timeout)
	stillOpen(t, quiet, "login timeout disabled")
	echoOK(t, quiet, "still here")
}

// TestIdleTimeout: a connection that sends no byte for --idle-timeout is
// closed with reason "idle", also one stalled in the middle of a frame;
// heartbeats (answered by the gate itself, before login) and any other
// frame keep a connection open.
func TestIdleTimeout(t *testing.T) {
	const idle = 700 * time.Millisecond
	c := newCluster(t)
	g := c.startGateWith("gate-1", func(cfg *gate.Config) {
		cfg.IdleTimeout = idle
		cfg.LoginTimeout = -1
	})
	c.startBackend("im-1", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 1, 10*time.Second)

	silent := dial(t, g)
	beating := dial(t, g)
	talking := dial(t, g)
	chatkit.Login(t, talking, "alice")
	stalled := rawConn(t, g.ListenAddr())
	// Half a frame: the header of a 100-byte frame and 10 bytes of it.
	if _, err := stalled.Write(frame.Append(nil, chat.MsgEcho, make([]byte, 100))[:frame.HeaderLen+10]); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return nil
				case <-time.After(idle / 4):
				}
				p := []byte(fmt.Sprintf("beat-%d", i))
				if err := beating.Send(gate.MsgHeartbeat, p); err != nil {
					return err
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				f, skipped, err := beating.Expect(ctx, gate.MsgHeartbeat)
				cancel()
				if err != nil {
					return fmt.Errorf("heartbeat %d: %w (skipped %s)", i, err, chatkit.Describe(skipped))
				}
				if string(f.Payload) != string(p) {
					return fmt.Errorf("heartbeat answer %q, want %q", f.Payload, p)
				}
				if i%2 == 0 {
					if err := talking.Send(chat.MsgEcho, p); err != nil {
						return err
					}
				}
			}
		}()
	}()
	start := time.Now()
	expectKick(t, silent, "idle", 10*time.Second)
	if d := time.Since(start); d < idle/2 {
		t.Fatalf("silent client closed after %v, before the %v idle timeout", d, idle)
	}
	if d, _ := waitClosed(t, stalled, 10*time.Second); d > 10*time.Second {
		t.Fatalf("stalled client closed after %v", d)
	}
	time.Sleep(2 * idle)
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	stillOpen(t, beating, "heartbeating client")
	stillOpen(t, talking, "talking client")
	echoOK(t, beating, "alive")
}

// TestMaxConns: past --max-conns a new connection gets msgID 9 "gate full"
// and is closed; the others are untouched; the gate reports itself full
// (/readyz) until one leaves.
func TestMaxConns(t *testing.T) {
	const limit = 3
	c := newCluster(t)
	g := c.startGateWith("gate-1", func(cfg *gate.Config) {
		cfg.MaxConns = limit
		cfg.LoginTimeout = -1
	})
	c.startBackend("im-1", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 1, 10*time.Second)

	var conns []*zclient.Conn
	for range limit {
		conns = append(conns, dial(t, g))
	}
	chatkit.Login(t, conns[0], "alice")
	testkit.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !g.Full() {
			return fmt.Errorf("gate not full with %d connections", g.Sessions())
		}
		return nil
	})
	extra := dial(t, g)
	expectKick(t, extra, "gate full", 5*time.Second)
	for i, conn := range conns {
		echoOK(t, conn, fmt.Sprintf("still served %d", i))
	}
	_ = conns[2].Close()
	testkit.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if g.Full() {
			return fmt.Errorf("gate still full with %d connections", g.Sessions())
		}
		return nil
	})
	echoOK(t, dial(t, g), "room again")
}

// TestClientRate: over --client-rate a frame gets the error frame "rate
// limited" and the connection stays; another client is not limited by it.
func TestClientRate(t *testing.T) {
	const perSecond, burst = 10, 5
	c := newCluster(t)
	g := c.startGateWith("gate-1", func(cfg *gate.Config) {
		cfg.ClientRate = perSecond
		cfg.ClientBurst = burst
	})
	c.startBackend("im-1", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 1, 10*time.Second)

	fast := dial(t, g)
	other := dial(t, g)
	const n = 40
	for i := range n {
		if err := fast.Send(chat.MsgEcho, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
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
			e := decodeError(t, f)
			if e.Error != "rate limited" || e.MsgID != chat.MsgEcho {
				t.Fatalf("error frame %s, want rate limited for msgID %d", f.Payload, chat.MsgEcho)
			}
			limited++
		}
	}
	// 40 frames in well under a second: the burst of 5 and about one more
	// per 100ms pass.
	if echoes < burst || echoes > n/2 || limited < n/2 {
		t.Fatalf("%d echoes, %d rate limited; want about %d echoes", echoes, limited, burst)
	}
	echoOK(t, other, "not limited by the other") // its own bucket
	time.Sleep(time.Second)                      // the bucket refills
	stillOpen(t, fast, "rate-limited client")
	echoOK(t, fast, "served again")
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// msgRawLogin is a gate handler that logs in with the payload as it is,
// without the checks the chat app makes: only the framework guards it.
const msgRawLogin uint32 = 620

// TestBadClientInputBlamesNoNode: a user name of 300 bytes is refused at
// Login (before it could make every forward fail), and a frame between the
// relay's old 1 MiB limit and the gate's --max-frame is forwarded and
// answered; neither makes the gate avoid a healthy node: every other
// user keeps being served by the same node.
func TestBadClientInputBlamesNoNode(t *testing.T) {
	c := newCluster(t)
	var calls atomic.Int64
	g := c.startGateWith("gate-1", func(cfg *gate.Config) {
		cfg.MaxFrame = 2 << 20
		cfg.SendQueue = 8 << 20
		cfg.RequestTimeout = 30 * time.Second // 1.5 MiB echoes on a loaded machine
		cfg.LoginTimeout = -1                 // the 1.5 MiB client stays anonymous
	}, func(g *gate.Gate) {
		g.Handle(msgRawLogin, "raw-login", func(ctx *gate.Context) error {
			if err := ctx.Login(string(ctx.Payload())); err != nil {
				return err
			}
			return ctx.Reply(msgRawLogin, []byte("ok"))
		}, gate.Anonymous())
	})
	c.startBackend("im-1", chat.GroupIM, setupWhoAmI(&calls))
	c.startBackend("im-2", chat.GroupIM, setupWhoAmI(&calls))
	c.waitGroupSize(chat.GroupIM, 2, 10*time.Second)

	// Users spread over both nodes; remember who serves whom.
	type user struct {
		conn *zclient.Conn
		node string
	}
	var users []user
	for i := range 8 {
		conn := dial(t, g)
		chatkit.Login(t, conn, fmt.Sprintf("user-%d", i))
		users = append(users, user{conn, askWhoAmI(t, conn, msgWhoAmI, nil).Node})
	}
	checkNodes := func(when string) {
		t.Helper()
		for i, u := range users {
			if got := askWhoAmI(t, u.conn, msgWhoAmI, []byte(when)).Node; got != u.node {
				t.Fatalf("%s: user-%d moved from %s to %s (a node was avoided)", when, i, u.node, got)
			}
		}
	}

	// A 300-byte name: refused at login, nothing forwarded under it.
	long := dial(t, g)
	if err := long.Send(msgRawLogin, []byte(strings.Repeat("x", 300))); err != nil {
		t.Fatal(err)
	}
	f := chatkit.Expect(t, long, chat.MsgError)
	if e := decodeError(t, f); e.MsgID != msgRawLogin || !strings.Contains(e.Error, "1-64 bytes") {
		t.Fatalf("300-byte login: error frame %s, want a refusal naming the 1-64 bytes rule", f.Payload)
	}
	for range 4 {
		if err := long.Send(msgWhoAmI, nil); err != nil {
			t.Fatal(err)
		}
		f := chatkit.Expect(t, long, chat.MsgError)
		if e := decodeError(t, f); e.Error != "not logged in" {
			t.Fatalf("after the refused login: %s, want not logged in", f.Payload)
		}
	}
	checkNodes("after the 300-byte name")

	// 1.5 MiB: over the relay's old 1 MiB limit, under --max-frame 2 MiB.
	big := dial(t, g)
	payload := make([]byte, 3<<19)
	for i := range payload {
		payload[i] = byte(i)
	}
	for range 3 {
		if err := big.Send(chat.MsgEcho, payload); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		f, err := big.Recv(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if f.MsgID != chat.MsgEcho || !bytes.Equal(f.Payload, payload) {
			t.Fatalf("1.5 MiB echo: msgID %d, %d bytes %.200q", f.MsgID, len(f.Payload), f.Payload)
		}
	}
	checkNodes("after the 1.5 MiB frames")
}

// TestRedisPrefixSeparatesClusters: two clusters (own etcd each) share one
// Redis with different --redis-prefix values. The same user name logged in
// on both is two users: neither login kicks the other, a message to that
// user reaches only the cluster it was sent in, and each cluster's keys
// carry its own prefix.
func TestRedisPrefixSeparatesClusters(t *testing.T) {
	redisAddr := testkit.Redis(t)
	type side struct {
		c     *cluster
		g     *gate.Gate
		alice *zclient.Conn
		bob   *zclient.Conn
	}
	var sides []side
	for _, prefix := range []string{"zc:", "blue:"} {
		c := newClusterOn(t, redisAddr)
		g := c.startGateWith("gate-1", func(cfg *gate.Config) { cfg.RedisPrefix = prefix })
		c.startBackendWith("im-1", chat.GroupIM, func(cfg *backend.Config) { cfg.RedisPrefix = prefix })
		c.waitGroupSize(chat.GroupIM, 1, 10*time.Second)
		sides = append(sides, side{c: c, g: g})
	}
	for i := range sides {
		sides[i].alice = dial(t, sides[i].g)
		sides[i].bob = dial(t, sides[i].g)
		chatkit.Login(t, sides[i].alice, "alice")
		chatkit.Login(t, sides[i].bob, "bob")
	}
	for i, s := range sides {
		text := fmt.Sprintf("hello from cluster %d", i)
		if r := sendChat(t, s.bob, "alice", text); !r.OK {
			t.Fatalf("cluster %d: send to alice: %+v", i, r)
		}
		f := chatkit.Expect(t, s.alice, chat.MsgDelivered)
		if !strings.Contains(string(f.Payload), text) {
			t.Fatalf("cluster %d: alice got %s, want %q", i, f.Payload, text)
		}
	}
	// Nothing crossed over, nobody was kicked.
	time.Sleep(200 * time.Millisecond)
	for i, s := range sides {
		for _, conn := range []*zclient.Conn{s.alice, s.bob} {
			select {
			case f := <-conn.Frames():
				t.Fatalf("cluster %d: unexpected frame %d %s", i, f.MsgID, f.Payload)
			default:
			}
			stillOpen(t, conn, fmt.Sprintf("cluster %d", i))
		}
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	for _, prefix := range []string{"zc:", "blue:"} {
		for _, kind := range []string{"s:", "u:"} {
			keys, err := rdb.Keys(context.Background(), prefix+kind+"*").Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != 2 { // alice and bob
				t.Fatalf("keys %s%s*: %v, want 2", prefix, kind, keys)
			}
		}
	}
	// Every key of the cluster (sessions, users, rooms, inboxes, online
	// counts) carries its prefix: nothing else is in this Redis.
	all, err := rdb.Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range all {
		if !strings.HasPrefix(k, "zc:") && !strings.HasPrefix(k, "blue:") {
			t.Fatalf("key %q carries neither cluster's prefix", k)
		}
	}
	blue, err := rdb.Keys(context.Background(), "blue:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	zc, err := rdb.Keys(context.Background(), "zc:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(blue) != len(zc) {
		t.Fatalf("the two clusters wrote different key sets: zc: %v, blue: %v", zc, blue)
	}
}

// TestReplyForAnotherNodesRequestRefused: a node that holds the secret
// (here a hand-made relay connection named "intruder") cannot answer
// requests the gate forwarded to another node: its Reply and Done for
// them are dropped, and the real answer still arrives. (It cannot claim to
// be that node either once relay TLS is on: see relay TestTLSNodeIdentity
// and TestTLSRelayNodeIdentity.)
func TestReplyForAnotherNodesRequestRefused(t *testing.T) {
	c := newCluster(t)
	release := make(chan struct{})
	g := c.startGate("gate-1")
	c.startBackend("im-1", chat.GroupIM, setupHold(release))
	c.waitGroupSize(chat.GroupIM, 1, 10*time.Second)
	victim := dial(t, g)
	vr := chatkit.Login(t, victim, "victim")
	if err := victim.Send(msgHold, []byte("real")); err != nil {
		t.Fatal(err)
	}
	testkit.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if g.Pending() != 1 {
			return fmt.Errorf("%d pending, want the held request", g.Pending())
		}
		return nil
	})

	p := dialRelay(t, g.RelayAddr())
	p.send(relay.FrameAuth, relayAuth(c.secret, p.challenge(), "intruder"))
	if id, _, err := p.read(); err != nil || id != relay.FrameAccept {
		t.Fatalf("intruder with the secret: %d %v", id, err)
	}
	// The request's sequence number is small (the gate counts from 1);
	// answer every candidate, as a final reply, a plain reply and a Done.
	for seq := uint64(1); seq <= 64; seq++ {
		p.send(relay.FrameEnvelope, envelope(t, relay.Envelope{Kind: relay.KindReply, MsgID: msgHold, Seq: seq, Session: []byte(vr.Session), Payload: []byte("forged")}))
		p.send(relay.FrameEnvelope, envelope(t, relay.Envelope{Kind: relay.KindReply, Flags: relay.FlagDone, MsgID: msgHold, Seq: seq, Session: []byte(vr.Session), Payload: []byte("forged")}))
		p.send(relay.FrameEnvelope, envelope(t, relay.Envelope{Kind: relay.KindDone, Flags: relay.FlagError, MsgID: msgHold, Seq: seq, Session: []byte(vr.Session), Payload: []byte("forged error")}))
	}
	testkit.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := g.RefusedReplies(); n < 128 {
			return fmt.Errorf("%d forged replies refused so far", n)
		}
		return nil
	})
	if g.Pending() != 1 {
		t.Fatalf("%d pending after the forgeries, want the real request still open", g.Pending())
	}
	close(release)
	f := chatkit.Expect(t, victim, msgHold)
	if string(f.Payload) != "real" {
		t.Fatalf("the victim got %q first, want the real answer", f.Payload)
	}
	select {
	case f := <-victim.Frames():
		t.Fatalf("the victim got a forged frame %d %q", f.MsgID, f.Payload)
	case <-time.After(200 * time.Millisecond):
	}
}
