package e2e

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	zccluster "github.com/zcluster/zcluster/cluster"
	"github.com/zcluster/zcluster/internal/testonly/testkit/chatkit"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/internal/runtime/frame"
	"github.com/zcluster/zcluster/internal/runtime/tlsutil"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
	"github.com/zcluster/zcluster/internal/tools/zclient"
	"github.com/zcluster/zcluster/relay"
)

// TLS on the client listener and on relay links, with a CA made by the
// test (docs/security.md says how it works).

// testCA makes a CA and one certificate for 127.0.0.1.
func testCA(t *testing.T) (ca *tlsutil.TestCA, cert, key string) {
	t.Helper()
	ca, err := tlsutil.NewTestCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err = ca.Issue("node", "127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	return ca, cert, key
}

// startGateWith is startGate with a hook on the gate's Config.
func (c *cluster) startGateWith(id string, tune func(*gate.Config), setup ...func(*gate.Gate)) *gate.Gate {
	c.t.Helper()
	cli, rdb := c.clients()
	cfg := gate.Config{
		Node: zccluster.Node{
			ID:          id,
			RelayListen: "127.0.0.1:0",
			Etcd:        cli,
			Redis:       rdb,
			Secret:      c.secret,
			TTL:         testTTL,
			SessionTTL:  testSessionTTL,
			Logger:      c.log,
		},
		ClientListen:   "127.0.0.1:0",
		RequestTimeout: 3 * time.Second,
	}
	tune(&cfg)
	g, err := gate.New(cfg)
	if err != nil {
		c.t.Fatalf("gate %s: %v", id, err)
	}
	chat.SetupGate(g)
	for _, s := range setup {
		s(g)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := g.Start(ctx); err != nil {
		c.t.Fatalf("gate %s start: %v", id, err)
	}
	c.mu.Lock()
	c.gates[id] = g
	c.mu.Unlock()
	return g
}

// startBackendWith is startBackend (chat app) with a hook on the Config.
func (c *cluster) startBackendWith(id, group string, tune func(*backend.Config)) *backend.Backend {
	c.t.Helper()
	cli, rdb := c.clients()
	cfg := backend.Config{
		Node: zccluster.Node{
			ID:          id,
			RelayListen: "127.0.0.1:0",
			Etcd:        cli,
			Redis:       rdb,
			Secret:      c.secret,
			TTL:         testTTL,
			SessionTTL:  testSessionTTL,
			Logger:      c.log,
		},
		Group:       group,
		CallTimeout: 3 * time.Second,
	}
	tune(&cfg)
	b, err := backend.New(cfg)
	if err != nil {
		c.t.Fatalf("backend %s: %v", id, err)
	}
	if err := chat.SetupBackend(b); err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		c.t.Fatalf("backend %s start: %v", id, err)
	}
	c.mu.Lock()
	c.backends[id] = b
	c.mu.Unlock()
	return b
}

// tlsClient is a minimal gate client over TLS: frames in, frames out.
type tlsClient struct {
	t  *testing.T
	tc *tls.Conn
}

func dialTLS(t *testing.T, addr string, cfg *tls.Config) (*tlsClient, error) {
	t.Helper()
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = nc.Close() })
	return &tlsClient{t: t, tc: nc.(*tls.Conn)}, nil
}

func (c *tlsClient) send(msgID uint32, payload []byte) {
	c.t.Helper()
	_ = c.tc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.tc.Write(frame.Append(nil, msgID, payload)); err != nil {
		c.t.Fatal(err)
	}
}

// expect reads frames until one with msgID arrives.
func (c *tlsClient) expect(msgID uint32) []byte {
	c.t.Helper()
	_ = c.tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var seen []string
	for {
		var hdr [frame.HeaderLen]byte
		if _, err := io.ReadFull(c.tc, hdr[:]); err != nil {
			c.t.Fatalf("waiting for msgID %d: %v (seen %v)", msgID, err, seen)
		}
		p := make([]byte, binary.BigEndian.Uint32(hdr[4:]))
		if _, err := io.ReadFull(c.tc, p); err != nil {
			c.t.Fatal(err)
		}
		id := binary.BigEndian.Uint32(hdr[:])
		if id == msgID {
			return p
		}
		seen = append(seen, fmt.Sprintf("%d:%q", id, p))
	}
}

func (c *tlsClient) login(user string) {
	c.t.Helper()
	c.send(chat.MsgLogin, []byte(user))
	var r chat.LoginReply
	if err := json.Unmarshal(c.expect(chat.MsgLogin), &r); err != nil || !r.OK {
		c.t.Fatalf("login %s over TLS: %+v %v", user, r, err)
	}
}

// TestTLSClientListener: TLS clients log in and chat through a TLS gate; a
// plaintext client and a client that does not trust the CA fail cleanly; a
// plain gate in the same process stays plain.
func TestTLSClientListener(t *testing.T) {
	ca, cert, key := testCA(t)
	c := newCluster(t)
	tg := c.startGateWith("gate-tls", func(cfg *gate.Config) { cfg.TLSCertFile, cfg.TLSKeyFile = cert, key })
	pg := c.startGate("gate-plain")
	c.startBackend("im-1", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)

	cfg := &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}
	alice, err := dialTLS(t, tg.ListenAddr(), cfg)
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	bob, err := dialTLS(t, tg.ListenAddr(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	alice.login("alice")
	bob.login("bob")
	st := alice.tc.ConnectionState()
	t.Logf("client TLS: version %s, cipher %s, server %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.PeerCertificates[0].Subject.CommonName)
	alice.send(chat.MsgSend, chatkit.MustJSON(t, chat.SendRequest{To: "bob", Text: "over tls"}))
	if r := alice.expect(chat.MsgSend); !strings.Contains(string(r), `"ok":true`) {
		t.Fatalf("send: %s", r)
	}
	if m := bob.expect(chat.MsgDelivered); !strings.Contains(string(m), "over tls") {
		t.Fatalf("delivered: %s", m)
	}
	// A plain client on the plain gate reaches bob on the TLS gate.
	carol := dial(t, pg)
	chatkit.Login(t, carol, "carol")
	_ = carol.Send(chat.MsgSend, chatkit.MustJSON(t, chat.SendRequest{To: "bob", Text: "from plain"}))
	chatkit.Expect(t, carol, chat.MsgSend)
	if m := bob.expect(chat.MsgDelivered); !strings.Contains(string(m), "from plain") {
		t.Fatalf("delivered: %s", m)
	}

	// Plaintext to the TLS port: the connection is closed, no frame comes.
	plain := dial(t, tg)
	_ = plain.Send(chat.MsgLogin, []byte("mallory"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if f, err := plain.Recv(ctx); !errors.Is(err, zclient.ErrClosed) {
		t.Fatalf("plaintext client on the TLS port: frame %d %q, err %v", f.MsgID, f.Payload, err)
	}
	// A client that does not trust the gate's CA refuses it.
	other, _, _ := testCA(t)
	if _, err := dialTLS(t, tg.ListenAddr(), &tls.Config{RootCAs: other.Pool}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("TLS dial with the wrong CA: %v", err)
	}
	// TLS to the plain gate fails too: each server has its own setting.
	if _, err := dialTLS(t, pg.ListenAddr(), cfg); err == nil {
		t.Fatal("TLS handshake succeeded against the plain gate")
	}
	// The TLS gate still serves.
	alice.send(chat.MsgEcho, []byte("still"))
	if p := alice.expect(chat.MsgEcho); string(p) != "still" {
		t.Fatalf("echo %q", p)
	}
}

// TestTLSRelay: a gate and backends whose relay links run over TLS serve
// clients as usual (including a backend-to-backend call); their relay
// ports speak only TLS.
func TestTLSRelay(t *testing.T) {
	ca, _, _ := testCA(t)
	c := newCluster(t)
	g := c.startGateWith("gate-1", func(cfg *gate.Config) { cfg.RelayTLS = nodeTLS(t, ca, "gate-1") })
	b := c.startBackendWith("im-1", chat.GroupIM, func(cfg *backend.Config) { cfg.RelayTLS = nodeTLS(t, ca, "im-1") })
	c.startBackendWith("echo-1", chat.GroupEcho, func(cfg *backend.Config) { cfg.RelayTLS = nodeTLS(t, ca, "echo-1") })
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)
	c.waitGroupSize(chat.GroupEcho, 1, 5*time.Second)

	alice, bob := dial(t, g), dial(t, g)
	chatkit.Login(t, alice, "alice")
	chatkit.Login(t, bob, "bob")
	_ = alice.Send(chat.MsgSend, chatkit.MustJSON(t, chat.SendRequest{To: "bob", Text: "via tls relay"}))
	if f := chatkit.Expect(t, alice, chat.MsgSend); !strings.Contains(string(f.Payload), `"ok":true`) {
		t.Fatalf("send: %s", f.Payload)
	}
	if f := chatkit.Expect(t, bob, chat.MsgDelivered); !strings.Contains(string(f.Payload), "via tls relay") {
		t.Fatalf("delivered: %s", f.Payload)
	}
	_ = alice.Send(chat.MsgChainEcho, []byte("chain"))
	if f := chatkit.Expect(t, alice, chat.MsgChainEcho); string(f.Payload) != "chain" {
		t.Fatalf("chain echo: %q", f.Payload)
	}
	if g.RelayStats().LinksUp == 0 || b.RelayStats().LinksUp == 0 {
		t.Fatalf("no relay link came up: gate %+v backend %+v", g.RelayStats(), b.RelayStats())
	}

	// The relay ports present the certificate...
	var probes []*relayProbe
	for _, addr := range []string{g.RelayAddr(), b.RelayAddr()} {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: ca.Pool})
		if err != nil {
			t.Fatalf("TLS to relay %s: %v", addr, err)
		}
		_ = conn.Close()
		probes = append(probes, dialRelay(t, addr))
	}
	// ...and a plaintext dialer never sees the challenge in clear: the
	// relay waits for a TLS hello, then drops it at the handshake deadline.
	for _, p := range probes {
		if id, b, err := p.read(); err == nil {
			t.Fatalf("plaintext dialer read frame %d (%d bytes) from a TLS relay", id, len(b))
		}
	}
}

// nodeTLS issues a relay certificate for node id (its id as a DNS name, and
// the loopback address it is reached at) and returns its relay TLS config.
func nodeTLS(t *testing.T, ca *tlsutil.TestCA, id string) *relay.TLSConfig {
	t.Helper()
	cert, key, err := ca.Issue(id, id, "127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	return &relay.TLSConfig{CertFile: cert, KeyFile: key, CAFile: ca.CAFile}
}

// TestTLSRelayNodeIdentity: under relay TLS a node id is backed by a
// certificate. A node whose certificate names another id does not start
// (it names the problem), and a connection that holds the secret but no
// certificate for the id it claims is refused before anything it sends is
// acted on, so it cannot speak as, or for, another node.
func TestTLSRelayNodeIdentity(t *testing.T) {
	ca, _, _ := testCA(t)
	c := newCluster(t)
	g := c.startGateWith("gate-1", func(cfg *gate.Config) { cfg.RelayTLS = nodeTLS(t, ca, "gate-1") })
	c.startBackendWith("im-1", chat.GroupIM, func(cfg *backend.Config) { cfg.RelayTLS = nodeTLS(t, ca, "im-1") })
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)
	victim := dial(t, g)
	vr := chatkit.Login(t, victim, "victim")

	// A node started with mallory's certificate under the id im-2.
	cli, rdb := c.clients()
	b, err := backend.New(backend.Config{
		Node: zccluster.Node{
			ID:          "im-2",
			RelayListen: "127.0.0.1:0",
			Etcd:        cli,
			Redis:       rdb,
			Secret:      c.secret,
			RelayTLS:    nodeTLS(t, ca, "mallory"),
			Logger:      c.log,
		},
		Group: chat.GroupIM,
	})
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = b.Start(ctx)
		cancel()
		if err == nil {
			_ = b.Shutdown(context.Background())
		}
	}
	if !errors.Is(err, relay.ErrTLSConfig) || !strings.Contains(err.Error(), `does not name this node's id "im-2"`) {
		t.Fatalf("a node whose certificate names another id: %v, want relay.ErrTLSConfig naming the id", err)
	}

	// The secret, over TLS, claiming im-1, without its certificate.
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", g.RelayAddr(), &tls.Config{RootCAs: ca.Pool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	p := &relayProbe{t: t, nc: conn}
	p.send(relay.FrameAuth, relayAuth(c.secret, p.challenge(), "im-1"))
	p.send(relay.FrameEnvelope, envelope(t, relay.Envelope{Kind: relay.KindLeaving}))
	p.send(relay.FrameEnvelope, envelope(t, relay.Envelope{Kind: relay.KindPush, MsgID: chat.MsgDelivered, Session: []byte(vr.Session), Payload: []byte(`{"from":"im-1","text":"forged"}`)}))
	if id, _, err := p.read(); err == nil {
		t.Fatalf("the impostor of im-1 got frame %d, want the connection closed", id)
	}
	// im-1 is still used (not marked leaving), the victim got nothing.
	for i := range 3 {
		want := fmt.Sprintf("still im-1 %d", i)
		_ = victim.Send(chat.MsgEcho, []byte(want))
		if f := chatkit.Expect(t, victim, chat.MsgEcho); string(f.Payload) != want {
			t.Fatalf("echo %q, want %q", f.Payload, want)
		}
	}
	select {
	case f := <-victim.Frames():
		t.Fatalf("the victim got %d %q", f.MsgID, f.Payload)
	case <-time.After(200 * time.Millisecond):
	}
	if n := g.RelayStats().HandshakeFailures; n == 0 {
		t.Fatal("the gate's relay counted no refused handshake")
	}
}

// TestTLSFlags: `zcluster gate` and `zcluster backend` processes with the
// TLS flags: a TLS client logs in and is answered by the backend over a TLS
// relay link.
func TestTLSFlags(t *testing.T) {
	ca, cert, key := testCA(t)
	c := newCluster(t)
	relayFlags := func(id string) []string {
		rt := nodeTLS(t, ca, id)
		return []string{"--relay-tls-cert", rt.CertFile, "--relay-tls-key", rt.KeyFile, "--relay-tls-ca", ca.CAFile}
	}
	addr := testkit.FreeAddr(t)
	startProc(t, c.nodeArgs("gate", "gate-p", append([]string{"--listen", addr, "--relay", "127.0.0.1:0",
		"--tls-cert", cert, "--tls-key", key}, relayFlags("gate-p")...)...)...)
	startProc(t, c.nodeArgs("backend", "im-p", append([]string{"--group", chat.GroupIM, "--relay", "127.0.0.1:0"}, relayFlags("im-p")...)...)...)
	// An in-process gate only watches the topology: both processes are up
	// once it sees them.
	w := c.startGate("watcher")
	testkit.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		for _, id := range []string{"gate-p", "im-p"} {
			if _, ok := w.Topology().Node(id); !ok {
				return fmt.Errorf("%s not registered yet", id)
			}
		}
		return nil
	})

	cfg := &tls.Config{RootCAs: ca.Pool}
	var alice *tlsClient
	testkit.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		cl, err := dialTLS(t, addr, cfg)
		if err != nil {
			return err
		}
		alice = cl
		return nil
	})
	alice.login("alice")
	testkit.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		alice.send(chat.MsgEcho, []byte("tls all the way"))
		// Every request is answered within the gate's request timeout.
		_ = alice.tc.SetReadDeadline(time.Now().Add(gate.DefaultConfig().RequestTimeout + 2*time.Second))
		var hdr [frame.HeaderLen]byte
		if _, err := io.ReadFull(alice.tc, hdr[:]); err != nil {
			t.Fatalf("no answer over TLS: %v", err)
		}
		p := make([]byte, binary.BigEndian.Uint32(hdr[4:]))
		if _, err := io.ReadFull(alice.tc, p); err != nil {
			t.Fatalf("no answer over TLS: %v", err)
		}
		if id := binary.BigEndian.Uint32(hdr[:]); id != chat.MsgEcho || string(p) != "tls all the way" {
			return fmt.Errorf("got %d %q (backend not up yet?)", id, p)
		}
		return nil
	})
}
