package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zcluster/zcluster/internal/runtime/frame"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
)

const testTimeout = 10 * time.Second

// directory is a test topology: node id -> relay address.
type directory struct{ m sync.Map }

func (d *directory) set(id, addr string) { d.m.Store(id, addr) }

func (d *directory) resolve(_ context.Context, id string) (string, bool) {
	v, ok := d.m.Load(id)
	if !ok {
		return "", false
	}
	return v.(string), true
}

func testLogger() *slog.Logger {
	if os.Getenv("RELAY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// sink counts and keeps copies of what a relay's handler receives.
type sink struct {
	mu   sync.Mutex
	envs []Envelope
	n    atomic.Int64
}

func (s *sink) handle(env *Envelope) {
	c := Envelope{Kind: env.Kind, Flags: env.Flags, MsgID: env.MsgID, Seq: env.Seq,
		Session: bytes.Clone(env.Session), User: bytes.Clone(env.User),
		Source: bytes.Clone(env.Source), Payload: bytes.Clone(env.Payload)}
	s.mu.Lock()
	s.envs = append(s.envs, c)
	s.mu.Unlock()
	s.n.Add(1)
}

func (s *sink) snapshot() []Envelope {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.envs)
}

func (s *sink) waitFor(t *testing.T, n int64) {
	t.Helper()
	testkit.CheckFor(t, testTimeout, 5*time.Millisecond, func() error {
		if got := s.n.Load(); got < n {
			return fmt.Errorf("received %d of %d", got, n)
		}
		return nil
	})
}

func testConfig(id string, secret string, dir *directory) Config {
	return Config{
		NodeID:           id,
		Listen:           "127.0.0.1:0",
		Secret:           []byte(secret),
		Resolve:          dir.resolve,
		HandshakeTimeout: 500 * time.Millisecond,
		DialTimeout:      time.Second,
		Logger:           testLogger(),
	}
}

// startRelay starts a relay registered in dir, closed at the end of the test.
func startRelay(t *testing.T, cfg Config, dir *directory, h Handler) *Relay {
	t.Helper()
	r, err := New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	dir.set(cfg.NodeID, r.Addr())
	t.Cleanup(r.Close)
	return r
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func TestNewValidates(t *testing.T) {
	res := func(context.Context, string) (string, bool) { return "", false }
	cases := []struct {
		name string
		cfg  Config
		want error
	}{
		{"no secret", Config{NodeID: "a", Resolve: res}, ErrNoSecret},
		{"no node id", Config{Secret: []byte("s"), Resolve: res}, ErrNoNodeID},
		{"no resolve", Config{NodeID: "a", Secret: []byte("s")}, ErrNoResolver},
	}
	for _, c := range cases {
		if _, err := New(c.cfg, nil); !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
	r, err := New(Config{NodeID: "a", Insecure: true, Resolve: res}, nil)
	if err != nil {
		t.Fatalf("insecure without secret: %v", err)
	}
	if err := r.Send(context.Background(), "b", &Envelope{Kind: KindPush}); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Send before Start: %v", err)
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start: %v", err)
	}
	r.Close()
	r.Close()
	if err := r.Start(); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v", err)
	}
}

func TestInsecure(t *testing.T) {
	dir := &directory{}
	var s sink
	cfg := testConfig("B", "", dir)
	cfg.Insecure = true
	startRelay(t, cfg, dir, s.handle)
	cfg.NodeID = "A"
	a := startRelay(t, cfg, dir, nil)
	startRelay(t, testConfig("S", "secret", dir), dir, nil)
	ctx := ctxT(t)
	if err := a.Send(ctx, "B", &Envelope{Kind: KindPush}); err != nil {
		t.Fatalf("insecure to insecure: %v", err)
	}
	s.waitFor(t, 1)
	if err := a.Send(ctx, "S", &Envelope{Kind: KindPush}); !errors.Is(err, ErrHandshake) {
		t.Fatalf("insecure to secured: %v", err)
	}
}

func TestDeliversInOrder(t *testing.T) {
	const n = 10000
	dir := &directory{}
	var got atomic.Int64
	var bad atomic.Value
	b := startRelay(t, testConfig("B", "s3cret", dir), dir, func(env *Envelope) {
		i := got.Load()
		want := fmt.Sprintf("sess-%d", i%7)
		if env.Seq != uint64(i) || env.Kind != KindForward || env.MsgID != uint32(i)+1 || env.Flags != FlagDone ||
			string(env.Session) != want || string(env.User) != "alice" || string(env.Source) != "A" ||
			len(env.Payload) != int(i%100) {
			bad.CompareAndSwap(nil, fmt.Sprintf("envelope %d: %+v", i, *env))
		}
		got.Add(1)
	})
	a := startRelay(t, testConfig("A", "s3cret", dir), dir, nil)
	ctx := ctxT(t)
	payload := bytes.Repeat([]byte{0xAB}, 100)
	for i := 0; i < n; i++ {
		env := Envelope{Kind: KindForward, Flags: FlagDone, MsgID: uint32(i) + 1, Seq: uint64(i),
			Session: []byte(fmt.Sprintf("sess-%d", i%7)), User: []byte("alice"), Payload: payload[:i%100]}
		if err := a.Send(ctx, "B", &env); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	testkit.CheckFor(t, testTimeout, 5*time.Millisecond, func() error {
		if g := got.Load(); g < n {
			return fmt.Errorf("received %d of %d", g, n)
		}
		return nil
	})
	if v := bad.Load(); v != nil {
		t.Fatal(v)
	}
	sa, sb := a.Stats(), b.Stats()
	if sa.EnvelopesSent != n || sb.EnvelopesReceived != n || sa.LinksUp != 1 || sa.BytesSent == 0 {
		t.Fatalf("stats: A %+v, B %+v", sa, sb)
	}
}

func TestConcurrentFirstSendsShareOneLink(t *testing.T) {
	dir := &directory{}
	var s sink
	startRelay(t, testConfig("B", "k", dir), dir, s.handle)
	a := startRelay(t, testConfig("A", "k", dir), dir, nil)
	ctx := ctxT(t)
	start := make(chan struct{})
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs <- a.Send(ctx, "B", &Envelope{Kind: KindPush, Seq: uint64(i)})
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	s.waitFor(t, 8)
	if p := a.Peers(); !slices.Equal(p, []string{"B"}) {
		t.Fatalf("Peers = %v", p)
	}
	if st := a.Stats(); st.LinksUp != 1 || st.DialFailures != 0 {
		t.Fatalf("stats %+v: want exactly one link", st)
	}
}

func TestSendToSelf(t *testing.T) {
	dir := &directory{}
	var s sink
	cfg := testConfig("A", "k", dir)
	cfg.Listen = "0.0.0.0:0" // the loopback dial must cope with an unspecified host
	a := startRelay(t, cfg, dir, s.handle)
	dir.m.Delete("A") // self needs no Resolve
	if err := a.Send(ctxT(t), "A", &Envelope{Kind: KindCall, Seq: 7, Payload: []byte("me")}); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, 1)
	if e := s.snapshot()[0]; string(e.Source) != "A" || e.Seq != 7 || string(e.Payload) != "me" {
		t.Fatalf("got %+v", e)
	}
}

func TestUnknownPeerAndLimits(t *testing.T) {
	dir := &directory{}
	var s sink
	startRelay(t, testConfig("B", "k", dir), dir, s.handle)
	cfg := testConfig("A", "k", dir)
	cfg.MaxFrame = 1024
	a := startRelay(t, cfg, dir, nil)
	ctx := ctxT(t)
	if err := a.Send(ctx, "nobody", &Envelope{Kind: KindPush}); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("unknown peer: %v", err)
	}
	if err := a.Send(ctx, "B", &Envelope{Kind: KindPush, Payload: make([]byte, 1024)}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	if err := a.Send(ctx, "B", &Envelope{Kind: 0}); !errors.Is(err, ErrUnknownKind) {
		t.Fatalf("kind 0: %v", err)
	}
	if err := a.Send(ctx, "B", &Envelope{Kind: KindPush, Session: make([]byte, 300)}); !errors.Is(err, ErrFieldTooLong) {
		t.Fatalf("long session: %v", err)
	}
	// None of that hurt the link.
	if err := a.Send(ctx, "B", &Envelope{Kind: KindPush, Payload: make([]byte, 1000)}); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, 1)
	if st := a.Stats(); st.LinksUp != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// rawConn dials addr and reads the challenge.
func rawConn(t *testing.T, addr string) (net.Conn, []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	id, p, err := readFrame(c, challengeLen)
	if err != nil || id != FrameChallenge || len(p) != challengeLen {
		t.Fatalf("challenge: id %d, %d bytes, %v", id, len(p), err)
	}
	return c, p[1:]
}

// rawAuth authenticates a raw connection as nodeID; it returns the conn and
// the Auth frame it sent.
func rawAuth(t *testing.T, addr, secret, nodeID string) (net.Conn, []byte) {
	t.Helper()
	c, nonceS := rawConn(t, addr)
	nonceC, _ := newNonce()
	auth := frame.Append(nil, FrameAuth, buildAuth([]byte(secret), nonceS, nonceC, []byte(nodeID)))
	if _, err := c.Write(auth); err != nil {
		t.Fatal(err)
	}
	id, p, err := readFrame(c, maxAcceptLen)
	if err != nil || id != FrameAccept || !bytes.Equal(p, buildAccept([]byte(secret), nonceC, nonceS, []byte("B"))) {
		t.Fatalf("accept: id %d, %v", id, err)
	}
	return c, auth
}

func envFrame(t *testing.T, e Envelope) []byte {
	t.Helper()
	p, err := e.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	return frame.Append(nil, FrameEnvelope, p)
}

// expectClosed waits for the server to close c, within limit.
func expectClosed(t *testing.T, c net.Conn, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection not closed within %v: %v", limit, err)
	}
	return time.Since(start)
}

func TestUnauthenticatedConnectionsAreClosed(t *testing.T) {
	dir := &directory{}
	var s sink
	b := startRelay(t, testConfig("B", "k", dir), dir, s.handle)

	// Silent: closed by the handshake timeout (500ms).
	silent, _ := rawConn(t, b.Addr())
	if d := expectClosed(t, silent, 2*time.Second); d < 300*time.Millisecond {
		t.Errorf("closed after %v, before the handshake timeout", d)
	}

	// Envelopes without authenticating: closed at the first frame.
	pushy, _ := rawConn(t, b.Addr())
	var burst []byte
	for i := 0; i < 10; i++ {
		burst = append(burst, envFrame(t, Envelope{Kind: KindPush, Source: []byte("A")})...)
	}
	if _, err := pushy.Write(burst); err != nil {
		t.Fatal(err)
	}
	if d := expectClosed(t, pushy, 2*time.Second); d > 400*time.Millisecond {
		t.Errorf("closed after %v, want at once", d)
	}

	// A malformed Auth.
	bad, _ := rawConn(t, b.Addr())
	if _, err := bad.Write(frame.Append(nil, FrameAuth, []byte{Version, 1, 2, 3})); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, bad, 2*time.Second)

	if n := s.n.Load(); n != 0 {
		t.Fatalf("handler called %d times", n)
	}
	if st := b.Stats(); st.HandshakeFailures != 3 || st.EnvelopesReceived != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestWrongSecret(t *testing.T) {
	dir := &directory{}
	var s sink
	b := startRelay(t, testConfig("B", "right", dir), dir, s.handle)
	c := startRelay(t, testConfig("C", "wrong", dir), dir, nil)
	ctx := ctxT(t)
	err := c.Send(ctx, "B", &Envelope{Kind: KindPush})
	if !errors.Is(err, ErrHandshake) {
		t.Fatalf("Send with a wrong secret: %v", err)
	}
	// Within the redial backoff the error comes back at once.
	if err2 := c.Send(ctx, "B", &Envelope{Kind: KindPush}); !errors.Is(err2, ErrHandshake) {
		t.Fatalf("second Send: %v", err2)
	}
	if st := c.Stats(); st.DialFailures != 1 || st.LinksUp != 0 {
		t.Fatalf("C stats %+v", st)
	}
	if len(c.Peers()) != 0 {
		t.Fatalf("C peers %v", c.Peers())
	}
	testkit.CheckFor(t, testTimeout, 5*time.Millisecond, func() error {
		if st := b.Stats(); st.HandshakeFailures != 1 {
			return fmt.Errorf("B stats %+v", st)
		}
		return nil
	})
	if n := s.n.Load(); n != 0 {
		t.Fatalf("handler called %d times", n)
	}
}

// A listener that accepts any Auth but cannot prove the secret is refused
// by the dialer.
func TestServerMustProveSecret(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		nonce, _ := newNonce()
		_, _ = c.Write(frame.Append(nil, FrameChallenge, append([]byte{Version}, nonce...)))
		if _, _, err := readFrame(c, maxAuthLen); err != nil {
			return
		}
		_, _ = c.Write(frame.Append(nil, FrameAccept, append([]byte{1, 'B'}, make([]byte, macLen)...)))
		_, _ = io.Copy(io.Discard, c)
	}()
	dir := &directory{}
	dir.set("impostor", ln.Addr().String())
	a := startRelay(t, testConfig("A", "k", dir), dir, nil)
	if err := a.Send(ctxT(t), "impostor", &Envelope{Kind: KindPush}); !errors.Is(err, ErrHandshake) {
		t.Fatalf("Send to an impostor: %v", err)
	}
	<-done
}

func TestSourceIsAuthenticatedPeer(t *testing.T) {
	dir := &directory{}
	var s sink
	b := startRelay(t, testConfig("B", "k", dir), dir, s.handle)
	a := startRelay(t, testConfig("A", "k", dir), dir, nil)
	// Through the relay: Send stamps the real id whatever the caller says.
	if err := a.Send(ctxT(t), "B", &Envelope{Kind: KindPush, Source: []byte("gate-9")}); err != nil {
		t.Fatal(err)
	}
	// A raw peer that authenticated as "A" and claims to be "X".
	c, _ := rawAuth(t, b.Addr(), "k", "A")
	if _, err := c.Write(envFrame(t, Envelope{Kind: KindPush, Seq: 2, Source: []byte("X")})); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, 2)
	for _, e := range s.snapshot() {
		if string(e.Source) != "A" {
			t.Fatalf("Source %q, want A", e.Source)
		}
	}
}

// TestWrongPeerRefused: an address that answers with another node id (a
// stale topology) is refused before anything is sent.
func TestWrongPeerRefused(t *testing.T) {
	dir := &directory{}
	b := startRelay(t, testConfig("B", "k", dir), dir, func(*Envelope) { t.Error("envelope delivered to the wrong node") })
	dir.set("C", b.Addr()) // C's address is answered by B
	a := startRelay(t, testConfig("A", "k", dir), dir, nil)
	err := a.Send(ctxT(t), "C", &Envelope{Kind: KindPush})
	if !errors.Is(err, ErrHandshake) || !errors.Is(err, ErrWrongPeer) {
		t.Fatalf("Send to a stale address: %v", err)
	}
}

func TestReplayedAuthFails(t *testing.T) {
	dir := &directory{}
	var s sink
	b := startRelay(t, testConfig("B", "k", dir), dir, s.handle)
	first, auth := rawAuth(t, b.Addr(), "k", "A")
	first.Close()

	replay, _ := rawConn(t, b.Addr())
	msg := append(bytes.Clone(auth), envFrame(t, Envelope{Kind: KindPush})...)
	if _, err := replay.Write(msg); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, replay, 2*time.Second)
	if n := s.n.Load(); n != 0 {
		t.Fatalf("handler called %d times", n)
	}
	if st := b.Stats(); st.HandshakeFailures != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestMalformedEnvelopeClosesLink(t *testing.T) {
	dir := &directory{}
	var s sink
	b := startRelay(t, testConfig("B", "k", dir), dir, s.handle)
	c, _ := rawAuth(t, b.Addr(), "k", "A")
	msg := envFrame(t, Envelope{Kind: KindPush, Seq: 1})
	msg = frame.Append(msg, FrameEnvelope, []byte{Version, 42}) // truncated, bad kind
	msg = append(msg, envFrame(t, Envelope{Kind: KindPush, Seq: 3})...)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c, 2*time.Second)
	if n := s.n.Load(); n != 1 {
		t.Fatalf("handler called %d times, want 1 (only before the bad frame)", n)
	}
	if st := b.Stats(); st.Refused != 1 {
		t.Fatalf("stats %+v", st)
	}

	// A frame over MaxFrame closes the connection too.
	c2, _ := rawAuth(t, b.Addr(), "k", "A")
	hdr := frame.Append(nil, FrameEnvelope, nil)
	hdr[4], hdr[5], hdr[6], hdr[7] = 0x7f, 0xff, 0xff, 0xff
	if _, err := c2.Write(hdr); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c2, 2*time.Second)
}

func TestLinkDownAndRedial(t *testing.T) {
	dir := &directory{}
	var s sink
	bcfg := testConfig("B", "k", dir)
	b := startRelay(t, bcfg, dir, s.handle)
	a := startRelay(t, testConfig("A", "k", dir), dir, nil)
	down := make(chan string, 4)
	a.OnLinkDown(func(id string, err error) {
		if !errors.Is(err, ErrLinkDown) {
			t.Errorf("link down cause %v", err)
		}
		down <- id
	})
	ctx := ctxT(t)
	if err := a.Send(ctx, "B", &Envelope{Kind: KindPush}); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, 1)

	b.Close()
	select {
	case id := <-down:
		if id != "B" {
			t.Fatalf("link down for %q", id)
		}
	case <-time.After(testTimeout):
		t.Fatal("OnLinkDown did not fire")
	}
	if p := a.Peers(); len(p) != 0 {
		t.Fatalf("Peers after link down: %v", p)
	}
	start := time.Now()
	if err := a.Send(ctx, "B", &Envelope{Kind: KindPush}); !errors.Is(err, ErrDial) {
		t.Fatalf("Send to a closed peer: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("failed Send took %v", d)
	}

	// B comes back on the same address: Send re-dials (after the backoff).
	bcfg.Listen = b.Addr()
	startRelay(t, bcfg, dir, s.handle)
	testkit.CheckFor(t, testTimeout, 50*time.Millisecond, func() error {
		return a.Send(ctx, "B", &Envelope{Kind: KindPush, Seq: 99})
	})
	s.waitFor(t, 2)
	if e := s.snapshot()[1]; e.Seq != 99 {
		t.Fatalf("after redial got %+v", e)
	}
	if st := a.Stats(); st.LinksUp != 2 || st.LinksDown != 1 || st.DialFailures == 0 {
		t.Fatalf("stats %+v", st)
	}
	if len(down) != 0 {
		t.Fatalf("extra link down events")
	}
}

func TestDropPeer(t *testing.T) {
	dir := &directory{}
	var s sink
	startRelay(t, testConfig("B", "k", dir), dir, s.handle)
	a := startRelay(t, testConfig("A", "k", dir), dir, nil)
	var downs atomic.Int64
	a.OnLinkDown(func(string, error) { downs.Add(1) })
	ctx := ctxT(t)
	if err := a.Send(ctx, "B", &Envelope{Kind: KindPush}); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, 1) // DropPeer discards what is still queued
	a.DropPeer("B")
	a.DropPeer("B")
	a.DropPeer("nobody")
	if p := a.Peers(); len(p) != 0 {
		t.Fatalf("Peers after DropPeer: %v", p)
	}
	if err := a.Send(ctx, "B", &Envelope{Kind: KindPush}); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, 2)
	if st := a.Stats(); st.LinksUp != 2 || st.LinksDown != 0 {
		t.Fatalf("stats %+v", st)
	}
	if n := downs.Load(); n != 0 {
		t.Fatalf("OnLinkDown fired %d times on DropPeer", n)
	}
}

// A peer that authenticates and then stops reading fills the link's queue:
// Send fails with ErrBackpressure and the link is reset.
func TestBackpressure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	secret := []byte("k")
	release := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.(*net.TCPConn).SetReadBuffer(4 << 10)
		nonceS, _ := newNonce()
		_, _ = c.Write(frame.Append(nil, FrameChallenge, append([]byte{Version}, nonceS...)))
		_, p, err := readFrame(c, maxAuthLen)
		if err != nil {
			return
		}
		a, _ := parseAuth(p)
		_, _ = c.Write(frame.Append(nil, FrameAccept, buildAccept(secret, a.nonceC, nonceS, []byte("slow"))))
		<-release // never read
	}()
	dir := &directory{}
	dir.set("slow", ln.Addr().String())
	cfg := testConfig("A", "k", dir)
	cfg.MaxPending = 256 << 10
	cfg.MaxFrame = 64 << 10
	a := startRelay(t, cfg, dir, nil)
	downErr := make(chan error, 1)
	a.OnLinkDown(func(_ string, err error) { downErr <- err })
	ctx := ctxT(t)
	env := &Envelope{Kind: KindPush, Payload: make([]byte, 32<<10)}
	var sendErr error
	for i := 0; i < 20000 && sendErr == nil; i++ {
		sendErr = a.Send(ctx, "slow", env)
	}
	close(release)
	if !errors.Is(sendErr, ErrBackpressure) {
		t.Fatalf("Send to a peer that does not read: %v", sendErr)
	}
	select {
	case err := <-downErr:
		if !errors.Is(err, ErrBackpressure) {
			t.Fatalf("link down cause %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("OnLinkDown did not fire")
	}
	<-done
}

func TestCloseStopsDelivery(t *testing.T) {
	dir := &directory{}
	var s sink
	b := startRelay(t, testConfig("B", "k", dir), dir, s.handle)
	a := startRelay(t, testConfig("A", "k", dir), dir, nil)
	ctx := ctxT(t)
	if err := a.Send(ctx, "B", &Envelope{Kind: KindPush}); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, 1)
	// A raw peer keeps an authenticated link open across B's Close.
	c, _ := rawAuth(t, b.Addr(), "k", "X")
	b.Close()
	n := s.n.Load()
	_, _ = c.Write(envFrame(t, Envelope{Kind: KindPush}))
	expectClosed(t, c, 2*time.Second)
	if got := s.n.Load(); got != n {
		t.Fatalf("handler called after Close")
	}
	a.Close()
	if err := a.Send(ctx, "B", &Envelope{Kind: KindPush}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	if p := a.Peers(); len(p) != 0 {
		t.Fatalf("Peers after Close: %v", p)
	}
}

// Close leaves none of the relay's goroutines behind (zinx keeps one idle
// worker per server it ever started; that one is zinx's).
func TestCloseLeavesNoGoroutines(t *testing.T) {
	dir := &directory{}
	b, _ := New(testConfig("B", "k", dir), nil)
	a, _ := New(testConfig("A", "k", dir), nil)
	for _, r := range []*Relay{a, b} {
		if err := r.Start(); err != nil {
			t.Fatal(err)
		}
		dir.set(r.NodeID(), r.Addr())
	}
	ctx := ctxT(t)
	for _, to := range []string{"A", "B"} {
		for i := 0; i < 100; i++ {
			if err := a.Send(ctx, to, &Envelope{Kind: KindPush, Payload: make([]byte, 1000)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	_ = b.Send(ctx, "A", &Envelope{Kind: KindPush})
	a.Close()
	b.Close()
	buf := make([]byte, 1<<20)
	stacks := strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n")
	for _, g := range stacks {
		if strings.Contains(g, "TestCloseLeavesNoGoroutines") {
			continue
		}
		if strings.Contains(g, "zcluster/relay.") || strings.Contains(g, "frame.(*Writer)") {
			t.Errorf("goroutine left after Close:\n%s", g)
		}
	}
}

func TestSendHonoursContextWhileDialing(t *testing.T) {
	// A listener that accepts but never sends a challenge.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := &directory{}
	dir.set("mute", ln.Addr().String())
	a := startRelay(t, testConfig("A", "k", dir), dir, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := a.Send(ctx, "mute", &Envelope{Kind: KindPush}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send: %v", err)
	}
	if d := time.Since(start); d > 400*time.Millisecond {
		t.Fatalf("Send waited %v", d)
	}
	// The dial itself ends with the handshake timeout.
	testkit.CheckFor(t, testTimeout, 20*time.Millisecond, func() error {
		if st := a.Stats(); st.DialFailures != 1 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
}

func TestSendNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	dir := &directory{}
	startRelay(t, testConfig("B", "k", dir), dir, nil)
	a := startRelay(t, testConfig("A", "k", dir), dir, nil)
	ctx := ctxT(t)
	env := sampleEnvelope(KindForward)
	if err := a.Send(ctx, "B", &env); err != nil {
		t.Fatal(err)
	}
	// The writer's flush goroutine may allocate its start; the encode and
	// the link lookup must not.
	if n := testing.AllocsPerRun(200, func() { _ = a.Send(ctx, "B", &env) }); n > 1 {
		t.Errorf("Send: %v allocs", n)
	}
}

func BenchmarkSend(b *testing.B) {
	dir := &directory{}
	var got atomic.Int64
	rb, _ := New(testConfig("B", "k", dir), func(*Envelope) { got.Add(1) })
	if err := rb.Start(); err != nil {
		b.Fatal(err)
	}
	defer rb.Close()
	dir.set("B", rb.Addr())
	ra, _ := New(testConfig("A", "k", dir), nil)
	if err := ra.Start(); err != nil {
		b.Fatal(err)
	}
	defer ra.Close()
	ctx := context.Background()
	env := sampleEnvelope(KindForward)
	env.Payload = bytes.Repeat([]byte("p"), 64)
	if err := ra.Send(ctx, "B", &env); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	sent := int64(1)
	for b.Loop() {
		for ra.Send(ctx, "B", &env) != nil {
			// ErrBackpressure resets the link: let it drain and redial.
			time.Sleep(time.Millisecond)
		}
		sent++
		if sent%4096 == 0 {
			for got.Load() < sent-32<<10 {
				time.Sleep(50 * time.Microsecond)
			}
		}
	}
	deadline := time.Now().Add(testTimeout)
	for got.Load() < sent && time.Now().Before(deadline) {
		time.Sleep(50 * time.Microsecond)
	}
}
